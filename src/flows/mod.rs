//! Use cases: the only code that combines the domain, the store and the gateways. HTTP handlers,
//! the worker and tests call these functions; none of them knows HTTP.
//!
//! Invariant: a PG payment is stored only after kassa fetched it from the PG itself; what a
//! browser, a redirect or a webhook says is a hint that names which payment to fetch.

pub mod breaker;
pub mod cancel;
pub mod orders;
pub mod partners;
pub mod payments;
pub mod recheck;
pub mod result;
pub mod settlement;

use crate::clock::Env;
use crate::config::Config;
use crate::domain::DomainError;
use crate::gateway::{GatewayError, Gateways};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Everything a flow needs: the config, the store, the PGs, and the clock and randomness.
#[derive(Debug, Clone)]
pub struct Kassa {
    pub config: Arc<Config>,
    pub store: Store,
    pub gateways: Gateways,
    pub env: Env,
    /// Wakes the worker before its next tick (a re-drive, a new job).
    pub wake: Arc<tokio::sync::Notify>,
    /// Every attempt and job running in the background, so shutdown can wait for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// One circuit breaker per PG.
    pub breakers: Arc<breaker::Breakers>,
    /// The client alerts are posted to Slack with (not a PG's).
    pub http: reqwest::Client,
    /// Cancelled when kassa shuts down: no new attempt or job starts after it.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// What `/metrics` shows; every PG call is timed into it.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Kassa {
    pub fn new(
        config: Config,
        store: Store,
        gateways: Gateways,
        env: Env,
        http: reqwest::Client,
    ) -> Kassa {
        let breakers = Arc::new(breaker::Breakers::new(config.retry.breaker_failures));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let gateways =
            gateways.map(|gateway| crate::metrics::Measured::wrap(gateway, Arc::clone(&metrics)));
        Kassa {
            metrics,
            config: Arc::new(config),
            store,
            gateways,
            env,
            wake: Arc::new(tokio::sync::Notify::new()),
            tasks: tokio_util::task::TaskTracker::new(),
            breakers,
            http,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }
}

/// Why a flow did not do what was asked. Each variant says what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{0}")]
    Invalid(#[from] DomainError),
    #[error("{what} was not found")]
    NotFound { what: &'static str },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// A bound on what one client may do was reached; it may try again later.
    #[error("{message}")]
    TooMany { code: &'static str, message: String },
    #[error("the PG is not available: {0}")]
    Gateway(GatewayError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
