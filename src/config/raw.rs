//! The raw shape of the config: exactly the TOML of CONTRACT.md, with the built-in defaults.
//! Nothing here is checked; `validate` turns it into `Config`.

use super::payple::RawPayple;
use super::portone::RawPortOne;
use super::toss::RawToss;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) listen: String,
    pub(super) data_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) public_base_url: Option<String>,
    pub(super) admin: RawAdmin,
    pub(super) gateway: RawGateway,
    pub(super) retry: RawRetry,
    pub(super) settlement_sync: RawSettlementSync,
    pub(super) partner_settlement: RawPartnerSettlement,
    pub(super) alerts: RawAlerts,
    pub(super) recheck: RawRecheck,
    pub(super) http: RawHttp,
    pub(super) partners: Vec<RawPartner>,
    pub(super) products: Vec<RawProduct>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGateway {
    pub(super) default: String,
    pub(super) sandbox_public: bool,
    pub(super) portone: RawPortOne,
    pub(super) toss: RawToss,
    pub(super) payple: RawPayple,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetry {
    pub(super) inline_attempts: u32,
    pub(super) queue_attempts_max: u32,
    pub(super) tick_interval_ms: u64,
    pub(super) backoff_ms: Vec<u64>,
    pub(super) pg_timeout_ms: u64,
    pub(super) breaker_failures: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSettlementSync {
    pub(super) enabled: bool,
    pub(super) schedule: String,
    pub(super) max_pages_per_run: u32,
    pub(super) page_interval_ms: u64,
    pub(super) page_size: u32,
    pub(super) cursor_ttl_hours: u64,
    pub(super) lock_ttl_s: u64,
    pub(super) cancel_line_wait_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRecheck {
    pub(super) interval_ms: u64,
    pub(super) ready_order_max_age_h: u32,
    pub(super) active_days: u32,
}

/// What faces the internet: slow clients, rate limits, proxies, webhook sources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    pub(super) connections_max: u32,
    pub(super) header_read_timeout_ms: u64,
    pub(super) body_read_timeout_ms: u64,
    pub(super) rate_limit_per_minute: u32,
    pub(super) rate_limit_burst: u32,
    pub(super) open_orders_per_client: u32,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) webhook_networks: Vec<String>,
    pub(super) webhooks_per_second: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPartnerSettlement {
    pub(super) enabled: bool,
    pub(super) schedule: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAlerts {
    pub(super) slack_webhook_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartner {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) fee_rate_bps: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProduct {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) price: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) partner_id: Option<String>,
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
