//! Server-rendered pages. Each handler reads, calls a flow, and renders a template; a problem
//! is shown as a friendly page with the right status (`PageError`), never a bare error.

pub mod admin;
mod buyer;

pub use buyer::*;
