//! The lab: Switchyard's whole topology on one machine, on loopback
//! addresses, with real processes, a demo service whose stores replicate
//! across regions, links that can be degraded or cut, and an open-loop load
//! generator — and the drills that break it on purpose and report what users
//! felt.
#![forbid(unsafe_code)]

pub mod admin;
pub mod catalog;
pub mod drill;
pub mod http;
pub mod inbox;
pub mod lab;
pub mod link;
pub mod load;
pub mod procs;
pub mod resolve;
pub mod rollout_spec;
pub mod scenario;
pub mod store;
pub mod topology;

pub use lab::Lab;
pub use topology::Topology;
