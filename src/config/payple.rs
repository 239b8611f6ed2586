//! `[gateway.payple]`: Payple, its partner API and browser script.

use super::ConfigError;
use super::validate::check_base_url;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPayple {
    pub(super) base_url: String,
    pub(super) cst_id: String,
    pub(super) cust_key: String,
    pub(super) refund_key: String,
    pub(super) referer: String,
    /// The client key Payple's browser script needs.
    pub(super) client_key: String,
    pub(super) sdk_url: String,
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

/// `[gateway.payple]` checked: its URLs are http(s), its keys trimmed.
pub(super) fn checked(raw: &RawPayple) -> Result<PaypleConfig, ConfigError> {
    Ok(PaypleConfig {
        base_url: check_base_url("gateway.payple.base_url", &raw.base_url)?,
        cst_id: Secret::new(raw.cst_id.trim()),
        cust_key: Secret::new(raw.cust_key.trim()),
        refund_key: Secret::new(raw.refund_key.trim()),
        referer: raw.referer.trim().to_owned(),
        client_key: raw.client_key.trim().to_owned(),
        sdk_url: check_base_url("gateway.payple.sdk_url", &raw.sdk_url)?,
    })
}

impl PaypleConfig {
    /// The keys a merchant must set to use this PG, and whether each is set.
    pub(super) fn required(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("cst_id", !self.cst_id.is_empty()),
            ("cust_key", !self.cust_key.is_empty()),
            ("refund_key", !self.refund_key.is_empty()),
            ("referer", !self.referer.is_empty()),
        ]
    }
}
