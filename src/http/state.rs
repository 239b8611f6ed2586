//! What every handler can reach.

use crate::flows::Kassa;
use crate::secret::Secret;
use tokio_util::sync::CancellationToken;

/// The handlers' state: one `Arc`, so that each extractor and middleware that takes it costs
/// one reference count, not a copy of every field.
#[derive(Debug, Clone)]
pub struct AppState(std::sync::Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(std::sync::Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug)]
pub struct Shared {
    pub kassa: Kassa,
    pub admin_token: Secret,
    /// Where buyers reach kassa, without a trailing slash.
    pub public_base_url: String,
    /// True when the checkout opens the built-in sandbox PG's window.
    pub sandbox: bool,
    pub shutdown: CancellationToken,
    /// Bounds how many result long-polls wait at once; past it they answer at once.
    pub long_polls: std::sync::Arc<tokio::sync::Semaphore>,
    /// The per-client rate limit of the public endpoints, unless `http.rate_limit_per_minute = 0`.
    pub limiter: Option<super::client::ClientLimiter>,
    /// The bound of the webhook inbox, for all PGs together.
    pub inbox: super::client::InboxLimiter,
    /// The merchant's signed-in sessions of the admin pages.
    pub admin_sessions: std::sync::Arc<super::pages::admin::AdminSessions>,
}

/// Most result long-polls that wait at the same time.
pub const LONG_POLL_WAITERS_MAX: usize = 1_024;

impl Shared {
    pub fn cookie_key(&self) -> &[u8; 32] {
        self.kassa.store.cookie_key()
    }

    /// Cookies carry `Secure` when buyers reach kassa over https: by its public URL, or as a
    /// trusted proxy says of this request.
    pub fn secure_cookies(&self, client: super::client::Client) -> bool {
        self.public_base_url.starts_with("https://") || client.https
    }
}
