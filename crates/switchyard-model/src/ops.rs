//! Operations: everything a person, a playbook, a rollout or a drill can do to
//! the controls, as one type applied in one place.
//!
//! The API deserializes an [`Op`], the playbooks emit them, the CLI and the lab
//! send them, and the audit log records them typed with their [`Actor`]. So a
//! shift means the same thing whoever asks for it, and a drill's score counts
//! typed entries instead of parsing the words a handler happened to log.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{Check, CheckOutcome};
use crate::config::Config;
use crate::controls::{Controls, Fault, RegionState, ZoneControl};

/// One change to the controls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Zonal shift: the zone serves none of the service's traffic until the
    /// lease runs out (or it is ended), even if the control plane is gone.
    Shift {
        service: String,
        zone: String,
        /// How long, as people write it: `90s`, `30m`, `1h`, `2h30m`, `3d`.
        #[serde(rename = "for", with = "human_duration")]
        for_: Duration,
    },
    /// Ends a zonal shift.
    Unshift { service: String, zone: String },
    /// A shifted zone takes back `percent` of its traffic as a canary,
    /// under the same lease: the step between a shift and its end, so real
    /// requests (not only heartbeats) show whether the zone is healthy
    /// before all of them go back.
    ZoneCanary {
        service: String,
        zone: String,
        percent: f64,
    },
    /// Writes answer 503 while reads keep working, for the whole service or
    /// one region of it.
    ReadOnly {
        service: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        on: bool,
    },
    /// Moves the service to one region: every other region of its preference
    /// goes out, so their edges forward there.
    Failover { service: String, to: String },
    /// Every region of the service back in, at full weight, no failover mode.
    Failback { service: String },
    /// Misrouted requests are served locally in these regions instead of
    /// being forwarded home (a cut between regions).
    FailoverMode {
        service: String,
        regions: Vec<String>,
        on: bool,
    },
    /// The share of its traffic a region keeps (a gradual evacuation); 0 is out.
    RegionWeight {
        service: String,
        region: String,
        weight: f64,
    },
    /// A region back in at full weight.
    RegionBack { service: String, region: String },
    /// 0 sheds only above the limits, 1 every sheddable request, 2 normal too.
    ShedLevel { service: String, level: u8 },
    /// A fault for drills.
    InjectFault { fault: Fault },
    /// Removes every fault of one service, or every fault when absent.
    ClearFaults {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    /// The whole controls document at once (admin only).
    Replace { controls: Controls },
}

/// The largest canary share: beyond half, a canary is a failback.
pub const MAX_CANARY_PERCENT: f64 = 50.0;

/// The longest lease anything may ask for (a shift, a silence): a year and
/// a day. The safety rules hold shifts to a much shorter `max_shift_ms`;
/// this bound is for values no rule was written to think about.
pub const LONGEST_LEASE: Duration = Duration::from_secs(366 * 86_400);

/// Why an operation cannot be applied to the controls it was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    /// The operation itself is wrong (a zero duration, a weight out of range).
    #[error("{0}")]
    Invalid(String),
    /// It names a service, zone or region that does not exist, or a state
    /// that is not there (ending a shift that was never made).
    #[error("{0}")]
    NotFound(String),
}

/// The place an operation changes, for verification and incident timelines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place<'a> {
    Service,
    Zone(&'a str),
    Region(&'a str),
    Regions(&'a [String]),
    /// Possibly every service (a whole controls document, faults of all services).
    Everything,
}

/// What an operation touches: a service (when one) and a place inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpScope<'a> {
    pub service: Option<&'a str>,
    pub place: Place<'a>,
}

/// What applying needs besides the controls: the topology, the clock (a
/// shift's lease starts now) and the words a zonal shift carries to the edges.
pub struct ApplyContext<'a> {
    pub config: &'a Config,
    pub now_ms: u64,
    pub reason: &'a str,
}

impl Op {
    /// The service it changes; `None` for a whole document or every fault.
    pub fn service(&self) -> Option<&str> {
        self.scope().service
    }

    pub fn scope(&self) -> OpScope<'_> {
        use Op::*;
        let (service, place) = match self {
            Shift { service, zone, .. }
            | Unshift { service, zone }
            | ZoneCanary { service, zone, .. } => (Some(service.as_str()), Place::Zone(zone)),
            ReadOnly {
                service,
                region: Some(r),
                ..
            }
            | RegionWeight {
                service, region: r, ..
            }
            | RegionBack { service, region: r } => (Some(service.as_str()), Place::Region(r)),
            Failover { service, .. } | Failback { service } => {
                (Some(service.as_str()), Place::Service)
            }
            ReadOnly { service, .. } | ShedLevel { service, .. } => {
                (Some(service.as_str()), Place::Service)
            }
            FailoverMode {
                service, regions, ..
            } => (Some(service.as_str()), Place::Regions(regions)),
            InjectFault { fault } => (
                Some(fault.service.as_str()),
                fault.zone.as_deref().map_or(Place::Service, Place::Zone),
            ),
            ClearFaults { service } => (service.as_deref(), Place::Service),
            Replace { .. } => (None, Place::Everything),
        };
        OpScope {
            service,
            place: if service.is_none() {
                Place::Everything
            } else {
                place
            },
        }
    }

    /// Whether only an admin token may ask for it (the whole document at
    /// once); every other operation needs `operate`, and the safety rules
    /// judge it whoever asks.
    pub fn needs_admin(&self) -> bool {
        matches!(self, Op::Replace { .. })
    }

    /// Applies it to `c`, or says why it cannot be; `c` is unchanged on error.
    /// Checks every name against the topology, so a refused operation names
    /// what it did not find.
    pub fn apply(&self, ctx: &ApplyContext<'_>, c: &mut Controls) -> Result<(), OpError> {
        self.check(ctx.config, c)?;
        use Op::*;
        match self {
            Shift {
                service,
                zone,
                for_,
            } => {
                let until = crate::time::after(ctx.now_ms, *for_).ok_or_else(|| {
                    OpError::Invalid(format!(
                        "for: {} from now is past the end of time",
                        human_duration::format(*for_)
                    ))
                })?;
                c.services.entry(service.clone()).or_default().zones.insert(
                    zone.clone(),
                    ZoneControl {
                        weight: 0.0,
                        expires_at_ms: Some(until),
                        reason: Some(ctx.reason.to_string()),
                    },
                );
            }
            Unshift { service, zone } => {
                if let Some(sc) = c.services.get_mut(service) {
                    sc.zones.remove(zone);
                }
            }
            ZoneCanary {
                service,
                zone,
                percent,
            } => {
                if let Some(z) = c
                    .services
                    .get_mut(service)
                    .and_then(|sc| sc.zones.get_mut(zone))
                {
                    z.weight = percent / 100.0;
                    z.reason = Some(ctx.reason.to_string());
                }
            }
            ReadOnly {
                service,
                region,
                on,
            } => {
                let sc = c.services.entry(service.clone()).or_default();
                match region {
                    Some(r) => sc.regions.entry(r.clone()).or_default().read_only = *on,
                    None => sc.read_only = *on,
                }
            }
            Failover { service, to } => {
                let svc = ctx.config.service(service).expect("checked");
                let sc = c.services.entry(service.clone()).or_default();
                for r in &svc.region_preference {
                    sc.regions.entry(r.clone()).or_default().state = if r == to {
                        RegionState::In
                    } else {
                        RegionState::Out
                    };
                }
            }
            Failback { service } => {
                if let Some(sc) = c.services.get_mut(service) {
                    sc.regions.clear();
                }
            }
            FailoverMode {
                service,
                regions,
                on,
            } => {
                let sc = c.services.entry(service.clone()).or_default();
                for r in regions {
                    sc.regions.entry(r.clone()).or_default().failover = *on;
                }
            }
            RegionWeight {
                service,
                region,
                weight,
            } => {
                let rc = c
                    .services
                    .entry(service.clone())
                    .or_default()
                    .regions
                    .entry(region.clone())
                    .or_default();
                rc.weight = *weight;
                rc.state = if *weight <= 0.0 {
                    RegionState::Out
                } else {
                    RegionState::In
                };
            }
            RegionBack { service, region } => {
                if let Some(rc) = c
                    .services
                    .get_mut(service)
                    .and_then(|sc| sc.regions.get_mut(region))
                {
                    rc.state = RegionState::In;
                    rc.weight = 1.0;
                }
            }
            ShedLevel { service, level } => {
                c.services.entry(service.clone()).or_default().shed_level = *level;
            }
            InjectFault { fault } => c.faults.push(fault.clone()),
            ClearFaults { service } => match service {
                Some(s) => c.faults.retain(|f| &f.service != s),
                None => c.faults.clear(),
            },
            Replace { controls } => {
                let version = c.version;
                *c = controls.clone();
                c.version = version;
            }
        }
        Ok(())
    }

    /// Names and values, before anything changes.
    fn check(&self, config: &Config, c: &Controls) -> Result<(), OpError> {
        let service = |s: &str| {
            config
                .service(s)
                .ok_or_else(|| OpError::NotFound(format!("unknown service {s:?}")))
        };
        let zone = |z: &str| {
            config
                .zone(z)
                .map(|_| ())
                .ok_or_else(|| OpError::NotFound(format!("unknown zone {z:?}")))
        };
        let region = |r: &str| {
            config
                .region(r)
                .map(|_| ())
                .ok_or_else(|| OpError::NotFound(format!("unknown region {r:?}")))
        };
        use Op::*;
        match self {
            Shift {
                service: s,
                zone: z,
                for_,
            } => {
                service(s)?;
                zone(z)?;
                if for_.is_zero() {
                    return Err(OpError::Invalid("for: must be longer than 0s".into()));
                }
                if *for_ > LONGEST_LEASE {
                    return Err(OpError::Invalid(format!(
                        "for: {} is longer than any lease may be (at most {})",
                        human_duration::format(*for_),
                        human_duration::format(LONGEST_LEASE)
                    )));
                }
            }
            Unshift {
                service: s,
                zone: z,
            } => {
                service(s)?;
                zone(z)?;
                if !c.service(s).is_some_and(|sc| sc.zones.contains_key(z)) {
                    return Err(OpError::NotFound(format!(
                        "zone {z:?} is not shifted for service {s:?}"
                    )));
                }
            }
            ZoneCanary {
                service: s,
                zone: z,
                percent,
            } => {
                service(s)?;
                zone(z)?;
                if !(percent.is_finite() && *percent > 0.0 && *percent <= MAX_CANARY_PERCENT) {
                    return Err(OpError::Invalid(format!(
                        "percent: must be above 0 and at most {MAX_CANARY_PERCENT}, got {percent}"
                    )));
                }
                let shifted = c
                    .service(s)
                    .and_then(|sc| sc.zones.get(z))
                    .is_some_and(|zc| zc.weight < 1.0);
                if !shifted {
                    return Err(OpError::NotFound(format!(
                        "zone {z:?} is not shifted for service {s:?}: a canary is a step out of a shift"
                    )));
                }
            }
            ReadOnly {
                service: s,
                region: r,
                ..
            } => {
                service(s)?;
                if let Some(r) = r {
                    region(r)?;
                }
            }
            Failover { service: s, to } => {
                if !service(s)?.region_preference.contains(to) {
                    return Err(OpError::NotFound(format!(
                        "region {to:?} does not serve {s:?}"
                    )));
                }
            }
            Failback { service: s } | ShedLevel { service: s, .. } => {
                service(s)?;
            }
            FailoverMode {
                service: s,
                regions,
                ..
            } => {
                service(s)?;
                for r in regions {
                    region(r)?;
                }
            }
            RegionWeight {
                service: s,
                region: r,
                weight,
            } => {
                service(s)?;
                region(r)?;
                if !(weight.is_finite() && (0.0..=1.0).contains(weight)) {
                    return Err(OpError::Invalid(format!(
                        "weight: must be between 0 and 1, got {weight}"
                    )));
                }
            }
            RegionBack {
                service: s,
                region: r,
            } => {
                service(s)?;
                region(r)?;
            }
            InjectFault { fault } => {
                service(&fault.service)?;
            }
            ClearFaults { service: s } => {
                if let Some(s) = s {
                    service(s)?;
                }
            }
            Replace { .. } => {}
        }
        if let ShedLevel { level, .. } = self {
            if *level > 2 {
                return Err(OpError::Invalid(format!(
                    "level: must be 0, 1 or 2, got {level}"
                )));
            }
        }
        Ok(())
    }

    /// What it does, in words, for the audit log and people.
    pub fn describe(&self) -> String {
        use Op::*;
        match self {
            Shift {
                service,
                zone,
                for_,
            } => format!(
                "shift {service} away from zone {zone} for {}",
                human_duration::format(*for_)
            ),
            Unshift { service, zone } => {
                format!("end the shift of {service} away from zone {zone}")
            }
            ZoneCanary {
                service,
                zone,
                percent,
            } => format!("send {percent} % of {service}'s traffic in zone {zone} back as a canary"),
            ReadOnly {
                service,
                region,
                on,
            } => format!(
                "read-only mode {} for {service}{}",
                on_off(*on),
                region
                    .as_ref()
                    .map(|r| format!(" in {r}"))
                    .unwrap_or_default()
            ),
            Failover { service, to } => format!("fail {service} over to {to}"),
            Failback { service } => format!("fail {service} back: every region in"),
            FailoverMode {
                service,
                regions,
                on,
            } => format!(
                "failover mode {} for {service} in {}",
                on_off(*on),
                regions.join(", ")
            ),
            RegionWeight {
                service,
                region,
                weight,
            } => format!(
                "region {region} of {service} weight {weight:.2}{}",
                if *weight <= 0.0 { " (out)" } else { "" }
            ),
            RegionBack { service, region } => format!("region {region} of {service} back in"),
            ShedLevel { service, level } => format!("shed level {level} for {service}"),
            InjectFault { fault } => format!(
                "inject fault {}",
                serde_json::to_string(fault).expect("a fault serializes")
            ),
            ClearFaults { service: None } => "clear faults".into(),
            ClearFaults { service: Some(s) } => format!("clear the faults of {s}"),
            Replace { .. } => "replace controls".into(),
        }
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Who made a change. People are known by their token's name; automation by
/// what it is and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", from = "ActorRepr")]
pub enum Actor {
    Person {
        name: String,
    },
    Playbook {
        name: String,
    },
    Rollout {
        id: String,
    },
    /// A drill acting through a person's token, named by its scenario.
    Drill {
        name: String,
        token: String,
    },
}

/// Audit entries written before actors were typed carry a plain `who`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ActorRepr {
    Typed(ActorTagged),
    Legacy(String),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ActorTagged {
    Person { name: String },
    Playbook { name: String },
    Rollout { id: String },
    Drill { name: String, token: String },
}

impl From<ActorRepr> for Actor {
    fn from(r: ActorRepr) -> Actor {
        match r {
            ActorRepr::Typed(ActorTagged::Person { name }) => Actor::Person { name },
            ActorRepr::Typed(ActorTagged::Playbook { name }) => Actor::Playbook { name },
            ActorRepr::Typed(ActorTagged::Rollout { id }) => Actor::Rollout { id },
            ActorRepr::Typed(ActorTagged::Drill { name, token }) => Actor::Drill { name, token },
            ActorRepr::Legacy(s) if s == "playbook" => Actor::Playbook { name: s },
            ActorRepr::Legacy(name) => Actor::Person { name },
        }
    }
}

impl Actor {
    pub fn person(name: impl Into<String>) -> Actor {
        Actor::Person { name: name.into() }
    }

    pub fn playbook(name: impl Into<String>) -> Actor {
        Actor::Playbook { name: name.into() }
    }

    /// `person`, `playbook`, `rollout` or `drill`: a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Person { .. } => "person",
            Actor::Playbook { .. } => "playbook",
            Actor::Rollout { .. } => "rollout",
            Actor::Drill { .. } => "drill",
        }
    }

    pub fn is_playbook(&self) -> bool {
        matches!(self, Actor::Playbook { .. })
    }

    /// What a zonal shift carries to the edges as its reason: a person's own
    /// words, automation's prefixed with what it is.
    pub fn label(&self, reason: &str) -> String {
        match self {
            Actor::Person { .. } => reason.to_string(),
            other => format!("{}: {reason}", other.kind()),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Person { name } => write!(f, "{name}"),
            Actor::Playbook { name } if name == "playbook" => write!(f, "playbook"),
            Actor::Playbook { name } => write!(f, "playbook {name}"),
            Actor::Rollout { id } => write!(f, "rollout {id}"),
            Actor::Drill { name, token } => write!(f, "drill {name} ({token})"),
        }
    }
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A change, accepted or refused by a rule.
    #[default]
    Change,
    /// A playbook in `recommend` mode: what it would have done.
    Recommendation,
    /// A playbook's check, some seconds after acting, that its change helped.
    Verification,
    /// A DNS server's push to an outside zone that sent changes or failed:
    /// the record changes the controls caused there.
    DnsPush,
    /// A step of a staged config rollout: a wave going out, its verdict
    /// with the numbers, a rollback, a person's pause, resume or abort.
    Rollout,
}

/// One line of the audit log: every change, accepted or refused, with who
/// asked, what (typed), why, and the rule that refused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    #[serde(alias = "who")]
    pub actor: Actor,
    #[serde(default)]
    pub kind: AuditKind,
    /// The operation; absent only in entries written before operations were typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    /// The operation in words: `shift catalog away from zone us-east-a for 1h`.
    pub action: String,
    pub reason: String,
    pub accepted: bool,
    /// The rules that refused it, comma-separated, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The controls version this change produced, when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default)]
    pub detail: serde_json::Value,
    /// A verification's measurement and verdict; absent in other entries and
    /// in verifications written before checks were typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

/// An audit entry with its position in the log: the sequence number the
/// store gave it, ascending in commit order. History pages and backups
/// carry it, so a reader can continue after the last one it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub entry: AuditEntry,
}

impl AuditEntry {
    /// An entry that changes nothing: what automation would do
    /// (recommendation) or whether what it did helped (verification). Not
    /// accepted, no rule, no detail until the caller says otherwise.
    pub fn note(at_ms: u64, actor: Actor, kind: AuditKind, op: Op, reason: String) -> AuditEntry {
        let prefix = match kind {
            AuditKind::Change => "",
            AuditKind::Recommendation => "recommend: ",
            AuditKind::Verification => "verify: ",
            AuditKind::DnsPush => "dns push: ",
            AuditKind::Rollout => "rollout: ",
        };
        AuditEntry {
            at_ms,
            actor,
            kind,
            action: format!("{prefix}{}", op.describe()),
            op: Some(op),
            reason,
            accepted: false,
            rule: None,
            version: None,
            detail: serde_json::Value::Null,
            check: None,
        }
    }

    /// A verification's verdict: its typed check, or for entries written
    /// before checks were typed, whether it was accepted (that is how they
    /// said "helped"). `None` for entries that are not verifications.
    pub fn check_outcome(&self) -> Option<CheckOutcome> {
        if self.kind != AuditKind::Verification {
            return None;
        }
        Some(match &self.check {
            Some(c) => c.outcome,
            None if self.accepted => CheckOutcome::Passed,
            None => CheckOutcome::Failed,
        })
    }

    /// An accepted change whose operation matches `f`.
    pub fn accepted_change(&self, f: impl Fn(&Op) -> bool) -> bool {
        self.accepted && self.kind == AuditKind::Change && self.op.as_ref().is_some_and(f)
    }
}

/// `90s`, `30m`, `1h`, `2h30m`, `3d` — durations as people write them, parsed
/// by `humantime` rather than by hand.
pub mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<Duration, String> {
        let d = humantime::parse_duration(s.trim())
            .map_err(|e| format!("not a duration: {s:?} ({e}; use 90s, 30m, 1h, 2h30m, 3d)"))?;
        if d.is_zero() {
            return Err(format!("not a duration: {s:?} (must be longer than 0s)"));
        }
        Ok(d)
    }

    pub fn format(d: Duration) -> String {
        humantime::format_duration(d).to_string().replace(' ', "")
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = include_str!("../../../examples/switchyard.toml");

    fn config() -> Config {
        Config::from_toml(CONFIG, |_| Some("token".into())).expect("the example config is valid")
    }

    fn ctx(config: &Config) -> ApplyContext<'_> {
        ApplyContext {
            config,
            now_ms: 1_000,
            reason: "because",
        }
    }

    #[test]
    fn operations_read_and_write_as_tagged_json() {
        let op: Op = serde_json::from_str(
            r#"{"op":"shift","service":"catalog","zone":"us-east-a","for":"2h30m"}"#,
        )
        .unwrap();
        assert_eq!(
            op,
            Op::Shift {
                service: "catalog".into(),
                zone: "us-east-a".into(),
                for_: Duration::from_secs(9000)
            }
        );
        let back = serde_json::to_value(&op).unwrap();
        assert_eq!(back["for"], "2h30m");
        let again: Op = serde_json::from_value(back).unwrap();
        assert_eq!(again, op);
        let err = serde_json::from_str::<Op>(
            r#"{"op":"unshift","service":"catalog","zone":"us-east-a","extra":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        let err = serde_json::from_str::<Op>(r#"{"op":"teleport"}"#).unwrap_err();
        assert!(err.to_string().contains("teleport"), "{err}");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        use human_duration::parse;
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse("3d").unwrap(), Duration::from_secs(259_200));
        for bad in ["", "1", "h", "1x", "0s", "-5m"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human_duration::format(Duration::from_secs(1800)), "30m");
    }

    #[test]
    fn a_shift_is_a_lease_that_carries_its_reason() {
        let cfg = config();
        let mut c = Controls::default();
        Op::Shift {
            service: "catalog".into(),
            zone: "us-east-a".into(),
            for_: Duration::from_secs(60),
        }
        .apply(&ctx(&cfg), &mut c)
        .unwrap();
        let z = &c.services["catalog"].zones["us-east-a"];
        assert_eq!(z.weight, 0.0);
        assert_eq!(z.expires_at_ms, Some(61_000));
        assert_eq!(z.reason.as_deref(), Some("because"));
        Op::Unshift {
            service: "catalog".into(),
            zone: "us-east-a".into(),
        }
        .apply(&ctx(&cfg), &mut c)
        .unwrap();
        assert!(c.services["catalog"].zones.is_empty());
    }

    #[test]
    fn an_absurd_lease_is_refused_naming_for_instead_of_wrapping() {
        let cfg = config();
        let mut c = Controls::default();
        let op: Op = serde_json::from_str(
            r#"{"op":"shift","service":"catalog","zone":"us-east-a","for":"2305843009213697552s"}"#,
        )
        .unwrap();
        let e = op.apply(&ctx(&cfg), &mut c).unwrap_err();
        assert!(matches!(e, OpError::Invalid(_)), "{e:?}");
        assert!(e.to_string().starts_with("for: "), "{e}");
        assert_eq!(c, Controls::default());
    }

    #[test]
    fn a_canary_takes_a_share_back_under_the_same_lease() {
        let cfg = config();
        let mut c = Controls::default();
        let canary = |percent: f64| Op::ZoneCanary {
            service: "catalog".into(),
            zone: "us-east-a".into(),
            percent,
        };
        // Only a shifted zone can have a canary: there is nothing to step out of.
        let e = canary(5.0).apply(&ctx(&cfg), &mut c).unwrap_err();
        assert!(e.to_string().contains("is not shifted"), "{e}");
        assert_eq!(c, Controls::default());
        Op::Shift {
            service: "catalog".into(),
            zone: "us-east-a".into(),
            for_: Duration::from_secs(60),
        }
        .apply(&ctx(&cfg), &mut c)
        .unwrap();
        for bad in [0.0, -1.0, 51.0, f64::NAN] {
            let before = c.clone();
            let e = canary(bad).apply(&ctx(&cfg), &mut c).unwrap_err();
            assert!(e.to_string().contains("percent"), "{bad}: {e}");
            assert_eq!(c, before);
        }
        let later = ApplyContext {
            config: &cfg,
            now_ms: 30_000,
            reason: "canary",
        };
        canary(5.0).apply(&later, &mut c).unwrap();
        let z = &c.services["catalog"].zones["us-east-a"];
        assert_eq!(z.weight, 0.05);
        assert_eq!(z.expires_at_ms, Some(61_000), "the lease is not renewed");
        assert_eq!(z.reason.as_deref(), Some("canary"));
        let json = serde_json::to_value(canary(5.0)).unwrap();
        assert_eq!(json["op"], "zone_canary");
    }

    #[test]
    fn unknown_names_and_missing_state_are_refused_and_change_nothing() {
        let cfg = config();
        let mut c = Controls::default();
        let cases = [
            (
                Op::Shift {
                    service: "nope".into(),
                    zone: "us-east-a".into(),
                    for_: Duration::from_secs(1),
                },
                "unknown service \"nope\"",
            ),
            (
                Op::Shift {
                    service: "catalog".into(),
                    zone: "mars-a".into(),
                    for_: Duration::from_secs(1),
                },
                "unknown zone \"mars-a\"",
            ),
            (
                Op::Unshift {
                    service: "catalog".into(),
                    zone: "us-east-a".into(),
                },
                "is not shifted",
            ),
            (
                Op::Failover {
                    service: "catalog".into(),
                    to: "mars".into(),
                },
                "does not serve",
            ),
            (
                Op::RegionWeight {
                    service: "catalog".into(),
                    region: "us-east".into(),
                    weight: 1.5,
                },
                "weight",
            ),
        ];
        for (op, want) in cases {
            let e = op.apply(&ctx(&cfg), &mut c).unwrap_err();
            assert!(e.to_string().contains(want), "{op}: {e}");
            assert_eq!(c, Controls::default(), "{op} changed the controls");
        }
    }

    #[test]
    fn failover_takes_every_other_region_out_and_failback_brings_them_in() {
        let cfg = config();
        let mut c = Controls::default();
        let svc = cfg.service("catalog").unwrap();
        let to = svc.region_preference[1].clone();
        Op::Failover {
            service: "catalog".into(),
            to: to.clone(),
        }
        .apply(&ctx(&cfg), &mut c)
        .unwrap();
        for r in &svc.region_preference {
            let want = if *r == to {
                RegionState::In
            } else {
                RegionState::Out
            };
            assert_eq!(c.services["catalog"].regions[r].state, want, "{r}");
        }
        Op::Failback {
            service: "catalog".into(),
        }
        .apply(&ctx(&cfg), &mut c)
        .unwrap();
        assert!(c.services["catalog"].regions.is_empty());
    }

    #[test]
    fn actors_from_before_they_were_typed_still_read() {
        let a: Actor = serde_json::from_str(r#""playbook""#).unwrap();
        assert!(a.is_playbook());
        let a: Actor = serde_json::from_str(r#""ops-oncall""#).unwrap();
        assert_eq!(a, Actor::person("ops-oncall"));
        let a: Actor =
            serde_json::from_str(r#"{"kind":"drill","name":"zone-gray","token":"lab"}"#).unwrap();
        assert_eq!(a.kind(), "drill");
        let e: AuditEntry = serde_json::from_str(
            r#"{"at_ms":1,"who":"playbook","action":"x","reason":"y","accepted":true}"#,
        )
        .unwrap();
        assert!(e.actor.is_playbook() && e.op.is_none());
    }

    #[test]
    fn verifications_say_passed_or_failed_typed_and_old_ones_still_read() {
        let old: AuditEntry = serde_json::from_str(
            r#"{"at_ms":1,"actor":{"kind":"playbook","name":"zone-shift"},"kind":"verification",
                "action":"verify: x","reason":"errors","accepted":false,"rule":"not-verified"}"#,
        )
        .unwrap();
        assert!(old.check.is_none());
        assert_eq!(old.check_outcome(), Some(CheckOutcome::Failed));
        let op = Op::ShedLevel {
            service: "catalog".into(),
            level: 1,
        };
        let mut e = AuditEntry::note(
            2,
            Actor::playbook("zone-shift"),
            AuditKind::Verification,
            op.clone(),
            "why".into(),
        );
        e.check = Some(Check {
            outcome: CheckOutcome::Inconclusive,
            users: crate::check::Users::All,
            before: Default::default(),
            after: Default::default(),
            slow_p99_ms: None,
            why: "no requests".into(),
        });
        let back: AuditEntry = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.check_outcome(), Some(CheckOutcome::Inconclusive));
        let change = AuditEntry::note(3, Actor::person("ana"), AuditKind::Change, op, "".into());
        assert_eq!(change.check_outcome(), None);
        assert!(!serde_json::to_string(&change).unwrap().contains("check"));
    }
}
