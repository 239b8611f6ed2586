//! Configuration: built-in defaults, then the TOML file, then `KASSA_<SECTION>__<KEY>`
//! environment variables, then command-line flags; validated once into typed values.
//!
//! Invariant: the rest of kassa sees only `Config`, whose values are already checked and carry
//! their units in their types (`Duration`, `Amount`); nothing else reads files or the
//! environment for settings.

mod env;
mod secrets;

use crate::domain::{Amount, PartnerId, Provider, parse_text};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
// The raw shape: exactly the TOML of CONTRACT.md, with the built-in defaults.

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    listen: String,
    data_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_base_url: Option<String>,
    admin: RawAdmin,
    gateway: RawGateway,
    retry: RawRetry,
    settlement_sync: RawSettlementSync,
    partner_settlement: RawPartnerSettlement,
    alerts: RawAlerts,
    recheck: RawRecheck,
    http: RawHttp,
    partners: Vec<RawPartner>,
    products: Vec<RawProduct>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGateway {
    default: String,
    sandbox_public: bool,
    portone: RawPortOne,
    toss: RawToss,
    payple: RawPayple,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPortOne {
    base_url: String,
    imp_key: String,
    imp_secret: String,
    /// The merchant code (가맹점 식별코드) the browser SDK needs.
    imp_code: String,
    /// The PG channel the browser SDK asks for, such as `html5_inicis`.
    pg: String,
    sdk_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawToss {
    base_url: String,
    client_key: String,
    secret_key: String,
    sdk_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPayple {
    base_url: String,
    cst_id: String,
    cust_key: String,
    refund_key: String,
    referer: String,
    /// The client key Payple's browser script needs.
    client_key: String,
    sdk_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetry {
    inline_attempts: u32,
    queue_attempts_max: u32,
    tick_interval_ms: u64,
    backoff_ms: Vec<u64>,
    pg_timeout_ms: u64,
    breaker_failures: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSettlementSync {
    enabled: bool,
    schedule: String,
    max_pages_per_run: u32,
    page_interval_ms: u64,
    page_size: u32,
    cursor_ttl_hours: u64,
    lock_ttl_s: u64,
    cancel_line_wait_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRecheck {
    interval_ms: u64,
    ready_order_max_age_h: u32,
    active_days: u32,
}

/// What faces the internet: slow clients, rate limits, proxies, webhook sources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    connections_max: u32,
    header_read_timeout_ms: u64,
    body_read_timeout_ms: u64,
    rate_limit_per_minute: u32,
    rate_limit_burst: u32,
    open_orders_per_client: u32,
    trusted_proxies: Vec<String>,
    webhook_networks: Vec<String>,
    webhooks_per_second: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPartnerSettlement {
    enabled: bool,
    schedule: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAlerts {
    slack_webhook_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    id: String,
    name: String,
    fee_rate_bps: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    id: String,
    name: String,
    price: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partner_id: Option<String>,
}

impl Default for RawConfig {
    fn default() -> RawConfig {
        RawConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: "kassa-data".into(),
            public_base_url: None,
            admin: RawAdmin::default(),
            gateway: RawGateway::default(),
            retry: RawRetry::default(),
            settlement_sync: RawSettlementSync::default(),
            partner_settlement: RawPartnerSettlement::default(),
            alerts: RawAlerts::default(),
            recheck: RawRecheck::default(),
            http: RawHttp::default(),
            partners: vec![
                RawPartner {
                    id: "p-coffee".into(),
                    name: "Coffee Roasters".into(),
                    fee_rate_bps: 330,
                },
                RawPartner {
                    id: "p-tea".into(),
                    name: "Tea House".into(),
                    fee_rate_bps: 250,
                },
            ],
            products: vec![
                RawProduct {
                    id: "beans-1kg".into(),
                    name: "원두 1kg".into(),
                    price: 15_000,
                    partner_id: Some("p-coffee".into()),
                },
                RawProduct {
                    id: "drip-bags".into(),
                    name: "드립백 10개".into(),
                    price: 9_900,
                    partner_id: Some("p-coffee".into()),
                },
                RawProduct {
                    id: "green-tea".into(),
                    name: "녹차 50g".into(),
                    price: 12_000,
                    partner_id: Some("p-tea".into()),
                },
            ],
        }
    }
}

impl Default for RawGateway {
    fn default() -> RawGateway {
        RawGateway {
            default: "sandbox".into(),
            sandbox_public: false,
            portone: RawPortOne::default(),
            toss: RawToss::default(),
            payple: RawPayple::default(),
        }
    }
}

impl Default for RawPortOne {
    fn default() -> RawPortOne {
        RawPortOne {
            base_url: "https://api.iamport.kr".into(),
            imp_key: String::new(),
            imp_secret: String::new(),
            imp_code: String::new(),
            pg: "html5_inicis".into(),
            sdk_url: "https://cdn.iamport.kr/v1/iamport.js".into(),
        }
    }
}

impl Default for RawToss {
    fn default() -> RawToss {
        RawToss {
            base_url: "https://api.tosspayments.com".into(),
            client_key: String::new(),
            secret_key: String::new(),
            sdk_url: "https://js.tosspayments.com/v2/standard".into(),
        }
    }
}

impl Default for RawPayple {
    fn default() -> RawPayple {
        RawPayple {
            base_url: "https://cpay.payple.kr".into(),
            cst_id: String::new(),
            cust_key: String::new(),
            refund_key: String::new(),
            referer: String::new(),
            client_key: String::new(),
            sdk_url: "https://cpay.payple.kr/js/v1/payment.js".into(),
        }
    }
}

impl Default for RawRetry {
    fn default() -> RawRetry {
        RawRetry {
            inline_attempts: 2,
            // About 12 hours with the default backoff: a PG maintenance window of hours must
            // not dead-letter cancels.
            queue_attempts_max: crate::domain::job::CANCEL_ATTEMPTS_DEFAULT,
            tick_interval_ms: 5_000,
            backoff_ms: vec![5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000],
            pg_timeout_ms: 10_000,
            breaker_failures: 5,
        }
    }
}

impl Default for RawSettlementSync {
    fn default() -> RawSettlementSync {
        RawSettlementSync {
            enabled: true,
            schedule: "0 0 8 * * *".into(),
            max_pages_per_run: 100,
            page_interval_ms: 1_100,
            page_size: 100,
            cursor_ttl_hours: 24,
            lock_ttl_s: 600,
            cancel_line_wait_days: 5,
        }
    }
}

impl Default for RawRecheck {
    fn default() -> RawRecheck {
        RawRecheck {
            interval_ms: 60_000,
            ready_order_max_age_h: 72,
            active_days: 7,
        }
    }
}

impl Default for RawHttp {
    fn default() -> RawHttp {
        RawHttp {
            connections_max: 4_096,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            rate_limit_per_minute: 120,
            rate_limit_burst: 30,
            open_orders_per_client: 20,
            trusted_proxies: Vec::new(),
            webhook_networks: Vec::new(),
            webhooks_per_second: 200,
        }
    }
}

impl Default for RawPartnerSettlement {
    fn default() -> RawPartnerSettlement {
        RawPartnerSettlement {
            enabled: true,
            schedule: "0 30 0 * * *".into(),
        }
    }
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
pub struct PortOneConfig {
    pub base_url: String,
    pub imp_key: Secret,
    pub imp_secret: Secret,
    pub imp_code: String,
    pub pg: String,
    pub sdk_url: String,
}

#[derive(Debug, Clone)]
pub struct TossConfig {
    pub base_url: String,
    pub client_key: String,
    pub secret_key: Secret,
    pub sdk_url: String,
}

#[derive(Debug, Clone)]
pub struct PaypleConfig {
    pub base_url: String,
    pub cst_id: Secret,
    pub cust_key: Secret,
    pub refund_key: Secret,
    pub referer: String,
    pub client_key: String,
    pub sdk_url: String,
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

#[derive(Debug, Clone)]
pub struct SettlementSyncConfig {
    pub enabled: bool,
    pub schedule: String,
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
    pub schedule: String,
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

/// Applies `KASSA_A__B=value` (and the two Payple names of the settlement sync). A value is read
/// as the type the default has at that path: numbers, booleans and arrays as TOML, everything
/// else as a plain string, so a secret made of digits stays a string.
fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

fn check_base_url(key: &str, value: &str) -> Result<String, ConfigError> {
    check_url(key, value, true)
}

/// Checks an http(s) URL. `show` quotes the value in the error; a URL that is a secret (a
/// Slack webhook carries its token in the path) is never quoted.
fn check_url(key: &str, value: &str, show: bool) -> Result<String, ConfigError> {
    let trimmed = value.trim().trim_end_matches('/');
    let shown = if show {
        format!(" {value:?}")
    } else {
        String::new()
    };
    let parsed =
        reqwest::Url::parse(trimmed).map_err(|error| invalid(format!("{key}{shown}: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(format!(
            "{key}{shown} must be an http or https URL"
        )));
    }
    Ok(trimmed.to_owned())
}

fn millis(
    key: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    if range.contains(&value) {
        Ok(Duration::from_millis(value))
    } else {
        Err(invalid(format!(
            "{key} = {value} must be between {} and {}",
            range.start(),
            range.end()
        )))
    }
}

fn check_cron(key: &str, value: &str) -> Result<String, ConfigError> {
    crate::scheduler::parse(value).map_err(|message| invalid(format!("{key}: {message}")))?;
    Ok(value.trim().to_owned())
}

#[expect(
    clippy::too_many_lines,
    reason = "one check per section, in the order of the file"
)]
fn validate(raw: &RawConfig) -> Result<Config, ConfigError> {
    if raw.listen.trim().is_empty() {
        return Err(invalid("listen is empty"));
    }
    if raw.data_dir.trim().is_empty() {
        return Err(invalid("data_dir is empty"));
    }
    let public_base_url = match &raw.public_base_url {
        Some(url) => Some(check_base_url("public_base_url", url)?),
        None => None,
    };
    let admin_token = match raw.admin.token.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(token) if token.len() < 16 => {
            return Err(invalid("admin.token must be at least 16 characters"));
        }
        Some(token) => Some(Secret::new(token)),
    };
    let gateway = validate_gateway(&raw.gateway)?;
    let retry = &raw.retry;
    if retry.inline_attempts > 10 {
        return Err(invalid("retry.inline_attempts must be at most 10"));
    }
    if !(1..=100).contains(&retry.queue_attempts_max) {
        return Err(invalid(
            "retry.queue_attempts_max must be between 1 and 100",
        ));
    }
    if !(1..=1_000).contains(&retry.breaker_failures) {
        return Err(invalid("retry.breaker_failures must be between 1 and 1000"));
    }
    if retry.backoff_ms.is_empty() || retry.backoff_ms.len() > BACKOFF_STEPS_MAX {
        return Err(invalid(format!(
            "retry.backoff_ms must list 1 to {BACKOFF_STEPS_MAX} delays"
        )));
    }
    let backoff = retry
        .backoff_ms
        .iter()
        .map(|delay| millis("retry.backoff_ms", *delay, 0..=86_400_000))
        .collect::<Result<Vec<_>, _>>()?;
    let retry = RetryConfig {
        inline_attempts: retry.inline_attempts,
        queue_attempts_max: retry.queue_attempts_max,
        tick_interval: millis(
            "retry.tick_interval_ms",
            retry.tick_interval_ms,
            10..=3_600_000,
        )?,
        backoff,
        pg_timeout: millis("retry.pg_timeout_ms", retry.pg_timeout_ms, 50..=120_000)?,
        breaker_failures: retry.breaker_failures,
    };
    let sync = &raw.settlement_sync;
    if !(1..=10_000).contains(&sync.max_pages_per_run) {
        return Err(invalid(
            "settlement_sync.max_pages_per_run must be between 1 and 10000",
        ));
    }
    if !(1..=3_000).contains(&sync.page_size) {
        return Err(invalid(
            "settlement_sync.page_size must be between 1 and 3000",
        ));
    }
    if !(1..=24 * 31).contains(&sync.cursor_ttl_hours) {
        return Err(invalid(
            "settlement_sync.cursor_ttl_hours must be between 1 and 744",
        ));
    }
    let settlement_sync = SettlementSyncConfig {
        enabled: sync.enabled,
        schedule: check_cron("settlement_sync.schedule", &sync.schedule)?,
        max_pages_per_run: sync.max_pages_per_run,
        page_interval: millis(
            "settlement_sync.page_interval_ms",
            sync.page_interval_ms,
            0..=60_000,
        )?,
        page_size: sync.page_size,
        cursor_ttl: Duration::from_secs(sync.cursor_ttl_hours * 3_600),
        lock_ttl: millis(
            "settlement_sync.lock_ttl_s",
            sync.lock_ttl_s.saturating_mul(1_000),
            1_000..=86_400_000,
        )?,
        cancel_line_wait_days: sync.cancel_line_wait_days,
    };
    if !(1..=60).contains(&sync.cancel_line_wait_days) {
        return Err(invalid(
            "settlement_sync.cancel_line_wait_days must be between 1 and 60",
        ));
    }
    let recheck = &raw.recheck;
    if !(1..=24 * 31).contains(&recheck.ready_order_max_age_h) {
        return Err(invalid(
            "recheck.ready_order_max_age_h must be between 1 and 744",
        ));
    }
    if !(1..=90).contains(&recheck.active_days) {
        return Err(invalid("recheck.active_days must be between 1 and 90"));
    }
    let recheck = RecheckConfig {
        interval: millis(
            "recheck.interval_ms",
            recheck.interval_ms,
            1_000..=86_400_000,
        )?,
        ready_order_max_age: Duration::from_secs(u64::from(recheck.ready_order_max_age_h) * 3_600),
        active: Duration::from_secs(u64::from(recheck.active_days) * 86_400),
    };
    let partner_settlement = PartnerSettlementConfig {
        enabled: raw.partner_settlement.enabled,
        schedule: check_cron(
            "partner_settlement.schedule",
            &raw.partner_settlement.schedule,
        )?,
    };
    let slack = raw.alerts.slack_webhook_url.trim();
    let alerts = AlertsConfig {
        slack_webhook_url: if slack.is_empty() {
            None
        } else {
            check_url("alerts.slack_webhook_url", slack, false)?;
            Some(Secret::new(slack))
        },
    };
    let http = validate_http(&raw.http)?;
    check_sandbox_exposure(raw)?;
    let partners = validate_partners(&raw.partners)?;
    let products = validate_products(&raw.products, &partners)?;
    Ok(Config {
        redacted_toml: redacted_toml(raw),
        listen: raw.listen.trim().to_owned(),
        data_dir: PathBuf::from(raw.data_dir.trim()),
        public_base_url,
        admin_token,
        gateway,
        retry,
        settlement_sync,
        partner_settlement,
        alerts,
        recheck,
        http,
        partners,
        products,
    })
}

fn validate_http(raw: &RawHttp) -> Result<HttpConfig, ConfigError> {
    if !CONNECTIONS_MAX_RANGE.contains(&raw.connections_max) {
        return Err(invalid(format!(
            "http.connections_max must be between {} and {}",
            CONNECTIONS_MAX_RANGE.start(),
            CONNECTIONS_MAX_RANGE.end()
        )));
    }
    let rate_limit = match (
        std::num::NonZeroU32::new(raw.rate_limit_per_minute),
        std::num::NonZeroU32::new(raw.rate_limit_burst),
    ) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(invalid(
                "http.rate_limit_burst must be at least 1 (set http.rate_limit_per_minute = 0 to turn the limit off)",
            ));
        }
        (Some(per_minute), Some(burst)) if per_minute.get() <= 60_000 && burst.get() <= 10_000 => {
            Some(RateLimit { per_minute, burst })
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "http.rate_limit_per_minute must be at most 60000 and http.rate_limit_burst at most 10000",
            ));
        }
    };
    let webhooks_per_second = std::num::NonZeroU32::new(raw.webhooks_per_second)
        .filter(|rate| rate.get() <= 100_000)
        .ok_or_else(|| invalid("http.webhooks_per_second must be between 1 and 100000"))?;
    if raw.open_orders_per_client > 10_000 {
        return Err(invalid("http.open_orders_per_client must be at most 10000"));
    }
    Ok(HttpConfig {
        connections_max: raw.connections_max as usize,
        header_read_timeout: millis(
            "http.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            100..=600_000,
        )?,
        body_read_timeout: millis(
            "http.body_read_timeout_ms",
            raw.body_read_timeout_ms,
            100..=600_000,
        )?,
        rate_limit,
        open_orders_per_client: raw.open_orders_per_client,
        trusted_proxies: networks("http.trusted_proxies", &raw.trusted_proxies)?,
        webhook_networks: networks("http.webhook_networks", &raw.webhook_networks)?,
        webhooks_per_second,
    })
}

/// Addresses (`10.0.0.1`) and networks (`10.0.0.0/8`, `2001:db8::/32`).
fn networks(key: &str, raw: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    if raw.len() > NETWORKS_MAX {
        return Err(invalid(format!(
            "{key} lists more than {NETWORKS_MAX} networks"
        )));
    }
    raw.iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(format!(
                        "{key}: {text:?} is not an address or a network such as 10.0.0.0/8"
                    ))
                })
        })
        .collect()
}

/// The sandbox accepts any card and refunds on request: it must not face real buyers by
/// mistake. It refuses a non-loopback `listen` and real PG keys unless `sandbox_public` says so.
fn check_sandbox_exposure(raw: &RawConfig) -> Result<(), ConfigError> {
    if raw.gateway.default != "sandbox" || raw.gateway.sandbox_public {
        return Ok(());
    }
    let keys = [
        ("gateway.portone.imp_key", &raw.gateway.portone.imp_key),
        (
            "gateway.portone.imp_secret",
            &raw.gateway.portone.imp_secret,
        ),
        ("gateway.toss.secret_key", &raw.gateway.toss.secret_key),
        ("gateway.payple.cst_id", &raw.gateway.payple.cst_id),
        ("gateway.payple.cust_key", &raw.gateway.payple.cust_key),
        ("gateway.payple.refund_key", &raw.gateway.payple.refund_key),
    ];
    let real: Vec<&str> = keys
        .iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(key, _)| *key)
        .collect();
    if !real.is_empty() {
        return Err(invalid(format!(
            "gateway.default = \"sandbox\" beside real PG keys ({}): choose the PG in gateway.default, or set gateway.sandbox_public = true to run the sandbox anyway",
            real.join(", ")
        )));
    }
    if !raw.http.trusted_proxies.is_empty() {
        return Err(invalid(
            "the sandbox PG accepts any card: it does not run behind a reverse proxy (http.trusted_proxies is set) unless gateway.sandbox_public = true",
        ));
    }
    if let Some(url) = raw.public_base_url.as_deref() {
        let host = reqwest::Url::parse(url.trim())
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(invalid(format!(
                "the sandbox PG accepts any card: public_base_url {url:?} is not a loopback address; set gateway.sandbox_public = true to run it there on purpose"
            )));
        }
    }
    if !is_loopback_listen(raw.listen.trim()) {
        return Err(invalid(format!(
            "the sandbox PG accepts any card: it listens only on a loopback address, not {:?}, unless gateway.sandbox_public = true",
            raw.listen.trim()
        )));
    }
    Ok(())
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

fn validate_gateway(raw: &RawGateway) -> Result<GatewayConfig, ConfigError> {
    let mode = match raw.default.as_str() {
        "sandbox" => GatewayMode::Sandbox,
        other => GatewayMode::Real(Provider::parse(other).map_err(|_| {
            invalid(format!(
                "gateway.default {other:?} must be sandbox, portone, toss or payple"
            ))
        })?),
    };
    let portone = PortOneConfig {
        base_url: check_base_url("gateway.portone.base_url", &raw.portone.base_url)?,
        imp_key: Secret::new(raw.portone.imp_key.trim()),
        imp_secret: Secret::new(raw.portone.imp_secret.trim()),
        imp_code: raw.portone.imp_code.trim().to_owned(),
        pg: raw.portone.pg.trim().to_owned(),
        sdk_url: check_base_url("gateway.portone.sdk_url", &raw.portone.sdk_url)?,
    };
    let toss = TossConfig {
        base_url: check_base_url("gateway.toss.base_url", &raw.toss.base_url)?,
        client_key: raw.toss.client_key.trim().to_owned(),
        secret_key: Secret::new(raw.toss.secret_key.trim()),
        sdk_url: check_base_url("gateway.toss.sdk_url", &raw.toss.sdk_url)?,
    };
    let payple = PaypleConfig {
        base_url: check_base_url("gateway.payple.base_url", &raw.payple.base_url)?,
        cst_id: Secret::new(raw.payple.cst_id.trim()),
        cust_key: Secret::new(raw.payple.cust_key.trim()),
        refund_key: Secret::new(raw.payple.refund_key.trim()),
        referer: raw.payple.referer.trim().to_owned(),
        client_key: raw.payple.client_key.trim().to_owned(),
        sdk_url: check_base_url("gateway.payple.sdk_url", &raw.payple.sdk_url)?,
    };
    let missing = |section: &str, keys: &[(&str, bool)]| -> Result<(), ConfigError> {
        let absent: Vec<&str> = keys
            .iter()
            .filter(|(_, present)| !present)
            .map(|(key, _)| *key)
            .collect();
        if absent.is_empty() {
            Ok(())
        } else {
            Err(invalid(format!(
                "gateway.default = {section:?} needs gateway.{section}.{}",
                absent.join(format!(", gateway.{section}.").as_str())
            )))
        }
    };
    match mode {
        GatewayMode::Sandbox => {}
        GatewayMode::Real(Provider::PortOne) => missing(
            "portone",
            &[
                ("imp_key", !portone.imp_key.is_empty()),
                ("imp_secret", !portone.imp_secret.is_empty()),
                ("imp_code", !portone.imp_code.is_empty()),
            ],
        )?,
        GatewayMode::Real(Provider::Toss) => missing(
            "toss",
            &[
                ("client_key", !toss.client_key.is_empty()),
                ("secret_key", !toss.secret_key.is_empty()),
            ],
        )?,
        GatewayMode::Real(Provider::Payple) => missing(
            "payple",
            &[
                ("cst_id", !payple.cst_id.is_empty()),
                ("cust_key", !payple.cust_key.is_empty()),
                ("refund_key", !payple.refund_key.is_empty()),
                ("referer", !payple.referer.is_empty()),
            ],
        )?,
    }
    Ok(GatewayConfig {
        mode,
        sandbox_public: raw.sandbox_public,
        portone,
        toss,
        payple,
    })
}

fn validate_partners(raw: &[RawPartner]) -> Result<Vec<Partner>, ConfigError> {
    if raw.len() > PARTNERS_MAX {
        return Err(invalid(format!("at most {PARTNERS_MAX} partners")));
    }
    let mut partners: Vec<Partner> = Vec::with_capacity(raw.len());
    for partner in raw {
        let id = PartnerId::parse(&partner.id)
            .map_err(|error| invalid(format!("partner {:?}: {error}", partner.id)))?;
        if partners.iter().any(|known| known.id == id) {
            return Err(invalid(format!("partner {id} is listed twice")));
        }
        if partner.fee_rate_bps > 10_000 {
            return Err(invalid(format!(
                "partner {id}: fee_rate_bps must be at most 10000 (100 %)"
            )));
        }
        let name = parse_text("partner name", &partner.name, 100)
            .map_err(|error| invalid(format!("partner {id}: {error}")))?;
        partners.push(Partner {
            id,
            name,
            fee_rate_bps: partner.fee_rate_bps,
        });
    }
    Ok(partners)
}

fn validate_products(
    raw: &[RawProduct],
    partners: &[Partner],
) -> Result<Vec<Product>, ConfigError> {
    if raw.len() > PRODUCTS_MAX {
        return Err(invalid(format!("at most {PRODUCTS_MAX} products")));
    }
    let mut products: Vec<Product> = Vec::with_capacity(raw.len());
    for product in raw {
        let id = &product.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(format!(
                "product id {id:?} must be 1 to 64 of A-Z a-z 0-9 - _"
            )));
        }
        if products.iter().any(|known| &known.id == id) {
            return Err(invalid(format!("product {id} is listed twice")));
        }
        let price = Amount::positive(product.price)
            .map_err(|error| invalid(format!("product {id}: price: {error}")))?;
        let name = parse_text("product name", &product.name, 100)
            .map_err(|error| invalid(format!("product {id}: {error}")))?;
        let partner_id = match &product.partner_id {
            None => None,
            Some(raw_partner) => {
                let partner = PartnerId::parse(raw_partner)
                    .map_err(|error| invalid(format!("product {id}: {error}")))?;
                if !partners.iter().any(|known| known.id == partner) {
                    return Err(invalid(format!(
                        "product {id} names partner {partner}, which is not in [[partners]]"
                    )));
                }
                Some(partner)
            }
        };
        products.push(Product {
            id: id.clone(),
            name,
            price,
            partner_id,
        });
    }
    Ok(products)
}

/// True when `path` exists and is a directory or can be made one; used by `check-config`.
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
