//! The values that flow through notification: what an incident says about
//! itself ([`Notice`]), who asked for quiet ([`Silence`]), and what happened
//! when we tried to tell someone ([`Attempt`], [`Delivery`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How bad an incident is. SEV1 is the most severe.
///
/// The ordering follows severity, not the digit: `Sev1 > Sev2`, so "at least
/// SEV2" reads as `sev >= Severity::Sev2` and a route's `min_severity`
/// comparison cannot be written backwards by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Sev1,
    Sev2,
    Sev3,
    Sev4,
}

impl Severity {
    /// Most severe first.
    pub const ALL: [Severity; 4] = [
        Severity::Sev1,
        Severity::Sev2,
        Severity::Sev3,
        Severity::Sev4,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Sev1 => "SEV1",
            Severity::Sev2 => "SEV2",
            Severity::Sev3 => "SEV3",
            Severity::Sev4 => "SEV4",
        }
    }

    /// 1 for SEV1 … 4 for SEV4.
    pub fn number(self) -> u8 {
        match self {
            Severity::Sev1 => 1,
            Severity::Sev2 => 2,
            Severity::Sev3 => 3,
            Severity::Sev4 => 4,
        }
    }

    /// One level worse (SEV1 stays).
    pub fn raised(self) -> Severity {
        match self {
            Severity::Sev1 | Severity::Sev2 => Severity::Sev1,
            Severity::Sev3 => Severity::Sev2,
            Severity::Sev4 => Severity::Sev3,
        }
    }

    /// As people type it, in any letter case; the error names the text.
    pub fn parse(s: &str) -> Result<Severity, ParseSeverityError> {
        s.parse()
    }

    /// True when `self` is as severe as `min` or more.
    pub fn is_at_least(self, min: Severity) -> bool {
        self >= min
    }
}

impl Ord for Severity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // A smaller number is a worse incident, so the order is reversed.
        other.number().cmp(&self.number())
    }
}

impl PartialOrd for Severity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not one of SEV1..SEV4.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a severity (SEV1, SEV2, SEV3, SEV4)")]
pub struct ParseSeverityError(pub String);

impl FromStr for Severity {
    type Err = ParseSeverityError;

    /// Accepts `SEV1`..`SEV4` in any letter case, since people type config by
    /// hand and `sev2` can only mean one thing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseSeverityError(s.to_string()))
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One thing an incident has to say: it opened, changed status or severity,
/// or resolved. Carries the incident's whole current state so any single
/// notice is enough to render a complete message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub incident_id: String,
    pub service: String,
    pub severity: Severity,
    pub status: String,
    pub title: String,
    pub summary: String,
    pub scopes: Vec<String>,
    /// What happened, e.g. `opened`, `status: mitigating`, `resolved`.
    pub event: String,
    /// When the event happened (unix ms).
    pub at_ms: u64,
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// Where a person can read more (the incident page), if anywhere.
    pub url: Option<String>,
    /// Tell people now: not held for the group interval. An escalation (an
    /// action that did not help) is; routine updates are not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
    /// A person has acknowledged the incident: a pager that tracks state
    /// (PagerDuty) stops paging, while updates still go out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acknowledged: bool,
}

/// A request for quiet: notices that match every matcher given are not sent
/// to anyone until `until_ms`. A silence with no matchers silences everything,
/// which is what a maintenance window over the whole system needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    /// Exact service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Exact severity (a SEV3 silence does not hide a SEV1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Matches when any of the notice's scopes starts with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_prefix: Option<String>,
    /// Unix ms; from this instant on the silence no longer applies.
    pub until_ms: u64,
    pub reason: String,
    pub created_by: String,
}

impl Silence {
    /// Still in force at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms
    }

    /// Every matcher that is set agrees with the notice (expiry not checked).
    pub fn matches(&self, notice: &Notice) -> bool {
        let service = self.service.as_ref().is_none_or(|s| *s == notice.service);
        let severity = self.severity.is_none_or(|s| s == notice.severity);
        let scope = self
            .scope_prefix
            .as_ref()
            .is_none_or(|p| notice.scopes.iter().any(|s| s.starts_with(p.as_str())));
        service && severity && scope
    }
}

/// One try at handing a message to one receiver. The control plane writes
/// each of these into the incident's timeline as it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub receiver: String,
    /// `webhook`, `slack` or `alertmanager`.
    pub kind: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// When the try started (unix ms).
    pub at_ms: u64,
    /// The receiver answered 2xx.
    pub ok: bool,
    /// The HTTP status, when the receiver answered at all.
    pub status: Option<u16>,
    /// Why it failed, and whether it will be retried.
    pub error: Option<String>,
    pub duration_ms: u64,
    /// When the next try will start (unix ms); `None` when there will be none.
    pub next_retry_ms: Option<u64>,
}

/// The outcome of one message for one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub receiver: String,
    pub delivered: bool,
    pub attempts: Vec<Attempt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sev1_is_the_most_severe() {
        assert!(Severity::Sev1 > Severity::Sev2);
        assert!(Severity::Sev4 < Severity::Sev3);
        assert!(Severity::Sev1.is_at_least(Severity::Sev2));
        assert!(Severity::Sev2.is_at_least(Severity::Sev2));
        assert!(!Severity::Sev3.is_at_least(Severity::Sev2));
        let mut all = vec![
            Severity::Sev3,
            Severity::Sev1,
            Severity::Sev4,
            Severity::Sev2,
        ];
        all.sort();
        assert_eq!(
            all,
            [
                Severity::Sev4,
                Severity::Sev3,
                Severity::Sev2,
                Severity::Sev1
            ]
        );
    }

    #[test]
    fn severity_text_round_trips() {
        assert_eq!(serde_json::to_string(&Severity::Sev2).unwrap(), "\"SEV2\"");
        let s: Severity = serde_json::from_str("\"SEV3\"").unwrap();
        assert_eq!(s, Severity::Sev3);
        assert_eq!("sev1".parse::<Severity>().unwrap(), Severity::Sev1);
        let err = "SEV5".parse::<Severity>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"SEV5\" is not a severity (SEV1, SEV2, SEV3, SEV4)"
        );
        assert!(serde_json::from_str::<Severity>("\"high\"").is_err());
    }

    fn notice() -> Notice {
        Notice {
            incident_id: "inc-1".into(),
            service: "catalog".into(),
            severity: Severity::Sev2,
            status: "investigating".into(),
            title: "t".into(),
            summary: "s".into(),
            scopes: vec!["zone:eu/eu-1a".into()],
            event: "opened".into(),
            at_ms: 10,
            started_at_ms: 10,
            ended_at_ms: None,
            url: None,
            urgent: false,
            acknowledged: false,
        }
    }

    #[test]
    fn silence_matchers_must_all_agree() {
        let mut s = Silence {
            id: "x".into(),
            service: None,
            severity: None,
            scope_prefix: None,
            until_ms: 100,
            reason: "r".into(),
            created_by: "me".into(),
        };
        assert!(s.matches(&notice()), "no matchers match everything");
        s.service = Some("catalog".into());
        s.scope_prefix = Some("zone:eu/".into());
        assert!(s.matches(&notice()));
        s.severity = Some(Severity::Sev1);
        assert!(!s.matches(&notice()), "severity is exact");
        s.severity = None;
        s.scope_prefix = Some("region:us".into());
        assert!(!s.matches(&notice()));
        assert!(s.is_active(99));
        assert!(!s.is_active(100));
    }
}
