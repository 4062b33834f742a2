//! The feature store: it resolves each requested feature's dependency graph, answers from
//! the result store, and sends the missing nodes to the compute substrate; callers poll a
//! ticket, wait with a deadline or watch a stream.
//!
//! Layout (a request's path through it, top to bottom):
//! - [`quota`]: calls per second per tenant on a replica
//! - [`auth`]: API keys, roles and the layer that authenticates every call (default deny)
//! - [`service`]: the tonic adapter (tenant, one [`store`] call, error mapping)
//! - [`status`]: the one place errors become gRPC statuses
//! - [`store`]: the calls of `featurestore.v1`, free of gRPC
//! - [`request`]: a request checked once ([`request::ValidRequest`])
//! - [`follow`]: plan updates until a request completes (SYNC, watch, tickets)
//! - [`tickets`]: storing and reading pending requests
//! - [`inputs`]: stored request-time inputs (PutInputs)
//! - [`events`]: the feature log as callers read it (SubscribeEvents, ReadLog)
//! - [`planner`]: value keys, look-ups, claim-and-submit
//! - [`keys`]: [`keys::ValueKey`], [`keys::LineageHash`] and their one hasher
//! - [`served`]: what this replica served (the staleness view)
//! - [`registry`]: definitions, versions, the petgraph DAG, lineage
//! - [`shared`]: features shared read-only with named tenants (`owner/name`)
//! - [`enrich`]: values re-enriched in the background when a related entity's inputs arrive
//! - [`admin`]: invalidation and dead letters
//! - [`backfill`]: backfills on the batch lane, and the runner that holds them
//! - [`publish`]: staged generations, the anomaly gate, publish and rollback, snapshot serving
//! - [`describe`]: feature and flow listings
//! - [`ready`]: fan-out of ready notifications to waiting calls
//! - [`server`]: assembling substrate, workers and service; tasks and shutdown
//! - [`metrics`]: the Prometheus `/metrics` endpoint
//! - [`config`]: layered configuration, every default
//! - [`names`]: validation of names users send
//! - [`definitions`]: the TOML registration file format
//! - [`client`]: a typed gRPC client (tenant header, registration files)
//! - [`export`]: training exports from the log (Parquet, CSV, point-in-time joins)
//! - [`telemetry`]: logs, OpenTelemetry traces and the W3C propagator
//! - [`tls`]: TLS of the gRPC listener, mTLS, certificates reloaded on change

pub mod admin;
pub mod auth;
pub mod backfill;
pub mod client;
pub mod config;
pub mod definitions;
pub mod describe;
pub mod enrich;
pub mod error;
pub mod events;
pub mod export;
pub mod follow;
pub mod http;
pub mod inputs;
pub mod keys;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod planner;
pub mod publish;
pub mod quota;
pub mod ready;
pub mod registry;
pub mod request;
pub mod served;
pub mod server;
pub mod service;
pub mod shared;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tickets;
pub mod tls;

pub use config::Config;
pub use error::{Error, Result};
