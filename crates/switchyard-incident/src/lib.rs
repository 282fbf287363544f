//! Incidents: findings and actions grouped into incidents with a timeline the
//! system fills in, severity by documented rules, a status lifecycle,
//! postmortems written from what was recorded, checks of every mitigation
//! against what its users saw, SLA arithmetic and the status feed.
#![forbid(unsafe_code)]
pub mod evidence;
pub mod sla;

pub use switchyard_model::incident;
pub mod postmortem;
pub mod tracker;

pub use incident::{Incident, Severity, Stage, Status};
pub use tracker::{Judged, Notice, Tracker, TrackerConfig};
