//! The scenarios of `kassa bench`: each sets up what it needs (not timed), drives the real
//! paths (timed), then verifies the outcome against kassa's store and the sandbox's ledgers.

use super::driver::{Driven, drive};
use crate::app::App;
use crate::clock::Env;
use crate::config::{Config, Overrides};
use crate::domain::Provider;
use crate::flows::Kassa;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod cancel;
mod ingest;
mod orders;
mod pages;
mod queue;
mod settlement;
mod startup;

pub use cancel::cancel;
pub use ingest::ingest;
pub use orders::orders;
pub use pages::pages;
pub use queue::queue;
pub use settlement::{partner, reconcile};
pub use startup::startup;

const TOKEN: &str = "bench-admin-token-0123456789abcdef";
const PG: &str = "sandbox PG on loopback, mounted in the same process";
const AMOUNT: i64 = 10_000;

fn fail(what: &str) -> impl Fn(String) -> String + '_ {
    move |error| format!("{what}: {error}")
}

/// A temporary directory only this user can read, as kassa wants its data directory.
fn private_tempdir() -> Result<tempfile::TempDir, String> {
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|error| error.to_string())?;
    }
    Ok(dir)
}

/// kassa serving on a loopback port of its own, on a temporary data directory.
struct Server {
    base: String,
    http: reqwest::Client,
    kassa: Kassa,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(concurrency: usize) -> Result<Server, String> {
        let dir = private_tempdir()?;
        let env: Vec<(String, String)> = [
            ("KASSA_ADMIN__TOKEN", TOKEN),
            ("KASSA_HTTP__RATE_LIMIT_PER_MINUTE", "0"),
            ("KASSA_HTTP__OPEN_ORDERS_PER_CLIENT", "0"),
            ("KASSA_RECHECK__INTERVAL_MS", "86400000"),
            ("KASSA_SETTLEMENT_SYNC__ENABLED", "false"),
            ("KASSA_PARTNER_SETTLEMENT__ENABLED", "false"),
        ]
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
        let overrides = Overrides {
            config_file: None,
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().to_path_buf()),
        };
        let config = Config::load_from(&overrides, &env).map_err(|error| error.to_string())?;
        let app = App::build(config, Env::system())
            .await
            .map_err(|error| error.to_string())?;
        let base = format!("http://{}", app.local_addr());
        let kassa = app.kassa().clone();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(async move {
            if let Err(error) = app.run().await {
                tracing::error!(error = %error, "the benchmark's kassa stopped");
            }
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(concurrency.max(1))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Server {
            base,
            http,
            kassa,
            shutdown,
            task,
            _dir: dir,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }

    async fn post(&self, path: &str, body: &Value, admin: bool) -> Result<(u16, Value), String> {
        let mut request = self.http.post(self.url(path)).json(body);
        if admin {
            request = request.bearer_auth(TOKEN);
        }
        let response = request.send().await.map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        self.http
            .get(self.url(path))
            .send()
            .await
            .map_err(|error| error.to_string())?
            .json()
            .await
            .map_err(|error| error.to_string())
    }

    /// An order of `provider`, through the order API.
    async fn order(&self, order_id: &str, provider: Provider) -> Result<(), String> {
        let body = json!({ "order_id": order_id, "amount": AMOUNT, "name": "bench", "provider": provider.as_str() });
        match self.post("/api/orders", &body, true).await? {
            (201, _) => Ok(()),
            (status, body) => Err(format!("order {order_id}: {status} {body}")),
        }
    }

    /// The PG's side of a payment, as if a buyer had paid in its window; answers what the
    /// completion call needs (PortOne's imp_uid, Toss's payment key, Payple's result fields).
    async fn pg_side(&self, order_id: &str, provider: Provider) -> Result<Value, String> {
        let (path, body) = match provider {
            Provider::PortOne => (
                "/sandbox-pg/_control/portone/payments",
                json!({ "merchant_uid": order_id, "amount": AMOUNT }),
            ),
            Provider::Toss => (
                "/sandbox-pg/_control/toss/payments",
                json!({ "orderId": order_id, "amount": AMOUNT, "status": "IN_PROGRESS" }),
            ),
            Provider::Payple => (
                "/sandbox-pg/_control/payple/payments",
                json!({ "order_id": order_id, "amount": AMOUNT, "goods": "bench" }),
            ),
        };
        match self.post(path, &body, false).await? {
            (201, body) => Ok(body),
            (status, body) => Err(format!("the sandbox made no payment: {status} {body}")),
        }
    }

    /// The browser's completion call (PortOne), confirm (Toss) or result post (Payple);
    /// answers the payment id once kassa stored it paid.
    async fn complete(
        &self,
        order_id: &str,
        provider: Provider,
        pg: &Value,
    ) -> Result<String, String> {
        let (status, body) = match provider {
            Provider::PortOne => {
                let body = json!({ "imp_uid": pg["imp_uid"], "merchant_uid": order_id });
                self.post("/api/payment/portone", &body, false).await?
            }
            Provider::Toss => {
                let body = json!({ "paymentKey": pg["paymentKey"], "orderId": order_id, "amount": AMOUNT });
                self.post("/api/payment/toss/confirm", &body, false).await?
            }
            Provider::Payple => {
                let form = [
                    ("PCD_PAY_RST", "success".to_owned()),
                    ("PCD_PAY_CODE", "PAYN0000".to_owned()),
                    ("PCD_PAY_OID", order_id.to_owned()),
                    ("PCD_PAY_TYPE", "card".to_owned()),
                    (
                        "PCD_PAY_TIME",
                        pg["PCD_PAY_TIME"].as_str().unwrap_or_default().to_owned(),
                    ),
                    ("PCD_PAY_TOTAL", AMOUNT.to_string()),
                ];
                let response = self
                    .http
                    .post(self.url("/api/payment/payple/result"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(serde_urlencoded::to_string(form).map_err(|error| error.to_string())?)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
        };
        if status != 200 || body["status"] != "PAID" {
            return Err(format!("completion of {order_id}: {status} {body}"));
        }
        body["payment_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("completion of {order_id} named no payment"))
    }
}

/// Where the PG of a scenario is.
const NO_PG: &str = "none";
const DOUBLE_PG: &str = "settlement lines from an in-process double, pacer off";

fn figure(name: &str, n: usize, concurrency: usize, verified: bool, figures: &Value) -> Value {
    let pg = match name {
        "queue" => NO_PG,
        "reconcile" | "partner" => DOUBLE_PG,
        "startup" => "sandbox PG mounted in the started binary (not called)",
        _ => PG,
    };
    let mut out = json!({ "scenario": name, "n": n, "concurrency": concurrency, "pg": pg });
    if let (Some(out), Some(figures)) = (out.as_object_mut(), figures.as_object()) {
        for (key, value) in figures {
            out.insert(key.clone(), value.clone());
        }
        out.insert("verified".into(), Value::Bool(verified));
    }
    out
}

fn failed(driven: &Driven) -> Result<(), String> {
    if driven.failures == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} items failed, the first: {}",
            driven.failures,
            driven.first_failure.as_deref().unwrap_or("?")
        ))
    }
}

async fn stop(server: Arc<Server>) {
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
}

fn provider_of(i: usize) -> Provider {
    Provider::ALL[i % Provider::ALL.len()]
}

/// PortOne payments made through the real paths for a scenario's setup (not timed); answers
/// (payment id, imp_uid) per item.
async fn paid_payments(
    server: &Arc<Server>,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<(String, String)>, String> {
    let made = Arc::new(tokio::sync::Mutex::new(
        HashMap::<usize, (String, String)>::new(),
    ));
    let prefix = Arc::new(prefix.to_owned());
    let setup = drive("setup", n, concurrency, {
        let (server, made, prefix) = (Arc::clone(server), Arc::clone(&made), Arc::clone(&prefix));
        move |i| {
            let (server, made, prefix) =
                (Arc::clone(&server), Arc::clone(&made), Arc::clone(&prefix));
            async move {
                let order_id = format!("{prefix}-{i:07}");
                server.order(&order_id, Provider::PortOne).await?;
                let side = server.pg_side(&order_id, Provider::PortOne).await?;
                let payment = server.complete(&order_id, Provider::PortOne, &side).await?;
                let imp_uid = side["imp_uid"].as_str().unwrap_or_default().to_owned();
                made.lock().await.insert(i, (payment, imp_uid));
                Ok(())
            }
        }
    })
    .await;
    failed(&setup).map_err(fail("setting up paid payments"))?;
    let mut made = std::mem::take(&mut *made.lock().await);
    (0..n)
        .map(|i| {
            made.remove(&i)
                .ok_or_else(|| format!("payment {i} was not made"))
        })
        .collect()
}
