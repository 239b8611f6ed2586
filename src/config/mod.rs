//! Configuration: built-in defaults, then the TOML file, then `KASSA_<SECTION>__<KEY>`
//! environment variables, then command-line flags; validated once into typed values.
//!
//! Invariant: the rest of kassa sees only `Config`, whose values are already checked and carry
//! their units in their types (`Duration`, `Amount`); nothing else reads files or the
//! environment for settings.

mod env;
mod payple;
mod portone;
mod raw;
mod secrets;
mod toss;
mod validate;

pub use payple::PaypleConfig;
pub use portone::PortOneConfig;
pub use toss::TossConfig;

use crate::domain::{Amount, PartnerId, Provider};
use crate::secret::Secret;
use raw::RawConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;
use validate::validate;

/// The environment prefix for every key.
pub const ENV_PREFIX: &str = "KASSA_";
/// Most partners and products a config may list; pages and settlement runs loop over them.
pub const PARTNERS_MAX: usize = 1_000;
pub const PRODUCTS_MAX: usize = 1_000;
/// Most delays in `retry.backoff_ms`.
pub const BACKOFF_STEPS_MAX: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name} is not valid: {message}")]
    Env { name: String, message: String },
    #[error("config is not valid: {0}")]
    Invalid(String),
}

/// Command-line values that beat everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// The typed, validated shape.

/// Which PG new orders use, or the built-in sandbox that imitates them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayMode {
    Sandbox,
    Real(Provider),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Where buyers reach kassa; `None` means "derive it from the bound address".
    pub public_base_url: Option<String>,
    pub admin_token: Option<Secret>,
    pub gateway: GatewayConfig,
    pub retry: RetryConfig,
    pub settlement_sync: SettlementSyncConfig,
    pub partner_settlement: PartnerSettlementConfig,
    pub alerts: AlertsConfig,
    pub recheck: RecheckConfig,
    pub http: HttpConfig,
    pub partners: Vec<Partner>,
    pub products: Vec<Product>,
    /// The effective config as TOML with secrets redacted, made once from the raw values so
    /// that no plain secret is kept in a field `Debug` could print.
    redacted_toml: String,
}

/// What faces the internet (`[http]`).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Most connections served at once; past it new ones wait in the listen backlog.
    pub connections_max: usize,
    /// A client must send a request's whole header within this; it is also how long an idle
    /// keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// The longest a request body may pause between two of its parts (the whole request is
    /// bounded by `http::REQUEST_TIMEOUT`).
    pub body_read_timeout: Duration,
    /// Per client, on checkout, completion calls and the result long-poll; `None` is off.
    pub rate_limit: Option<RateLimit>,
    /// Most READY orders one client may make through the payment page within
    /// `flows::orders::OPEN_ORDERS_WINDOW` (0: no limit).
    pub open_orders_per_client: u32,
    /// Peers whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where PG webhooks may come from; empty: anywhere.
    pub webhook_networks: Vec<ipnet::IpNet>,
    /// The bound of the webhook inbox: webhooks taken per second from all PGs together (ten
    /// seconds' worth at once); past it 503 with `Retry-After`, and the PG sends them again.
    pub webhooks_per_second: std::num::NonZeroU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

/// Bounds of `[http]`.
pub const CONNECTIONS_MAX_RANGE: std::ops::RangeInclusive<u32> = 16..=65_536;
pub const NETWORKS_MAX: usize = 100;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub mode: GatewayMode,
    /// The sandbox may run on a public address or beside real PG keys (on purpose).
    pub sandbox_public: bool,
    pub portone: PortOneConfig,
    pub toss: TossConfig,
    pub payple: PaypleConfig,
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub inline_attempts: u32,
    pub queue_attempts_max: u32,
    pub tick_interval: Duration,
    pub backoff: Vec<Duration>,
    pub pg_timeout: Duration,
    /// Outages of one PG in a row after which its jobs pause and probe.
    pub breaker_failures: u32,
}

/// A cron schedule in Asia/Seoul (six fields, seconds first), parsed once when the config is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// As the config wrote it.
    pub text: String,
    pub cron: croner::Cron,
}

#[derive(Debug, Clone)]
pub struct SettlementSyncConfig {
    pub enabled: bool,
    pub schedule: Schedule,
    pub max_pages_per_run: u32,
    pub page_interval: Duration,
    pub page_size: u32,
    pub cursor_ttl: Duration,
    pub lock_ttl: Duration,
    /// A refund kassa made with no CANCEL line after this many days raises an alert.
    pub cancel_line_wait_days: u32,
}

/// The re-check sweep: kassa asks the PGs itself, in case a browser call or webhook was lost.
#[derive(Debug, Clone)]
pub struct RecheckConfig {
    pub interval: Duration,
    pub ready_order_max_age: Duration,
    pub active: Duration,
}

#[derive(Debug, Clone)]
pub struct PartnerSettlementConfig {
    pub enabled: bool,
    pub schedule: Schedule,
}

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub slack_webhook_url: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    pub id: PartnerId,
    pub name: String,
    pub fee_rate_bps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub price: Amount,
    pub partner_id: Option<PartnerId>,
}

impl Config {
    /// Loads the effective config: defaults, the file (from `--config`, else `KASSA_CONFIG`),
    /// the environment, then the flags.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::load_from(overrides, &env)
    }

    /// `load` with the environment given, for tests.
    pub fn load_from(
        overrides: &Overrides,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let file = overrides.config_file.clone().or_else(|| {
            env.iter()
                .find(|(name, _)| name == "KASSA_CONFIG")
                .map(|(_, value)| PathBuf::from(value))
        });
        let mut table = toml::Table::new();
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            // Only the message and line: toml's own display quotes the line, which may hold a secret.
            table = toml::from_str(&text).map_err(|error: toml::de::Error| {
                let line = error
                    .span()
                    .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
                ConfigError::Parse {
                    path: path.clone(),
                    message: format!("line {line}: {}", error.message()),
                }
            })?;
        }
        env::apply_env(&mut table, env)?;
        secrets::apply_secret_sources(&mut table, env)?;
        if let Some(listen) = &overrides.listen {
            table.insert("listen".into(), toml::Value::String(listen.clone()));
        }
        if let Some(dir) = &overrides.data_dir {
            table.insert(
                "data_dir".into(),
                toml::Value::String(dir.display().to_string()),
            );
        }
        let raw: RawConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|error: toml::de::Error| ConfigError::Parse {
                    path: file.unwrap_or_else(|| PathBuf::from("(environment and flags)")),
                    message: error.message().to_owned(),
                })?;
        validate(&raw)
    }

    /// The config a TOML text gives on top of the defaults, with no environment or flags (what
    /// `check-config` would say of that file alone).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let path = PathBuf::from("(text)");
        let table: toml::Table =
            toml::from_str(text).map_err(|error: toml::de::Error| ConfigError::Parse {
                path: path.clone(),
                message: error.message().to_owned(),
            })?;
        let mut table = table;
        secrets::apply_secret_sources(&mut table, &[])?;
        let raw: RawConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|error: toml::de::Error| ConfigError::Parse {
                    path,
                    message: error.message().to_owned(),
                })?;
        validate(&raw)
    }

    /// The defaults alone, as a newcomer gets them.
    pub fn defaults() -> Config {
        validate(&RawConfig::default()).expect("the built-in defaults are valid")
    }

    pub fn data_file(&self) -> PathBuf {
        self.data_dir.join("kassa.redb")
    }

    pub fn product(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|product| product.id == id)
    }

    pub fn partner(&self, id: &PartnerId) -> Option<&Partner> {
        self.partners.iter().find(|partner| &partner.id == id)
    }

    /// The provider new orders use: in sandbox mode the sandbox imitates PortOne.
    pub fn default_provider(&self) -> Provider {
        match self.gateway.mode {
            GatewayMode::Sandbox => Provider::PortOne,
            GatewayMode::Real(provider) => provider,
        }
    }

    /// The effective config as TOML, with every secret replaced by `[REDACTED]`.
    pub fn to_redacted_toml(&self) -> String {
        self.redacted_toml.clone()
    }
}

fn redacted_toml(raw: &RawConfig) -> String {
    {
        let mut raw = raw.clone();
        let redact = |value: &mut String| {
            if !value.is_empty() {
                *value = "[REDACTED]".into();
            }
        };
        if let Some(token) = raw.admin.token.as_mut() {
            redact(token);
        }
        redact(&mut raw.gateway.portone.imp_key);
        redact(&mut raw.gateway.portone.imp_secret);
        redact(&mut raw.gateway.toss.secret_key);
        redact(&mut raw.gateway.payple.cst_id);
        redact(&mut raw.gateway.payple.cust_key);
        redact(&mut raw.gateway.payple.refund_key);
        redact(&mut raw.alerts.slack_webhook_url);
        let mut text =
            toml::to_string(&raw).unwrap_or_else(|error| format!("# cannot print: {error}\n"));
        if raw.admin.token.is_none() {
            text.push_str("\n# admin.token is not set: kassa uses the one kept in data_dir (made on first start)\n");
        }
        text
    }
}

/// True for `127.x.x.x:port`, `[::1]:port` and `localhost:port`.
pub fn is_loopback_listen(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

pub fn data_dir_usable(path: &Path) -> bool {
    path.is_dir() || !path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn write_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kassa.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_defaults_run_the_sandbox_on_loopback() {
        let config = Config::defaults();
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.gateway.mode, GatewayMode::Sandbox);
        assert_eq!(
            config.retry.backoff,
            vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
                Duration::from_secs(600),
                Duration::from_secs(1_800),
                Duration::from_secs(3_600)
            ]
        );
        assert_eq!(config.settlement_sync.lock_ttl, Duration::from_secs(600));
        assert!(!config.products.is_empty());
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        let (_dir, path) = write_file(
            "listen = \"127.0.0.1:1000\"\ndata_dir = \"from-file\"\n[retry]\ninline_attempts = 1\n",
        );
        let overrides = Overrides {
            config_file: Some(path),
            listen: Some("127.0.0.1:3000".into()),
            data_dir: None,
        };
        let config = Config::load_from(
            &overrides,
            &env(&[
                ("KASSA_LISTEN", "127.0.0.1:2000"),
                ("KASSA_DATA_DIR", "from-env"),
                ("KASSA_RETRY__INLINE_ATTEMPTS", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:3000");
        assert_eq!(config.data_dir, PathBuf::from("from-env"));
        assert_eq!(config.retry.inline_attempts, 4);
    }

    #[test]
    fn the_sandbox_refuses_a_public_address_and_real_keys_unless_told() {
        let load = |pairs: &[(&str, &str)]| Config::load_from(&Overrides::default(), &env(pairs));
        let public = load(&[("KASSA_LISTEN", "0.0.0.0:8080")]).unwrap_err();
        assert!(public.to_string().contains("loopback"), "{public}");
        let proxied = load(&[("KASSA_PUBLIC_BASE_URL", "https://pay.example.com")]).unwrap_err();
        assert!(proxied.to_string().contains("public_base_url"), "{proxied}");
        let behind = load(&[("KASSA_HTTP__TRUSTED_PROXIES", r#"["127.0.0.1"]"#)]).unwrap_err();
        assert!(behind.to_string().contains("trusted_proxies"), "{behind}");
        load(&[("KASSA_PUBLIC_BASE_URL", "http://127.0.0.1:8080")]).unwrap();
        let keys = load(&[("KASSA_GATEWAY__TOSS__SECRET_KEY", "live_sk_0000")]).unwrap_err();
        assert!(
            keys.to_string().contains("gateway.toss.secret_key"),
            "{keys}"
        );
        assert!(!keys.to_string().contains("live_sk_0000"), "{keys}");
        for listen in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:8080",
            "127.0.0.2:0",
        ] {
            load(&[("KASSA_LISTEN", listen)]).unwrap();
        }
        let on_purpose = load(&[
            ("KASSA_LISTEN", "0.0.0.0:8080"),
            ("KASSA_GATEWAY__TOSS__SECRET_KEY", "live_sk_0000"),
            ("KASSA_GATEWAY__SANDBOX_PUBLIC", "true"),
        ])
        .unwrap();
        assert_eq!(on_purpose.gateway.mode, GatewayMode::Sandbox);
        // A real PG on a public address is what production looks like.
        load(&[
            ("KASSA_LISTEN", "0.0.0.0:8080"),
            ("KASSA_GATEWAY__DEFAULT", "toss"),
            ("KASSA_GATEWAY__TOSS__CLIENT_KEY", "live_ck_0000"),
            ("KASSA_GATEWAY__TOSS__SECRET_KEY", "live_sk_0000"),
        ])
        .unwrap();
    }

    #[test]
    fn http_limits_and_networks_are_checked() {
        let load = |pairs: &[(&str, &str)]| Config::load_from(&Overrides::default(), &env(pairs));
        let config = load(&[
            ("KASSA_HTTP__TRUSTED_PROXIES", r#"["10.0.0.0/8", "::1"]"#),
            ("KASSA_HTTP__RATE_LIMIT_PER_MINUTE", "0"),
            ("KASSA_GATEWAY__SANDBOX_PUBLIC", "true"),
        ])
        .unwrap();
        assert_eq!(config.http.trusted_proxies.len(), 2);
        assert!(
            config.http.trusted_proxies[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap())
        );
        assert_eq!(config.http.rate_limit, None);
        assert!(Config::defaults().http.rate_limit.is_some());
        let bad = load(&[("KASSA_HTTP__WEBHOOK_NETWORKS", r#"["10.0.0.0/33"]"#)]).unwrap_err();
        assert!(bad.to_string().contains("http.webhook_networks"), "{bad}");
        let bad = load(&[("KASSA_HTTP__CONNECTIONS_MAX", "1")]).unwrap_err();
        assert!(bad.to_string().contains("http.connections_max"), "{bad}");
        let bad = load(&[("KASSA_HTTP__RATE_LIMIT_BURST", "0")]).unwrap_err();
        assert!(bad.to_string().contains("rate_limit_burst"), "{bad}");
    }

    #[test]
    fn env_values_take_the_type_of_their_key() {
        let config = Config::load_from(
            &Overrides::default(),
            &env(&[
                ("KASSA_GATEWAY__PORTONE__IMP_SECRET", "0012345"),
                ("KASSA_GATEWAY__SANDBOX_PUBLIC", "true"),
                ("KASSA_RETRY__BACKOFF_MS", "[10, 20]"),
                ("PAYPLE_SETTLEMENT_SYNC_ENABLED", "false"),
                ("PAYPLE_SETTLEMENT_SYNC_MAX_PAGES_PER_RUN", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(config.gateway.portone.imp_secret.expose(), "0012345");
        assert_eq!(
            config.retry.backoff,
            vec![Duration::from_millis(10), Duration::from_millis(20)]
        );
        assert!(!config.settlement_sync.enabled);
        assert_eq!(config.settlement_sync.max_pages_per_run, 7);
        let error = Config::load_from(
            &Overrides::default(),
            &env(&[("KASSA_RETRY__INLINE_ATTEMPTS", "many")]),
        );
        assert!(matches!(error, Err(ConfigError::Env { .. })), "{error:?}");
    }

    #[test]
    fn only_environment_names_of_config_sections_are_read() {
        let typo = Config::load_from(
            &Overrides::default(),
            &env(&[("KASSA_RETRY__INLINE_ATTEMPT", "1")]),
        );
        assert!(typo.is_err_and(|error| error.to_string().contains("inline_attempt")));
        let foreign = Config::load_from(
            &Overrides::default(),
            &env(&[("KASSA_CHROMIUM", "/usr/bin/chromium")]),
        );
        assert!(foreign.is_ok());
        let public = Config::load_from(
            &Overrides::default(),
            &env(&[
                ("KASSA_PUBLIC_BASE_URL", "https://pay.example.com/"),
                ("KASSA_GATEWAY__SANDBOX_PUBLIC", "true"),
            ]),
        );
        assert_eq!(
            public.unwrap().public_base_url.as_deref(),
            Some("https://pay.example.com")
        );
    }

    #[test]
    fn a_bad_slack_url_is_refused_without_being_quoted() {
        let error = Config::load_from(
            &Overrides::default(),
            &env(&[(
                "KASSA_ALERTS__SLACK_WEBHOOK_URL",
                "hooks.slack.com/services/T1/B2/topsecret",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("alerts.slack_webhook_url"), "{error}");
        assert!(!error.contains("topsecret"), "{error}");
    }

    #[test]
    fn mistakes_are_named_clearly() {
        let cases = [
            ("unknown = 1", "unknown"),
            ("[gateway]\ndefault = \"paypal\"", "gateway.default"),
            ("[gateway]\ndefault = \"portone\"", "imp_key"),
            ("[[products]]\nid = \"x\"\nname = \"X\"\nprice = 0", "price"),
            (
                "[[products]]\nid = \"x\"\nname = \"X\"\nprice = 10\npartner_id = \"nobody\"",
                "nobody",
            ),
            ("[retry]\nbackoff_ms = []", "backoff_ms"),
            ("[admin]\ntoken = \"short\"", "admin.token"),
        ];
        for (text, expected) in cases {
            let (_dir, path) = write_file(text);
            let overrides = Overrides {
                config_file: Some(path),
                ..Overrides::default()
            };
            let error = Config::load_from(&overrides, &[])
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text:?} gave {error}");
        }
    }

    #[test]
    fn the_printed_config_hides_every_secret() {
        let (_dir, path) = write_file(
            "[admin]\ntoken = \"admin-token-abcdefgh\"\n[gateway]\ndefault = \"portone\"\n[gateway.portone]\nimp_key = \"key-1234\"\nimp_secret = \"secret-5678\"\nimp_code = \"imp00000000\"\n[gateway.payple]\ncust_key = \"cust-9999\"\nrefund_key = \"refund-7777\"\n[alerts]\nslack_webhook_url = \"https://hooks.slack.com/services/T/B/xyz\"\n",
        );
        let config = Config::load_from(
            &Overrides {
                config_file: Some(path),
                ..Overrides::default()
            },
            &[],
        )
        .unwrap();
        let printed = config.to_redacted_toml();
        for secret in [
            "admin-token-abcdefgh",
            "key-1234",
            "secret-5678",
            "cust-9999",
            "refund-7777",
            "xyz",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
        }
        assert!(printed.contains("imp00000000"));
        assert!(!format!("{config:?}").contains("secret-5678"));
    }
}
