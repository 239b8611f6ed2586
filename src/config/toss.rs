//! `[gateway.toss]`: Toss Payments, its API and browser SDK.

use super::ConfigError;
use super::validate::check_base_url;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawToss {
    pub(super) base_url: String,
    pub(super) client_key: String,
    pub(super) secret_key: String,
    pub(super) sdk_url: String,
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

#[derive(Debug, Clone)]
pub struct TossConfig {
    pub base_url: String,
    pub client_key: String,
    pub secret_key: Secret,
    pub sdk_url: String,
}

/// `[gateway.toss]` checked: its URLs are http(s), its keys trimmed.
pub(super) fn checked(raw: &RawToss) -> Result<TossConfig, ConfigError> {
    Ok(TossConfig {
        base_url: check_base_url("gateway.toss.base_url", &raw.base_url)?,
        client_key: raw.client_key.trim().to_owned(),
        secret_key: Secret::new(raw.secret_key.trim()),
        sdk_url: check_base_url("gateway.toss.sdk_url", &raw.sdk_url)?,
    })
}

impl TossConfig {
    /// The keys a merchant must set to use this PG, and whether each is set.
    pub(super) fn required(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("client_key", !self.client_key.is_empty()),
            ("secret_key", !self.secret_key.is_empty()),
        ]
    }
}
