//! kassa's integration tests: one crate, the real server on port 0 against the sandbox PG.
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on an unexpected value"
)]

mod admin;
mod backup;
mod bad_input;
mod bench;
mod browser;
mod cancels;
mod exactly_once;
mod fuzz_corpora;
mod hostile;
mod kill;
mod mypage;
mod nothing_missed;
mod packaging;
mod partners;
mod payments;
mod payple;
mod process;
mod protection;
mod settlement;
mod simulation;
mod storage;
mod support;
mod toss;
