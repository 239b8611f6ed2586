//! kassa's integration tests: one crate, the real server on port 0 against the sandbox PG.

mod bad_input;
mod browser;
mod mypage;
mod payments;
mod process;
mod support;
