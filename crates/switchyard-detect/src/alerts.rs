//! Ingested alerts: what other monitoring already knows, turned into signals.
//!
//! Two sources:
//! - Alertmanager webhooks (payload version "4"), so existing Prometheus
//!   alerts can feed detection. Labels `switchyard_instance`,
//!   `switchyard_zone` and `switchyard_region` tie an alert to a place in
//!   the topology; without them an alert is evidence without a scope.
//! - Application heartbeats ("heartbeats on every API, not only on
//!   `/health`", DESIGN.md problem 4): a source that stops reporting is the
//!   signal, so the monitor reports who has been silent for too long.
//!
//! Parsing is done by hand over `serde_json::Value` rather than by derived
//! structs so that every error names the exact path (`alerts[1].labels:
//! missing`), and so that fields Alertmanager adds in later releases are
//! accepted silently. Timestamps are parsed here too (RFC 3339, no date
//! crate). Everything is pure: time is passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why a payload was refused. Every variant names the path of the field at
/// fault, in the payload's own spelling (`alerts[0].startsAt`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// Not JSON at all; the text is serde_json's, with line and column.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A required field is absent or `null`.
    #[error("{path}: missing")]
    Missing {
        /// Path of the field, e.g. `alerts[1].labels`.
        path: String,
    },
    /// A field has the wrong JSON type.
    #[error("{path}: expected {expected}")]
    Type {
        /// Path of the field (`$` for the document itself).
        path: String,
        /// What was expected, e.g. "a string".
        expected: &'static str,
    },
    /// A payload version other than "4".
    #[error("{path}: unsupported Alertmanager webhook version {found:?}; only \"4\" is supported")]
    Version {
        /// Always `version`.
        path: String,
        /// The version the payload announced.
        found: String,
    },
    /// A field of the right type with an unacceptable value.
    #[error("{path}: {reason}")]
    Invalid {
        /// Path of the field.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One alert from an Alertmanager webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestedAlert {
    /// `labels.alertname`.
    pub name: String,
    /// The alert's own `status` is "firing" (not the group's: a group that
    /// is firing may carry resolved alerts).
    pub firing: bool,
    /// All labels of the alert, as sent (sorted by name for determinism).
    pub labels: BTreeMap<String, String>,
    /// `startsAt` in Unix milliseconds; `None` for Go's zero time.
    pub starts_at_ms: Option<u64>,
    /// `endsAt` in Unix milliseconds; `None` when absent or Go's zero time
    /// (`0001-01-01T00:00:00Z`), which Alertmanager sends for "no end yet".
    pub ends_at_ms: Option<u64>,
    /// `instance:X`, `zone:X` or `region:X` from the `switchyard_*` labels,
    /// the most specific one winning; see [`scope_from_labels`].
    pub scope: Option<String>,
}

/// Go's zero `time.Time` (`0001-01-01T00:00:00Z`) in Unix milliseconds.
/// Alertmanager serializes unset times this way.
const GO_ZERO_TIME_MS: i64 = -62_135_596_800_000;

/// Scope of an alert from its labels: `switchyard_instance` → `instance:X`,
/// else `switchyard_zone` → `zone:X`, else `switchyard_region` →
/// `region:X`, else `None`. The most specific wins because a finding must
/// name the smallest failing place (ejecting an instance beats shifting a
/// zone). The generic Prometheus `instance` label (usually `host:port` of
/// the scrape target) is deliberately ignored: it names an exporter, not a
/// Switchyard instance. Empty values count as absent.
pub fn scope_from_labels(labels: &BTreeMap<String, String>) -> Option<String> {
    [
        ("switchyard_instance", "instance"),
        ("switchyard_zone", "zone"),
        ("switchyard_region", "region"),
    ]
    .iter()
    .find_map(|(label, kind)| {
        labels
            .get(*label)
            .filter(|v| !v.is_empty())
            .map(|v| format!("{kind}:{v}"))
    })
}

fn parse_json(json: &str) -> Result<Map<String, Value>, AlertError> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(AlertError::Type {
            path: "$".into(),
            expected: "a JSON object",
        }),
        Err(e) => Err(AlertError::Json(e.to_string())),
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A required field; JSON `null` counts as missing.
fn required<'a>(
    obj: &'a Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<&'a Value, AlertError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(AlertError::Missing {
            path: join(parent, key),
        }),
        Some(v) => Ok(v),
    }
}

/// An optional field; JSON `null` counts as absent.
fn optional<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn as_str(v: &Value, path: impl FnOnce() -> String) -> Result<&str, AlertError> {
    v.as_str().ok_or_else(|| AlertError::Type {
        path: path(),
        expected: "a string",
    })
}

fn as_object(v: &Value, path: impl FnOnce() -> String) -> Result<&Map<String, Value>, AlertError> {
    v.as_object().ok_or_else(|| AlertError::Type {
        path: path(),
        expected: "an object",
    })
}

fn as_u64(v: &Value, path: impl FnOnce() -> String) -> Result<u64, AlertError> {
    v.as_u64().ok_or_else(|| AlertError::Type {
        path: path(),
        expected: "a non-negative integer",
    })
}

/// `"firing"` → true, `"resolved"` → false, anything else is refused rather
/// than guessed.
fn parse_status(v: &Value, path: &str) -> Result<bool, AlertError> {
    match as_str(v, || path.to_string())? {
        "firing" => Ok(true),
        "resolved" => Ok(false),
        other => Err(AlertError::Invalid {
            path: path.to_string(),
            reason: format!("expected \"firing\" or \"resolved\", got {other:?}"),
        }),
    }
}

/// An Alertmanager timestamp as Unix ms: `None` for Go's zero time; refused
/// when malformed or before 1970 (no real alert is that old, and the output
/// is unsigned).
fn parse_alert_time(v: &Value, path: &str) -> Result<Option<u64>, AlertError> {
    let s = as_str(v, || path.to_string())?;
    let invalid = |reason: &str| AlertError::Invalid {
        path: path.to_string(),
        reason: format!("invalid RFC 3339 timestamp {s:?}: {reason}"),
    };
    let ms = parse_rfc3339_ms(s).map_err(invalid)?;
    if ms == GO_ZERO_TIME_MS {
        return Ok(None);
    }
    u64::try_from(ms)
        .map(Some)
        .map_err(|_| invalid("before the Unix epoch"))
}

/// Parses an Alertmanager webhook payload (version "4") into one
/// [`IngestedAlert`] per entry of `alerts`.
///
/// Required: `version` (must be the string "4": another version may change
/// the meaning of fields, so it is refused rather than half-understood),
/// `status`, `alerts`, and in every alert `status`, `labels` (with a string
/// `alertname`; every label value a string) and `startsAt`. `endsAt` is
/// optional. All other fields (`groupKey`, `receiver`, `annotations`,
/// `fingerprint`, …) are accepted and ignored, including ones not yet
/// invented.
pub fn parse_alertmanager(json: &str) -> Result<Vec<IngestedAlert>, AlertError> {
    let top = parse_json(json)?;
    let version = as_str(required(&top, "", "version")?, || "version".into())?;
    if version != "4" {
        return Err(AlertError::Version {
            path: "version".into(),
            found: version.to_string(),
        });
    }
    parse_status(required(&top, "", "status")?, "status")?;
    let alerts = required(&top, "", "alerts")?
        .as_array()
        .ok_or_else(|| AlertError::Type {
            path: "alerts".into(),
            expected: "an array",
        })?;
    alerts
        .iter()
        .enumerate()
        .map(|(i, a)| parse_one_alert(a, &format!("alerts[{i}]")))
        .collect()
}

fn parse_one_alert(v: &Value, path: &str) -> Result<IngestedAlert, AlertError> {
    let obj = as_object(v, || path.to_string())?;
    let firing = parse_status(required(obj, path, "status")?, &join(path, "status"))?;

    let labels_path = join(path, "labels");
    let raw_labels = as_object(required(obj, path, "labels")?, || labels_path.clone())?;
    let mut labels = BTreeMap::new();
    for (k, v) in raw_labels {
        let value = as_str(v, || join(&labels_path, k))?;
        labels.insert(k.clone(), value.to_string());
    }
    let name = match labels.get("alertname") {
        Some(n) if !n.is_empty() => n.clone(),
        Some(_) => {
            return Err(AlertError::Invalid {
                path: join(&labels_path, "alertname"),
                reason: "must not be empty".into(),
            })
        }
        None => {
            return Err(AlertError::Missing {
                path: join(&labels_path, "alertname"),
            })
        }
    };

    let starts_at_ms = parse_alert_time(required(obj, path, "startsAt")?, &join(path, "startsAt"))?;
    let ends_at_ms = match optional(obj, "endsAt") {
        Some(v) => parse_alert_time(v, &join(path, "endsAt"))?,
        None => None,
    };
    let scope = scope_from_labels(&labels);
    Ok(IngestedAlert {
        name,
        firing,
        labels,
        starts_at_ms,
        ends_at_ms,
        scope,
    })
}

/// Takes exactly `n` ASCII digits from the front of `s`.
fn digits(s: &mut &[u8], n: usize) -> Result<i64, &'static str> {
    if s.len() < n || !s[..n].iter().all(u8::is_ascii_digit) {
        return Err("expected a digit");
    }
    let v = s[..n]
        .iter()
        .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    *s = &s[n..];
    Ok(v)
}

fn expect(s: &mut &[u8], accepted: &[u8], what: &'static str) -> Result<u8, &'static str> {
    match s.first() {
        Some(c) if accepted.contains(c) => {
            *s = &s[1..];
            Ok(*c)
        }
        _ => Err(what),
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (negative
/// before), by Howard Hinnant's `days_from_civil`, which is exact for every
/// year without loops or tables.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00.123Z`,
/// `2024-05-01T14:00:00+02:00`) into Unix milliseconds (negative before
/// 1970). Accepts `T`, `t` or a space between date and time, `Z` or `z`,
/// `±hh:mm` offsets and any number of fractional digits (truncated to the
/// millisecond, i.e. rounded down, so an alert never appears to start
/// later than it did). A leap second (`:60`) counts as the first second of
/// the next minute, as Unix time has no room for it. The error says what is
/// wrong.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, &'static str> {
    let mut b = s.as_bytes();
    let b = &mut b;
    let year = digits(b, 4)?;
    expect(b, b"-", "expected '-' after the year")?;
    let month = digits(b, 2)?;
    expect(b, b"-", "expected '-' after the month")?;
    let day = digits(b, 2)?;
    expect(b, b"Tt ", "expected 'T' between date and time")?;
    let hour = digits(b, 2)?;
    expect(b, b":", "expected ':' after the hour")?;
    let minute = digits(b, 2)?;
    expect(b, b":", "expected ':' after the minute")?;
    let second = digits(b, 2)?;
    let mut millis = 0;
    if expect(b, b".", "").is_ok() {
        let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err("expected digits after '.'");
        }
        let rest: &[u8] = b;
        let kept = n.min(3);
        let mut frac = &rest[..kept];
        millis = digits(&mut frac, kept)? * 10i64.pow(3 - kept as u32);
        *b = &rest[n..];
    }
    let offset_min = match expect(b, b"Zz+-", "expected 'Z' or a ±hh:mm offset")? {
        b'Z' | b'z' => 0,
        sign => {
            let oh = digits(b, 2)?;
            expect(b, b":", "expected ':' in the offset")?;
            let om = digits(b, 2)?;
            if oh > 23 || om > 59 {
                return Err("offset out of range");
            }
            let off = oh * 60 + om;
            if sign == b'-' {
                -off
            } else {
                off
            }
        }
    };
    if !b.is_empty() {
        return Err("unexpected characters after the offset");
    }
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("time of day out of range");
    }
    let days = days_from_civil(year, month, day);
    // Local time minus the offset is UTC.
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Ok(secs * 1_000 + millis)
}

/// "I am alive" from one application, expected every `interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Who is alive, in the sender's own naming (e.g. `catalog/us-east-a-1`).
    pub source: String,
    /// When the source sent it (Unix ms), by the source's clock.
    pub at_ms: u64,
    /// Promised time between heartbeats; silence is judged in these units.
    pub interval_ms: u64,
}

/// Interval assumed when a heartbeat does not say: one per second, the
/// resolution of every other signal.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 1_000;

/// Parses `{"source": "...", "at_ms": 123, "interval_ms": 1000}`.
/// `source` (non-empty) and `at_ms` are required; `interval_ms` defaults to
/// 1000 and must be > 0 (a zero interval would make every source missing at
/// once). Unknown fields are accepted, so senders can add fields before
/// this parser knows them.
pub fn parse_heartbeat(json: &str) -> Result<Heartbeat, AlertError> {
    let obj = parse_json(json)?;
    let source = as_str(required(&obj, "", "source")?, || "source".into())?;
    if source.is_empty() {
        return Err(AlertError::Invalid {
            path: "source".into(),
            reason: "must not be empty".into(),
        });
    }
    let at_ms = as_u64(required(&obj, "", "at_ms")?, || "at_ms".into())?;
    let interval_ms = match optional(&obj, "interval_ms") {
        Some(v) => as_u64(v, || "interval_ms".into())?,
        None => DEFAULT_HEARTBEAT_INTERVAL_MS,
    };
    if interval_ms == 0 {
        return Err(AlertError::Invalid {
            path: "interval_ms".into(),
            reason: "must be > 0".into(),
        });
    }
    Ok(Heartbeat {
        source: source.to_string(),
        at_ms,
        interval_ms,
    })
}

/// Last heartbeat of every source seen. Memory grows with the number of
/// sources, not with the number of heartbeats; [`HeartbeatMonitor::forget`]
/// removes a source that was retired on purpose.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatMonitor {
    last: BTreeMap<String, Heartbeat>,
}

impl HeartbeatMonitor {
    /// A monitor that watches no source yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the newest heartbeat per source. One that arrives out of order
    /// (older `at_ms` than the one kept) is ignored so a delayed packet
    /// cannot make a source look more silent than it is; one with the same
    /// `at_ms` replaces the kept one, so a new interval takes effect.
    pub fn record(&mut self, hb: Heartbeat) {
        match self.last.get(&hb.source) {
            Some(kept) if kept.at_ms > hb.at_ms => {}
            _ => {
                self.last.insert(hb.source.clone(), hb);
            }
        }
    }

    /// The newest heartbeat of `source`, if any.
    pub fn last(&self, source: &str) -> Option<&Heartbeat> {
        self.last.get(source)
    }

    /// Stops watching `source`; true if it was watched.
    pub fn forget(&mut self, source: &str) -> bool {
        self.last.remove(source).is_some()
    }

    /// Number of sources watched.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// True when no source is watched.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Sources silent for more than `grace` of their own intervals at
    /// `now_ms`, with how long they have been silent, sorted by source.
    /// Allowing a few intervals (`grace`) absorbs jitter and one lost
    /// heartbeat; `grace` 0 reports any silence at all. A heartbeat stamped
    /// after `now_ms` (clock skew) counts as silent for 0 ms.
    pub fn missing(&self, now_ms: u64, grace: u32) -> Vec<(String, u64)> {
        self.last
            .values()
            .filter_map(|hb| {
                let silent = now_ms.saturating_sub(hb.at_ms);
                let allowed = hb.interval_ms.saturating_mul(u64::from(grace));
                (silent > allowed).then(|| (hb.source.clone(), silent))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Alertmanager 0.27 posts, two alerts in one group: one firing,
    /// one resolved, extra fields included.
    const PAYLOAD: &str = r#"{
      "receiver": "switchyard",
      "status": "firing",
      "alerts": [
        {
          "status": "firing",
          "labels": {
            "alertname": "HighErrorRate",
            "instance": "10.1.1.11:9100",
            "job": "catalog",
            "severity": "page",
            "switchyard_region": "us-east",
            "switchyard_zone": "us-east-a"
          },
          "annotations": {
            "summary": "5xx ratio above 5 % in us-east-a",
            "runbook_url": "https://runbooks.example/high-error-rate"
          },
          "startsAt": "2024-05-01T12:00:00.123456789Z",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://prometheus:9090/graph?g0.expr=job%3Acatalog%3Aerror_ratio+%3E+0.05",
          "fingerprint": "c5b4c2a8e2f1d3b7"
        },
        {
          "status": "resolved",
          "labels": {
            "alertname": "InstanceDown",
            "instance": "10.1.1.12:9100",
            "job": "catalog",
            "severity": "page",
            "switchyard_region": "us-east",
            "switchyard_zone": "us-east-a",
            "switchyard_instance": "us-east-a-2"
          },
          "annotations": { "summary": "catalog instance down" },
          "startsAt": "2024-05-01T13:58:30+02:00",
          "endsAt": "2024-05-01T12:05:00.5Z",
          "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
          "fingerprint": "0a1b2c3d4e5f6789"
        }
      ],
      "groupLabels": { "job": "catalog" },
      "commonLabels": { "job": "catalog", "severity": "page", "switchyard_region": "us-east", "switchyard_zone": "us-east-a" },
      "commonAnnotations": {},
      "externalURL": "http://alertmanager:9093",
      "version": "4",
      "groupKey": "{}:{job=\"catalog\"}",
      "truncatedAlerts": 0
    }"#;

    fn payload_with(f: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(PAYLOAD).unwrap();
        f(&mut v);
        v.to_string()
    }

    fn err(json: &str) -> String {
        parse_alertmanager(json).unwrap_err().to_string()
    }

    #[test]
    fn realistic_payload_two_alerts() {
        let alerts = parse_alertmanager(PAYLOAD).unwrap();
        assert_eq!(alerts.len(), 2);

        let a = &alerts[0];
        assert_eq!(a.name, "HighErrorRate");
        assert!(a.firing);
        assert_eq!(a.labels["severity"], "page");
        assert_eq!(a.labels.len(), 6);
        assert_eq!(a.starts_at_ms, Some(1_714_564_800_123));
        assert_eq!(a.ends_at_ms, None, "Go zero time means no end");
        // Zone beats region; the exporter's `instance` label is not a scope.
        assert_eq!(a.scope.as_deref(), Some("zone:us-east-a"));

        let b = &alerts[1];
        assert_eq!(b.name, "InstanceDown");
        assert!(!b.firing, "the alert's own status, not the group's");
        assert_eq!(b.starts_at_ms, Some(1_714_564_710_000));
        assert_eq!(b.ends_at_ms, Some(1_714_565_100_500));
        assert_eq!(b.scope.as_deref(), Some("instance:us-east-a-2"));
    }

    #[test]
    fn unknown_fields_are_accepted() {
        let json = payload_with(|v| {
            v["somethingNew"] = Value::from(42);
            v["alerts"][0]["silencedBy"] = Value::from(vec!["x"]);
        });
        assert_eq!(parse_alertmanager(&json).unwrap().len(), 2);
    }

    #[test]
    fn other_versions_are_refused_naming_the_field() {
        let e = err(&payload_with(|v| v["version"] = Value::from("3")));
        assert!(e.starts_with("version: "), "{e}");
        assert!(e.contains("\"3\""), "{e}");
        let e = err(&payload_with(|v| v["version"] = Value::from(4)));
        assert_eq!(e, "version: expected a string");
        let e = err(&payload_with(|v| {
            v.as_object_mut().unwrap().remove("version");
        }));
        assert_eq!(e, "version: missing");
    }

    #[test]
    fn missing_required_fields_name_the_path() {
        let e = err(&payload_with(|v| {
            v["alerts"][1].as_object_mut().unwrap().remove("labels");
        }));
        assert_eq!(e, "alerts[1].labels: missing");
        let e = err(&payload_with(|v| {
            v["alerts"][0]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("alertname");
        }));
        assert_eq!(e, "alerts[0].labels.alertname: missing");
        let e = err(&payload_with(|v| {
            v["alerts"][1].as_object_mut().unwrap().remove("startsAt");
        }));
        assert_eq!(e, "alerts[1].startsAt: missing");
        let e = err(&payload_with(|v| {
            v["alerts"][0]["status"] = Value::Null;
        }));
        assert_eq!(e, "alerts[0].status: missing");
        let e = err(&payload_with(|v| {
            v.as_object_mut().unwrap().remove("alerts");
        }));
        assert_eq!(e, "alerts: missing");
        // endsAt is optional.
        let json = payload_with(|v| {
            v["alerts"][1].as_object_mut().unwrap().remove("endsAt");
        });
        assert_eq!(parse_alertmanager(&json).unwrap()[1].ends_at_ms, None);
    }

    #[test]
    fn wrong_types_and_values_name_the_path() {
        let e = err(&payload_with(|v| {
            v["alerts"][0]["labels"]["job"] = Value::from(1)
        }));
        assert_eq!(e, "alerts[0].labels.job: expected a string");
        let e = err(&payload_with(|v| {
            v["alerts"][1]["status"] = Value::from("pending")
        }));
        assert_eq!(
            e,
            "alerts[1].status: expected \"firing\" or \"resolved\", got \"pending\""
        );
        let e = err(&payload_with(|v| v["alerts"] = Value::from("none")));
        assert_eq!(e, "alerts: expected an array");
        let e = err(&payload_with(|v| {
            v["alerts"][0]["startsAt"] = Value::from("2024-13-01T00:00:00Z")
        }));
        assert!(e.starts_with("alerts[0].startsAt: invalid RFC 3339"), "{e}");
        assert!(e.contains("month out of range"), "{e}");
        let e = err(&payload_with(|v| {
            v["alerts"][1]["endsAt"] = Value::from("1969-12-31T23:59:59Z")
        }));
        assert!(e.contains("before the Unix epoch"), "{e}");
        assert!(err("[1, 2]").contains("expected a JSON object"));
        assert!(err("{").starts_with("invalid JSON"));
    }

    #[test]
    fn empty_alert_list_is_fine() {
        let json = payload_with(|v| v["alerts"] = Value::Array(vec![]));
        assert!(parse_alertmanager(&json).unwrap().is_empty());
    }

    #[test]
    fn scope_prefers_the_most_specific_switchyard_label() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            scope_from_labels(&labels(&[
                ("switchyard_region", "eu"),
                ("switchyard_zone", "eu-a")
            ])),
            Some("zone:eu-a".into())
        );
        assert_eq!(
            scope_from_labels(&labels(&[("switchyard_region", "eu")])),
            Some("region:eu".into())
        );
        assert_eq!(
            scope_from_labels(&labels(&[
                ("switchyard_region", "eu"),
                ("switchyard_instance", "eu-a-1")
            ])),
            Some("instance:eu-a-1".into())
        );
        assert_eq!(
            scope_from_labels(&labels(&[("instance", "10.0.0.1:80")])),
            None
        );
        assert_eq!(
            scope_from_labels(&labels(&[
                ("switchyard_zone", ""),
                ("switchyard_region", "eu")
            ])),
            Some("region:eu".into())
        );
        assert_eq!(scope_from_labels(&BTreeMap::new()), None);
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:00:00Z"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:00:00+02:00"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T06:30:00-05:30"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01t12:00:00z"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01 12:00:00-00:00"),
            Ok(1_714_564_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T23:59:59Z"),
            Ok(951_868_799_000)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z"), Ok(-1_000));
        assert_eq!(
            parse_rfc3339_ms("9999-12-31T23:59:59Z"),
            Ok(253_402_300_799_000)
        );
        assert_eq!(
            parse_rfc3339_ms("0001-01-01T00:00:00Z"),
            Ok(GO_ZERO_TIME_MS)
        );
        // Leap second: the first second of the next minute.
        assert_eq!(
            parse_rfc3339_ms("2016-12-31T23:59:60Z"),
            parse_rfc3339_ms("2017-01-01T00:00:00Z")
        );
    }

    #[test]
    fn rfc3339_fractions_truncate_to_ms() {
        let base = 1_714_564_800_000;
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:00:00.5Z"), Ok(base + 500));
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:00:00.05Z"), Ok(base + 50));
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:00:00.123Z"), Ok(base + 123));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:00:00.999999999Z"),
            Ok(base + 999)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:00:00.250+02:00"),
            Ok(base + 250)
        );
        // Before the epoch the fraction still moves forward in time.
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59.5Z"), Ok(-500));
    }

    #[test]
    fn rfc3339_rejects_malformed() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00+24:00",
            "2024-05-01T12:00:00Zjunk",
            "2024-5-01T12:00:00Z",
            "2024-02-30T12:00:00Z",
            "2023-02-29T12:00:00Z",
            "1900-02-29T12:00:00Z",
            "2024-00-10T12:00:00Z",
            "2024-04-31T12:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-05-01T12:00:61Z",
            "2024-05-01X12:00:00Z",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z").is_ok(),
            "400-year leap"
        );
    }

    #[test]
    fn heartbeat_parsing() {
        let hb = parse_heartbeat(
            r#"{"source": "catalog/us-east-a-1", "at_ms": 123, "interval_ms": 250}"#,
        )
        .unwrap();
        assert_eq!(
            hb,
            Heartbeat {
                source: "catalog/us-east-a-1".into(),
                at_ms: 123,
                interval_ms: 250
            }
        );
        let hb = parse_heartbeat(r#"{"source": "a", "at_ms": 5, "version": 2}"#).unwrap();
        assert_eq!(
            hb.interval_ms, 1_000,
            "default interval; unknown field accepted"
        );
        let e = |j: &str| parse_heartbeat(j).unwrap_err().to_string();
        assert_eq!(
            e(r#"{"source": "a", "at_ms": 5, "interval_ms": 0}"#),
            "interval_ms: must be > 0"
        );
        assert_eq!(e(r#"{"at_ms": 5}"#), "source: missing");
        assert_eq!(
            e(r#"{"source": "", "at_ms": 5}"#),
            "source: must not be empty"
        );
        assert_eq!(e(r#"{"source": "a"}"#), "at_ms: missing");
        assert_eq!(
            e(r#"{"source": "a", "at_ms": -5}"#),
            "at_ms: expected a non-negative integer"
        );
        assert_eq!(
            e(r#"{"source": "a", "at_ms": 1.5}"#),
            "at_ms: expected a non-negative integer"
        );
        assert_eq!(
            e(r#"{"source": 7, "at_ms": 5}"#),
            "source: expected a string"
        );
        assert!(e("nope").starts_with("invalid JSON"));
    }

    fn hb(source: &str, at_ms: u64, interval_ms: u64) -> Heartbeat {
        Heartbeat {
            source: source.into(),
            at_ms,
            interval_ms,
        }
    }

    #[test]
    fn monitor_reports_silent_sources_after_grace() {
        let mut m = HeartbeatMonitor::new();
        m.record(hb("b", 10_000, 1_000));
        m.record(hb("a", 10_000, 5_000));
        // Grace 3 intervals: b may be silent 3 s, a 15 s.
        assert!(
            m.missing(13_000, 3).is_empty(),
            "exactly at the limit is not late"
        );
        assert_eq!(m.missing(13_001, 3), vec![("b".to_string(), 3_001)]);
        assert_eq!(
            m.missing(25_001, 3),
            vec![("a".to_string(), 15_001), ("b".to_string(), 15_001)],
            "sorted by source"
        );
        // A fresh heartbeat clears it.
        m.record(hb("b", 25_000, 1_000));
        assert_eq!(m.missing(25_001, 3), vec![("a".to_string(), 15_001)]);
        // Grace 0: any silence.
        assert_eq!(m.missing(25_001, 0).len(), 2);
        assert!(m.missing(25_000, 0).iter().all(|(s, _)| s == "a"));
    }

    #[test]
    fn monitor_ignores_out_of_order_and_future_heartbeats() {
        let mut m = HeartbeatMonitor::new();
        m.record(hb("a", 20_000, 1_000));
        m.record(hb("a", 5_000, 1_000));
        assert_eq!(m.last("a").unwrap().at_ms, 20_000);
        // Same instant, new interval: taken.
        m.record(hb("a", 20_000, 10_000));
        assert_eq!(m.last("a").unwrap().interval_ms, 10_000);
        // Clock skew: stamped after now → not silent.
        assert!(m.missing(19_000, 0).is_empty());
        assert_eq!(m.len(), 1);
        assert!(m.forget("a"));
        assert!(!m.forget("a"));
        assert!(m.is_empty());
        assert!(m.missing(1_000_000, 1).is_empty());
    }

    #[test]
    fn monitor_saturates_huge_intervals() {
        let mut m = HeartbeatMonitor::new();
        m.record(hb("a", 0, u64::MAX));
        assert!(m.missing(u64::MAX, u32::MAX).is_empty());
    }
}
