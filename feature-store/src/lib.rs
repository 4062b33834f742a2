//! The feature store: it resolves each requested feature's dependency graph, answers from
//! the result store, and sends the missing nodes to the compute substrate; callers poll a
//! ticket, wait with a deadline or watch a stream.
//!
//! Layout:
//! - [`registry`]: definitions, versions, the petgraph DAG, lineage hashes
//! - [`planner`]: value keys, cache look-ups, claims and job submission
//! - [`service`]: the tonic service (validation, tenants, SYNC waits, watch streams)
//! - [`status`]: the one place errors become gRPC statuses
//! - [`ready`]: fan-out of ready notifications to waiting calls
//! - [`server`]: assembling substrate, workers and service on a listener
//! - [`metrics`]: the Prometheus `/metrics` endpoint
//! - [`config`]: layered configuration
//! - [`names`]: validation of names users send
//! - [`definitions`]: the TOML registration file format
//! - [`cli`]: the client verbs of the `fstore` binary
//! - [`telemetry`]: logs, OpenTelemetry traces and the W3C propagator

pub mod cli;
pub mod config;
pub mod definitions;
pub mod error;
pub mod metrics;
pub mod names;
pub mod planner;
pub mod ready;
pub mod registry;
pub mod server;
pub mod service;
pub mod status;
pub mod telemetry;

pub use config::Config;
pub use error::{Error, Result};
