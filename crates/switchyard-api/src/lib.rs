//! The control plane's API as a contract both sides compile against: the
//! request and answer types of every endpoint ([`types`]), a typed async
//! client ([`Client`]) that the CLI, the lab, the console and the tests use,
//! and the watch-stream subscriber ([`watch`]) with last-known-good state on
//! disk ([`lkg`]) that edges and DNS servers follow.
//!
//! It depends on the model only, so a data-plane process can follow the
//! control plane without linking the control plane.
#![forbid(unsafe_code)]

pub mod client;
pub mod configs;
pub mod dns;
pub mod edge;
pub mod live;
pub mod lkg;
pub mod rollout;
pub mod signals;
pub mod tls;
pub mod types;
pub mod watch;

pub use client::{Client, ClientError};
pub use types::*;
