//! Switchyard's shared vocabulary: the topology and config (raw serde types and
//! the validated model), the controls the control plane holds and the
//! operations that change them, and the records that cross every boundary
//! (findings, incidents, notices, audit entries).
//!
//! Nothing here performs I/O: callers read files and hand over text, so every
//! rule can be unit-tested and reused by the edge, the control plane and the CLI.
#![forbid(unsafe_code)]

pub mod canary;
pub mod check;
pub mod config;
pub mod config_diff;
pub mod config_doc;
pub mod controls;
pub mod dns;
pub mod error;
pub mod finding;
pub mod incident;
pub mod notice;
pub mod ops;
pub mod rollout;
pub mod secret;
pub mod signals;
pub mod time;

pub use check::{Check, CheckOutcome, UserShare, Users};
pub use config::{
    Config, ControlSettings, ControlTables, EdgeSettings, EjectionSettings, HealthCheckSettings,
    Instance, LimitSettings, PlaybookMode, Priority, Region, Route, RouteKind, Scope, Service,
    StoreSpec, Timeouts, UpstreamProtocol, UpstreamTls, Zone,
};
pub use config_diff::{Difference, RiskKind};
pub use config_doc::{config_version, ConfigDoc};
pub use controls::{
    Backwards, CapacityMode, Controls, Fault, Origin, RegionControl, RegionState, ServiceControls,
    ZoneControl,
};
pub use error::{ConfigError, ValidationError, ValidationErrors};
pub use finding::{Alarm, Finding};
pub use ops::{Actor, AuditEntry, AuditKind, AuditRecord, Op, OpError};
