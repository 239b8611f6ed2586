//! What every handler can reach.

use crate::flows::Kassa;
use crate::secret::Secret;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct AppState {
    pub kassa: Kassa,
    pub admin_token: Secret,
    /// Where buyers reach kassa, without a trailing slash.
    pub public_base_url: String,
    /// True when the checkout opens the built-in sandbox PG's window.
    pub sandbox: bool,
    pub shutdown: CancellationToken,
    /// Bounds how many result long-polls wait at once; past it they answer at once.
    pub long_polls: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Most result long-polls that wait at the same time.
pub const LONG_POLL_WAITERS_MAX: usize = 1_024;

impl AppState {
    pub fn cookie_key(&self) -> &[u8; 32] {
        self.kassa.store.cookie_key()
    }

    pub fn secure_cookies(&self) -> bool {
        self.public_base_url.starts_with("https://")
    }
}
