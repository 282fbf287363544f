//! The drill report: the JSON contract that tools and tests rely on (see the
//! design's "Drill report contract"), and its rendering for people.
#![forbid(unsafe_code)]

pub mod types;

pub use types::*;
