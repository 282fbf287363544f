//! A check of an action: did the users it concerns fare better after it? One
//! record, written into the audit log (a playbook's verification) and into
//! the incident's timeline, and read by the drills' scores — so "passed" and
//! "failed" are typed values every side agrees on, not words in a reason.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// The users' share of failed or slow requests fell, or is within bounds.
    Passed,
    /// It stayed above the bound and did not measurably fall: the action did
    /// not help, and the incident escalates.
    Failed,
    /// Too few requests before or after acting to say either way.
    Inconclusive,
}

impl CheckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Passed => "passed",
            CheckOutcome::Failed => "failed",
            CheckOutcome::Inconclusive => "inconclusive",
        }
    }
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose requests a check counts: the users an action concerns, known by the
/// region whose edges their requests entered through — wherever they were
/// then served, so moving them elsewhere shows in their numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "of", rename_all = "snake_case")]
pub enum Users {
    /// Every user of the service.
    All,
    /// Users entering through these regions' edges (sorted, each once).
    Regions { regions: Vec<String> },
}

impl Users {
    /// Users of these regions; none is every user.
    pub fn regions<I: IntoIterator<Item = S>, S: Into<String>>(regions: I) -> Users {
        let mut r: Vec<String> = regions.into_iter().map(Into::into).collect();
        r.sort();
        r.dedup();
        if r.is_empty() {
            Users::All
        } else {
            Users::Regions { regions: r }
        }
    }

    /// Whether a request that entered through `region`'s edges counts.
    pub fn includes(&self, region: &str) -> bool {
        match self {
            Users::All => true,
            Users::Regions { regions } => regions.iter().any(|r| r == region),
        }
    }
}

impl fmt::Display for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Users::All => f.write_str("all users"),
            Users::Regions { regions } => write!(f, "users of {}", regions.join(", ")),
        }
    }
}

/// The users' requests over one window `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserShare {
    pub from_ms: u64,
    pub to_ms: u64,
    pub requests: u64,
    /// Requests that failed because of their target.
    pub failed: u64,
    /// Requests that did not fail but were slow: in a series (one route,
    /// target and instance of one edge in one second) whose p99 was above
    /// the check's bound.
    pub slow: u64,
}

impl UserShare {
    /// Failed or slow.
    pub fn bad(&self) -> u64 {
        self.failed + self.slow
    }

    /// The share of requests that failed or were slow; `None` without requests.
    pub fn ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.bad() as f64 / self.requests as f64)
    }

    /// `12.0 % of 1520 requests failed or slow`, or `no requests`.
    pub fn describe(&self) -> String {
        match self.ratio() {
            Some(r) => format!(
                "{:.1} % of {} requests failed or slow",
                r * 100.0,
                self.requests
            ),
            None => "no requests".into(),
        }
    }
}

/// What a check measured and concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub outcome: CheckOutcome,
    pub users: Users,
    /// The window before acting.
    pub before: UserShare,
    /// The window ending the verification delay after acting.
    pub after: UserShare,
    /// The p99 above which a series' requests counted as slow; absent when
    /// there was no baseline to derive it from (failures only, then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_p99_ms: Option<f64>,
    /// The numbers and the rule that decided, in words.
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_read_as_people_say_them_and_count_by_entry_region() {
        let u = Users::regions(["us-east", "eu-west", "us-east"]);
        assert_eq!(u.to_string(), "users of eu-west, us-east");
        assert!(u.includes("us-east") && !u.includes("ap-south"));
        assert_eq!(Users::regions(Vec::<String>::new()), Users::All);
        assert!(Users::All.includes("anywhere"));
        let back: Users = serde_json::from_value(serde_json::to_value(&u).unwrap()).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn a_share_counts_failed_and_slow_requests() {
        let s = UserShare {
            requests: 200,
            failed: 10,
            slow: 14,
            ..UserShare::default()
        };
        assert_eq!(s.bad(), 24);
        assert_eq!(s.ratio(), Some(0.12));
        assert_eq!(s.describe(), "12.0 % of 200 requests failed or slow");
        assert_eq!(UserShare::default().ratio(), None);
    }
}
