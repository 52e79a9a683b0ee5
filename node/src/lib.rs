//! A shoal node: configuration, the HTTP API and the wiring that starts a node.
//!
//! `shoal` (the binary) parses a [`Config`] and calls [`run`]; tests and embedding
//! applications call the same function, or [`Node::start`] to get at the bound address.

pub mod api;
pub mod cli;
pub mod config;
mod data_dir;
mod discovery;
pub mod fabric;
#[cfg(test)]
mod fixtures;
/// Entry points of the fuzz targets in `fuzz/` (the `fuzzing` feature).
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod gossip;
mod http;
pub mod jobs;
mod leave;
mod metrics;
mod node;
pub mod reports;
pub mod resp;
pub mod search;
pub mod sse;
pub mod store;
mod time;

pub use config::{Cli, CliCommand, Config, ConfigError, LogFormat, ServeArgs};
pub use node::{init_tracing, run, shutdown_signal, Node};
