//! Turns the raw shape into `Config`: every value checked once, with its range named, and
//! carried in its type from then on.

use super::raw::{RawConfig, RawGateway, RawHttp, RawPartner, RawProduct};
use super::{
    AlertsConfig, BACKOFF_STEPS_MAX, CONNECTIONS_MAX_RANGE, Config, ConfigError, GatewayConfig,
    GatewayMode, HttpConfig, NETWORKS_MAX, PARTNERS_MAX, PRODUCTS_MAX, Partner,
    PartnerSettlementConfig, Product, RateLimit, RecheckConfig, RetryConfig, Schedule,
    SettlementSyncConfig, is_loopback_listen, redacted_toml,
};
use crate::domain::{Amount, PartnerId, Provider, parse_text};
use crate::secret::Secret;
use std::path::PathBuf;
use std::time::Duration;

use std::ops::RangeInclusive;

/// The range of every bounded key, by name.
pub const ADMIN_TOKEN_CHARS_MIN: usize = 16;
pub const INLINE_ATTEMPTS_MAX: u32 = 10;
pub const QUEUE_ATTEMPTS_RANGE: RangeInclusive<u32> = 1..=100;
pub const BREAKER_FAILURES_RANGE: RangeInclusive<u32> = 1..=1_000;
pub const BACKOFF_MS_RANGE: RangeInclusive<u64> = 0..=86_400_000;
pub const TICK_INTERVAL_MS_RANGE: RangeInclusive<u64> = 10..=3_600_000;
pub const PG_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 50..=120_000;
pub const MAX_PAGES_PER_RUN_RANGE: RangeInclusive<u32> = 1..=10_000;
pub const PAGE_SIZE_RANGE: RangeInclusive<u32> = 1..=3_000;
pub const CURSOR_TTL_HOURS_RANGE: RangeInclusive<u64> = 1..=24 * 31;
pub const PAGE_INTERVAL_MS_RANGE: RangeInclusive<u64> = 0..=60_000;
pub const LOCK_TTL_MS_RANGE: RangeInclusive<u64> = 1_000..=86_400_000;
pub const CANCEL_LINE_WAIT_DAYS_RANGE: RangeInclusive<u32> = 1..=60;
pub const READY_ORDER_MAX_AGE_H_RANGE: RangeInclusive<u32> = 1..=24 * 31;
pub const ACTIVE_DAYS_RANGE: RangeInclusive<u32> = 1..=90;
pub const RECHECK_INTERVAL_MS_RANGE: RangeInclusive<u64> = 1_000..=86_400_000;
pub const RATE_LIMIT_PER_MINUTE_MAX: u32 = 60_000;
pub const RATE_LIMIT_BURST_MAX: u32 = 10_000;
pub const WEBHOOKS_PER_SECOND_MAX: u32 = 100_000;
pub const OPEN_ORDERS_PER_CLIENT_MAX: u32 = 10_000;
pub const READ_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 100..=600_000;
pub const FEE_RATE_BPS_MAX: u32 = 10_000;
pub const PRODUCT_ID_CHARS_MAX: usize = 64;
pub const NAME_CHARS_MAX: usize = 100;

/// `value` of `key` within `range`, or an error that names both.
fn within<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(format!(
            "{key} must be between {} and {}",
            range.start(),
            range.end()
        )))
    }
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

pub(super) fn check_base_url(key: &str, value: &str) -> Result<String, ConfigError> {
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

fn check_cron(key: &str, value: &str) -> Result<Schedule, ConfigError> {
    let cron = crate::scheduler::parse(value.trim())
        .map_err(|message| invalid(format!("{key}: {message}")))?;
    Ok(Schedule {
        text: value.trim().to_owned(),
        cron,
    })
}

#[expect(
    clippy::too_many_lines,
    reason = "one check per section, in the order of the file"
)]
pub(super) fn validate(raw: &RawConfig) -> Result<Config, ConfigError> {
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
        Some(token) if token.len() < ADMIN_TOKEN_CHARS_MIN => {
            return Err(invalid(format!(
                "admin.token must be at least {ADMIN_TOKEN_CHARS_MIN} characters"
            )));
        }
        Some(token) => Some(Secret::new(token)),
    };
    let gateway = validate_gateway(&raw.gateway)?;
    let retry = &raw.retry;
    within(
        "retry.inline_attempts",
        retry.inline_attempts,
        &(0..=INLINE_ATTEMPTS_MAX),
    )?;
    within(
        "retry.queue_attempts_max",
        retry.queue_attempts_max,
        &QUEUE_ATTEMPTS_RANGE,
    )?;
    within(
        "retry.breaker_failures",
        retry.breaker_failures,
        &BREAKER_FAILURES_RANGE,
    )?;
    if retry.backoff_ms.is_empty() || retry.backoff_ms.len() > BACKOFF_STEPS_MAX {
        return Err(invalid(format!(
            "retry.backoff_ms must list 1 to {BACKOFF_STEPS_MAX} delays"
        )));
    }
    let backoff = retry
        .backoff_ms
        .iter()
        .map(|delay| millis("retry.backoff_ms", *delay, BACKOFF_MS_RANGE))
        .collect::<Result<Vec<_>, _>>()?;
    let retry = RetryConfig {
        inline_attempts: retry.inline_attempts,
        queue_attempts_max: retry.queue_attempts_max,
        tick_interval: millis(
            "retry.tick_interval_ms",
            retry.tick_interval_ms,
            TICK_INTERVAL_MS_RANGE,
        )?,
        backoff,
        pg_timeout: millis(
            "retry.pg_timeout_ms",
            retry.pg_timeout_ms,
            PG_TIMEOUT_MS_RANGE,
        )?,
        breaker_failures: retry.breaker_failures,
    };
    let sync = &raw.settlement_sync;
    within(
        "settlement_sync.max_pages_per_run",
        sync.max_pages_per_run,
        &MAX_PAGES_PER_RUN_RANGE,
    )?;
    within(
        "settlement_sync.page_size",
        sync.page_size,
        &PAGE_SIZE_RANGE,
    )?;
    within(
        "settlement_sync.cursor_ttl_hours",
        sync.cursor_ttl_hours,
        &CURSOR_TTL_HOURS_RANGE,
    )?;
    let settlement_sync = SettlementSyncConfig {
        enabled: sync.enabled,
        schedule: check_cron("settlement_sync.schedule", &sync.schedule)?,
        max_pages_per_run: sync.max_pages_per_run,
        page_interval: millis(
            "settlement_sync.page_interval_ms",
            sync.page_interval_ms,
            PAGE_INTERVAL_MS_RANGE,
        )?,
        page_size: sync.page_size,
        cursor_ttl: Duration::from_secs(sync.cursor_ttl_hours * 3_600),
        lock_ttl: millis(
            "settlement_sync.lock_ttl_s",
            sync.lock_ttl_s.saturating_mul(1_000),
            LOCK_TTL_MS_RANGE,
        )?,
        cancel_line_wait_days: sync.cancel_line_wait_days,
    };
    within(
        "settlement_sync.cancel_line_wait_days",
        sync.cancel_line_wait_days,
        &CANCEL_LINE_WAIT_DAYS_RANGE,
    )?;
    let recheck = &raw.recheck;
    within(
        "recheck.ready_order_max_age_h",
        recheck.ready_order_max_age_h,
        &READY_ORDER_MAX_AGE_H_RANGE,
    )?;
    within(
        "recheck.active_days",
        recheck.active_days,
        &ACTIVE_DAYS_RANGE,
    )?;
    let recheck = RecheckConfig {
        interval: millis(
            "recheck.interval_ms",
            recheck.interval_ms,
            RECHECK_INTERVAL_MS_RANGE,
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
        (Some(per_minute), Some(burst))
            if per_minute.get() <= RATE_LIMIT_PER_MINUTE_MAX
                && burst.get() <= RATE_LIMIT_BURST_MAX =>
        {
            Some(RateLimit { per_minute, burst })
        }
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "http.rate_limit_per_minute must be at most {RATE_LIMIT_PER_MINUTE_MAX} and http.rate_limit_burst at most {RATE_LIMIT_BURST_MAX}"
            )));
        }
    };
    let webhooks_per_second = std::num::NonZeroU32::new(raw.webhooks_per_second)
        .filter(|rate| rate.get() <= WEBHOOKS_PER_SECOND_MAX)
        .ok_or_else(|| {
            invalid(format!(
                "http.webhooks_per_second must be between 1 and {WEBHOOKS_PER_SECOND_MAX}"
            ))
        })?;
    within(
        "http.open_orders_per_client",
        raw.open_orders_per_client,
        &(0..=OPEN_ORDERS_PER_CLIENT_MAX),
    )?;
    Ok(HttpConfig {
        connections_max: raw.connections_max as usize,
        header_read_timeout: millis(
            "http.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            READ_TIMEOUT_MS_RANGE,
        )?,
        body_read_timeout: millis(
            "http.body_read_timeout_ms",
            raw.body_read_timeout_ms,
            READ_TIMEOUT_MS_RANGE,
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

fn validate_gateway(raw: &RawGateway) -> Result<GatewayConfig, ConfigError> {
    let mode = match raw.default.as_str() {
        "sandbox" => GatewayMode::Sandbox,
        other => GatewayMode::Real(Provider::parse(other).map_err(|_| {
            invalid(format!(
                "gateway.default {other:?} must be sandbox, portone, toss or payple"
            ))
        })?),
    };
    let portone = super::portone::checked(&raw.portone)?;
    let toss = super::toss::checked(&raw.toss)?;
    let payple = super::payple::checked(&raw.payple)?;
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
        GatewayMode::Real(Provider::PortOne) => missing("portone", &portone.required())?,
        GatewayMode::Real(Provider::Toss) => missing("toss", &toss.required())?,
        GatewayMode::Real(Provider::Payple) => missing("payple", &payple.required())?,
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
        if partner.fee_rate_bps > FEE_RATE_BPS_MAX {
            return Err(invalid(format!(
                "partner {id}: fee_rate_bps must be at most {FEE_RATE_BPS_MAX} (100 %)"
            )));
        }
        let name = parse_text("partner name", &partner.name, NAME_CHARS_MAX)
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
            || id.len() > PRODUCT_ID_CHARS_MAX
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(format!(
                "product id {id:?} must be 1 to {PRODUCT_ID_CHARS_MAX} of A-Z a-z 0-9 - _"
            )));
        }
        if products.iter().any(|known| &known.id == id) {
            return Err(invalid(format!("product {id} is listed twice")));
        }
        let price = Amount::positive(product.price)
            .map_err(|error| invalid(format!("product {id}: price: {error}")))?;
        let name = parse_text("product name", &product.name, NAME_CHARS_MAX)
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
