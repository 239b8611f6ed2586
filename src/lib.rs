//! kassa: one binary that takes card payments through Korean PGs, keeps them in one redb file,
//! and refunds and settles them. Modules in reading order: the pure `domain`, the `store` that
//! alone touches redb, the `gateway`s that alone speak PG wire formats, the `flows` that combine
//! them, the `http` adapter, the `sandbox` PG, and `app`, which wires it all.

pub mod app;
pub mod bench;
pub mod clock;
pub mod config;
pub mod domain;
pub mod flows;
pub mod fuzzing;
pub mod gateway;
pub mod hex;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod sandbox;
pub mod scheduler;
pub mod secret;
pub mod store;
pub mod telemetry;
