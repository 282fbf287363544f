//! Detection: from what callers observe to findings that name the failing
//! instance, zone, region or link, with the evidence. Pure and deterministic:
//! windows of per-second signals in, findings out, time passed in by the
//! caller, no I/O — so every detector can be replayed on recorded traces and
//! scored.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod canary;
pub mod corpus;
pub mod engine;
pub mod evidence;
pub mod expr;
mod keys;
pub mod score;
pub mod slo;
pub mod stats;
pub mod synth;
pub mod trace;
pub mod trend;

pub use engine::{DetectConfig, Engine, Event, Finding};
pub use expr::Expr;
