//! Storage faults are loud: while the store cannot write, `/healthz` answers 503 with the reason,
//! and when redb refuses further writes kassa stops with an error (so that `kassa serve` exits
//! non-zero and systemd restarts it), with every write it answered still on disk.

use crate::support::{ADMIN_TOKEN, TestApp, start_time};
use kassa::app::{App, AppError};
use kassa::clock::{Env, ManualClock, SeededEntropy};
use kassa::config::{Config, Overrides};
use kassa::domain::OrderId;
use kassa::flows::FlowError;
use kassa::flows::orders::{OrderRequest, create_order};
use kassa::store::{StorageFaults, Store, StoreError, StoreHealth};
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Longest a refusing kassa may take to stop when nothing else is running.
const STOP_WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn healthz_answers_503_with_the_reason_while_commits_fail_and_ok_again_after_one_succeeds() {
    let (app, faults) = TestApp::spawn_on_failing_storage().await;
    assert_eq!(
        app.healthz().await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );

    faults.fail_commits(true);
    let order = json!({ "order_id": "order-lost", "amount": 1000, "name": "원두 1kg" });
    let (status, body) = app.admin_post("/api/orders", &order).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE");
    let (status, body) = app.healthz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unhealthy");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("a commit failed"), "{reason}");
    assert!(reason.contains("injected storage fault"), "{reason}");
    assert!(
        body["since"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-23T12:00:00")
    );
    // Reads go on, and the write that failed was not stored.
    let (status, _) = app.admin_get("/api/orders/order-lost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.healthz().await.0, StatusCode::SERVICE_UNAVAILABLE);

    faults.fail_commits(false);
    app.create_order("order-kept", 1000).await;
    assert_eq!(
        app.healthz().await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
    let (status, _) = app.admin_get("/api/orders/order-kept").await;
    assert_eq!(status, StatusCode::OK);
}

fn order(order_id: &str) -> OrderRequest {
    OrderRequest {
        order_id: Some(order_id.to_owned()),
        amount: 1000,
        name: "원두 1kg".into(),
        ..OrderRequest::default()
    }
}

/// Opens `data_dir` again once the stopped kassa's writer has let go of the file.
pub async fn reopen(data_dir: &Path) -> Store {
    for _ in 0..100 {
        match Store::open(data_dir, || [0; 32]) {
            Ok(store) => return store,
            Err(StoreError::Locked(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => panic!("the data file does not open again: {error}"),
        }
    }
    panic!("the data file stayed locked after kassa stopped");
}

#[tokio::test]
async fn kassa_stops_with_an_error_when_redb_refuses_further_writes_and_keeps_every_answered_write()
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        config_file: None,
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.path().to_path_buf()),
    };
    let settings = [("KASSA_ADMIN__TOKEN".to_owned(), ADMIN_TOKEN.to_owned())];
    let config = Config::load_from(&overrides, &settings).unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let env = Env::new(clock, Arc::new(SeededEntropy::new(8)));
    let faults = StorageFaults::new();
    let app = App::build_on_failing_storage(config, env, faults.clone())
        .await
        .unwrap()
        .without_background_work();
    let kassa = app.kassa().clone();
    let run = tokio::spawn(app.run());

    create_order(&kassa, &order("order-answered"), None)
        .await
        .unwrap();
    faults.fail_disk(true);
    let error = create_order(&kassa, &order("order-refused"), None)
        .await
        .unwrap_err();
    assert!(matches!(error, FlowError::Store(_)), "{error}");
    assert!(
        matches!(kassa.store.health(), StoreHealth::Refused(_)),
        "{:?}",
        kassa.store.health()
    );
    // The disk is well again, but redb is not until it is reopened: kassa goes on refusing.
    faults.fail_disk(false);
    let error = create_order(&kassa, &order("order-later"), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("refuses writes"), "{error}");

    let ended = tokio::time::timeout(STOP_WAIT, run)
        .await
        .expect("kassa stops once its store refuses writes")
        .unwrap();
    let Err(error @ AppError::StorageRefused { .. }) = ended else {
        panic!("run did not end with the storage error: {ended:?}");
    };
    assert!(error.to_string().contains("restarted"), "{error}");

    drop(kassa);
    let store = reopen(dir.path()).await;
    let id = |raw: &str| OrderId::parse(raw).unwrap();
    assert!(store.order(&id("order-answered")).await.unwrap().is_some());
    assert!(store.order(&id("order-refused")).await.unwrap().is_none());
    assert!(store.order(&id("order-later")).await.unwrap().is_none());
}
