//! The control plane: holds the controls every edge obeys, checks each change
//! against the safety rules, records who changed what and why, and pushes the
//! result to every edge over a watch stream. Its store is a local SQLite file
//! by default, or an existing etcd cluster when several control planes share
//! state; never a home-made consensus.
#![forbid(unsafe_code)]

pub mod adopt;
pub mod api;
pub mod api_console;
pub mod api_incidents;
pub mod api_live;
pub mod api_rollouts;
pub mod automation;
pub mod backup;
pub mod configs;
pub mod dns_preview;
pub mod forward;
pub mod incidents;
pub mod leader;
pub mod live;
pub mod metrics;
pub mod plane;
pub mod playbooks;
pub mod respond;
pub mod rollout;
pub mod rollout_run;
pub mod safety;
pub mod server;

pub mod store;
mod tls_listener;
