//! `[gateway.portone]`: PortOne V1, its REST API and browser SDK.

use super::ConfigError;
use super::validate::check_base_url;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPortOne {
    pub(super) base_url: String,
    pub(super) imp_key: String,
    pub(super) imp_secret: String,
    /// The merchant code (가맹점 식별코드) the browser SDK needs.
    pub(super) imp_code: String,
    /// The PG channel the browser SDK asks for, such as `html5_inicis`.
    pub(super) pg: String,
    pub(super) sdk_url: String,
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

#[derive(Debug, Clone)]
pub struct PortOneConfig {
    pub base_url: String,
    pub imp_key: Secret,
    pub imp_secret: Secret,
    pub imp_code: String,
    pub pg: String,
    pub sdk_url: String,
}

/// `[gateway.portone]` checked: its URLs are http(s), its keys trimmed.
pub(super) fn checked(raw: &RawPortOne) -> Result<PortOneConfig, ConfigError> {
    Ok(PortOneConfig {
        base_url: check_base_url("gateway.portone.base_url", &raw.base_url)?,
        imp_key: Secret::new(raw.imp_key.trim()),
        imp_secret: Secret::new(raw.imp_secret.trim()),
        imp_code: raw.imp_code.trim().to_owned(),
        pg: raw.pg.trim().to_owned(),
        sdk_url: check_base_url("gateway.portone.sdk_url", &raw.sdk_url)?,
    })
}

impl PortOneConfig {
    /// The keys a merchant must set to use this PG, and whether each is set.
    pub(super) fn required(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("imp_key", !self.imp_key.is_empty()),
            ("imp_secret", !self.imp_secret.is_empty()),
            ("imp_code", !self.imp_code.is_empty()),
        ]
    }
}
