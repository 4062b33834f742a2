//! The verbs of the `fstore` binary, one module per group; they call the server through
//! [`fstore::client::Client`].

pub mod auth;
pub mod backfill;
pub mod client;
pub mod demo;
pub mod dlq;
pub mod flow;
pub mod log;
pub mod publish;
pub mod run;
