//! The `[control.notify]` table: receivers, routes, static silences, grouping
//! and retry settings, and the checks that run before any of it is used.
//!
//! Fields whose text needs checking (severities, URLs) stay strings here so
//! that a bad value does not stop deserialization at the first problem:
//! [`NotifyConfig::validate`] reports every problem at once, each with its
//! path, and the typed value is read through an accessor afterwards.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::types::{Severity, Silence};

/// Everything under `[control.notify]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Notices of one incident that arrive within this wait of the first go
    /// out as one message, so a burst does not page someone three times.
    pub group_wait_ms: u64,
    /// After a message about an incident, its next one waits this long
    /// (carrying every event in between), so a flapping finding is one
    /// update per interval; a notice that raises the severity does not wait.
    pub group_interval_ms: u64,
    pub retry: RetryConfig,
    #[serde(rename = "receiver")]
    pub receivers: Vec<ReceiverConfig>,
    /// Tried in order; the first match wins unless it says `continue`.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Static silences; more are added at run time through the API.
    #[serde(rename = "silence")]
    pub silences: Vec<SilenceConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            group_wait_ms: 2000,
            group_interval_ms: 30_000,
            retry: RetryConfig::default(),
            receivers: Vec::new(),
            routes: Vec::new(),
            silences: Vec::new(),
        }
    }
}

/// How hard to try each receiver with each message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries per receiver per message, the first included.
    pub attempts: u32,
    /// Wait after the first failure; doubles after each further one.
    pub initial_backoff_ms: u64,
    /// Cap on the doubling, so a long outage of a receiver is still retried
    /// at a useful pace.
    pub max_backoff_ms: u64,
    /// Per try, connecting included.
    pub timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 5000,
            timeout_ms: 3000,
        }
    }
}

impl RetryConfig {
    /// The wait after failed try number `attempt` (1-based): the initial
    /// backoff doubled for each earlier failure, capped at the maximum.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(63);
        self.initial_backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_backoff_ms.max(self.initial_backoff_ms))
    }
}

/// What a receiver expects to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// Switchyard's own JSON document.
    Webhook,
    /// A Slack incoming webhook (or anything that speaks its format).
    Slack,
    /// Alertmanager's `POST /api/v2/alerts`; the URL names that path.
    Alertmanager,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Alertmanager => "alertmanager",
        }
    }
}

/// A named place to send messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    /// `http://host:port/path`, posted to as is.
    pub url: String,
}

/// Which receivers hear about which incidents.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Empty matches any service.
    #[serde(default)]
    pub services: Vec<String>,
    /// `SEV1`..`SEV4`; matches notices at least this severe. Absent: any.
    #[serde(default)]
    pub min_severity: Option<String>,
    #[serde(default)]
    pub receivers: Vec<String>,
    /// Keep looking at later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

impl RouteConfig {
    /// The parsed `min_severity`. Text that does not parse is reported by
    /// [`NotifyConfig::validate`], and routing treats such a route as matching
    /// nothing, so an unchecked config errs towards the routes certainly meant.
    pub fn min_severity(&self) -> Result<Option<Severity>, crate::types::ParseSeverityError> {
        self.min_severity.as_deref().map(str::parse).transpose()
    }
}

/// A static silence as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceConfig {
    pub id: String,
    #[serde(default)]
    pub service: Option<String>,
    /// `SEV1`..`SEV4`, exact.
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub scope_prefix: Option<String>,
    pub until_ms: u64,
    pub reason: String,
    pub created_by: String,
}

impl SilenceConfig {
    /// The run-time silence, or why the severity text is not one.
    pub fn to_silence(&self) -> Result<Silence, crate::types::ParseSeverityError> {
        Ok(Silence {
            id: self.id.clone(),
            service: self.service.clone(),
            severity: self.severity.as_deref().map(str::parse).transpose()?,
            scope_prefix: self.scope_prefix.clone(),
            until_ms: self.until_ms,
            reason: self.reason.clone(),
            created_by: self.created_by.clone(),
        })
    }
}

/// A receiver URL taken apart: only plain `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub uri: http::Uri,
}

/// Why a receiver URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: https is not supported (plain http only: http://host:port/path)")]
    Https(String),
    #[error("{0:?} is not a URL of the form http://host:port/path")]
    NotHttp(String),
}

/// Parses a receiver URL. Plain http only: receivers are expected to sit on
/// the operator's network (or behind a local relay), and TLS would pull a
/// certificate store into the control plane for no current need.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, UrlError> {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(UrlError::Https(url.to_string()));
    }
    let not_http = || UrlError::NotHttp(url.to_string());
    if !lower.starts_with("http://") {
        return Err(not_http());
    }
    let uri: http::Uri = url.trim().parse().map_err(|_| not_http())?;
    let authority = uri.authority().ok_or_else(not_http)?;
    // Userinfo would be sent in clear text and is not what anyone means here.
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(not_http());
    }
    if authority.as_str().contains(':') && authority.port_u16().is_none() {
        return Err(not_http());
    }
    Ok(HttpTarget { uri })
}

impl NotifyConfig {
    /// Checks the whole table and returns every problem, each prefixed with
    /// its path (`control.notify.route[1].receivers: …`), so one edit can fix
    /// them all.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        const P: &str = "control.notify";
        let mut errs = Vec::new();

        let r = &self.retry;
        if r.attempts == 0 {
            errs.push(format!(
                "{P}.retry.attempts: must be at least 1 (0 would never send anything)"
            ));
        }
        if r.timeout_ms == 0 {
            errs.push(format!("{P}.retry.timeout_ms: must be at least 1"));
        }
        if r.max_backoff_ms < r.initial_backoff_ms {
            errs.push(format!(
                "{P}.retry.max_backoff_ms: {} is below initial_backoff_ms {}",
                r.max_backoff_ms, r.initial_backoff_ms
            ));
        }

        let mut first_index: HashMap<&str, usize> = HashMap::new();
        for (i, rc) in self.receivers.iter().enumerate() {
            let at = format!("{P}.receiver[{i}]");
            if rc.name.trim().is_empty() {
                errs.push(format!("{at}.name: must not be empty"));
            } else if let Some(first) = first_index.get(rc.name.as_str()) {
                errs.push(format!(
                    "{at}.name: duplicate receiver {:?} (also receiver[{first}])",
                    rc.name
                ));
            } else {
                first_index.insert(&rc.name, i);
            }
            if let Err(e) = parse_http_url(&rc.url) {
                errs.push(format!("{at}.url: {e}"));
            }
        }

        let mut names: Vec<&str> = Vec::new();
        for r in &self.receivers {
            if !names.contains(&r.name.as_str()) {
                names.push(&r.name);
            }
        }
        let known = names.join(", ");
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("{P}.route[{i}]");
            if route.receivers.is_empty() {
                errs.push(format!(
                    "{at}.receivers: empty; a matching route would send nothing"
                ));
            }
            for name in &route.receivers {
                if !first_index.contains_key(name.as_str()) {
                    errs.push(format!(
                        "{at}.receivers: unknown receiver {name:?} (receivers: {known})"
                    ));
                }
            }
            if let Err(e) = route.min_severity() {
                errs.push(format!("{at}.min_severity: {e}"));
            }
            if route.services.iter().any(|s| s.trim().is_empty()) {
                errs.push(format!(
                    "{at}.services: empty name (leave the list out to match any service)"
                ));
            }
        }

        let mut silence_ids: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.silences.iter().enumerate() {
            let at = format!("{P}.silence[{i}]");
            if s.id.trim().is_empty() {
                errs.push(format!("{at}.id: must not be empty"));
            } else if let Some(first) = silence_ids.get(s.id.as_str()) {
                errs.push(format!(
                    "{at}.id: duplicate silence {:?} (also silence[{first}])",
                    s.id
                ));
            } else {
                silence_ids.insert(&s.id, i);
            }
            if let Err(e) = s.to_silence() {
                errs.push(format!("{at}.severity: {e}"));
            }
            // Who and why are what make a silence reviewable afterwards.
            if s.reason.trim().is_empty() {
                errs.push(format!("{at}.reason: must not be empty"));
            }
            if s.created_by.trim().is_empty() {
                errs.push(format!("{at}.created_by: must not be empty"));
            }
        }

        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// The receiver named `name`.
    pub fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.receivers.iter().find(|r| r.name == name)
    }

    /// The static silences in run-time form; ones whose severity does not
    /// parse (reported by [`NotifyConfig::validate`]) are left out.
    pub fn static_silences(&self) -> Vec<Silence> {
        self.silences
            .iter()
            .filter_map(|s| s.to_silence().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> NotifyConfig {
        let mut root: toml::Table = text.parse().expect("toml");
        let control = root.remove("control").expect("control");
        let toml::Value::Table(mut control) = control else {
            panic!("control is a table")
        };
        let notify = control.remove("notify").expect("notify");
        let toml::Value::Table(notify) = notify else {
            panic!("notify is a table")
        };
        notify.try_into().expect("notify config")
    }

    const EXAMPLE: &str = r#"
        [control.notify]
        group_wait_ms = 2000
        [control.notify.retry]
        attempts = 5
        initial_backoff_ms = 200
        max_backoff_ms = 5000
        timeout_ms = 3000
        [[control.notify.receiver]]
        name = "oncall"
        kind = "webhook"
        url = "http://127.0.0.1:9000/hook"
        [[control.notify.receiver]]
        name = "chat"
        kind = "slack"
        url = "http://127.0.0.1:9001/slack"
        [[control.notify.route]]
        services = ["catalog"]
        min_severity = "SEV2"
        receivers = ["oncall"]
        continue = true
        [[control.notify.route]]
        receivers = ["chat"]
        [[control.notify.silence]]
        id = "maint-1"
        service = "catalog"
        until_ms = 1800000000000
        reason = "planned maintenance"
        created_by = "ops"
    "#;

    #[test]
    fn the_documented_example_parses_and_validates() {
        let cfg = parse(EXAMPLE);
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.group_wait_ms, 2000);
        assert_eq!(cfg.receivers.len(), 2);
        assert_eq!(cfg.receivers[1].kind, ReceiverKind::Slack);
        assert!(cfg.routes[0].continue_matching);
        assert!(!cfg.routes[1].continue_matching);
        assert_eq!(cfg.routes[0].min_severity(), Ok(Some(Severity::Sev2)));
        assert_eq!(cfg.routes[1].min_severity(), Ok(None));
        let s = cfg.static_silences();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].service.as_deref(), Some("catalog"));
        assert_eq!(s[0].until_ms, 1_800_000_000_000);
    }

    #[test]
    fn an_empty_table_takes_the_defaults() {
        let cfg: NotifyConfig = toml::Table::new().try_into().unwrap();
        assert_eq!(cfg, NotifyConfig::default());
        assert_eq!(cfg.retry.attempts, 5);
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let t: toml::Table = "group_wait = 5".parse().unwrap();
        assert!(t.try_into::<NotifyConfig>().is_err());
        let t: toml::Table = "[retry]\nattempt = 5".parse().unwrap();
        assert!(t.try_into::<NotifyConfig>().is_err());
        let t: toml::Table = "[[route]]\nreceivers = [\"a\"]\ncontinu = true"
            .parse()
            .unwrap();
        assert!(t.try_into::<NotifyConfig>().is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let cfg = parse(
            r#"
            [control.notify.retry]
            attempts = 0
            initial_backoff_ms = 500
            max_backoff_ms = 100
            [[control.notify.receiver]]
            name = "oncall"
            kind = "webhook"
            url = "http://127.0.0.1:9000/hook"
            [[control.notify.receiver]]
            name = "chat"
            kind = "slack"
            url = "https://hooks.example.com/x"
            [[control.notify.receiver]]
            name = "oncall"
            kind = "alertmanager"
            url = "ftp://127.0.0.1/alerts"
            [[control.notify.route]]
            receivers = ["oncall"]
            [[control.notify.route]]
            min_severity = "SEV5"
            receivers = ["pager", "chat"]
            [[control.notify.silence]]
            id = "m"
            severity = "urgent"
            until_ms = 1
            reason = ""
            created_by = "ops"
            [[control.notify.silence]]
            id = "m"
            until_ms = 1
            reason = "r"
            created_by = "ops"
            "#,
        );
        let errs = cfg.validate().unwrap_err();
        let expected = [
            "control.notify.retry.attempts: must be at least 1 (0 would never send anything)",
            "control.notify.retry.max_backoff_ms: 100 is below initial_backoff_ms 500",
            "control.notify.receiver[1].url: \"https://hooks.example.com/x\": https is not supported (plain http only: http://host:port/path)",
            "control.notify.receiver[2].name: duplicate receiver \"oncall\" (also receiver[0])",
            "control.notify.receiver[2].url: \"ftp://127.0.0.1/alerts\" is not a URL of the form http://host:port/path",
            "control.notify.route[1].receivers: unknown receiver \"pager\" (receivers: oncall, chat)",
            "control.notify.route[1].min_severity: \"SEV5\" is not a severity (SEV1, SEV2, SEV3, SEV4)",
            "control.notify.silence[0].severity: \"urgent\" is not a severity (SEV1, SEV2, SEV3, SEV4)",
            "control.notify.silence[0].reason: must not be empty",
            "control.notify.silence[1].id: duplicate silence \"m\" (also silence[0])",
        ];
        assert_eq!(errs, expected, "got:\n{}", errs.join("\n"));
    }

    #[test]
    fn empty_routes_and_names_are_reported() {
        let cfg = NotifyConfig {
            retry: RetryConfig {
                timeout_ms: 0,
                ..RetryConfig::default()
            },
            receivers: vec![ReceiverConfig {
                name: " ".into(),
                kind: ReceiverKind::Webhook,
                url: "http://127.0.0.1:9000/".into(),
            }],
            routes: vec![RouteConfig {
                services: vec!["".into()],
                ..RouteConfig::default()
            }],
            ..NotifyConfig::default()
        };
        let errs = cfg.validate().unwrap_err();
        assert_eq!(
            errs,
            [
                "control.notify.retry.timeout_ms: must be at least 1",
                "control.notify.receiver[0].name: must not be empty",
                "control.notify.route[0].receivers: empty; a matching route would send nothing",
                "control.notify.route[0].services: empty name (leave the list out to match any service)",
            ]
        );
    }

    #[test]
    fn receiver_urls() {
        for ok in [
            "http://127.0.0.1:9000/hook",
            "http://alerts.internal:9093/api/v2/alerts",
            "http://alerts.internal/hook",
            "HTTP://127.0.0.1:80",
        ] {
            assert!(parse_http_url(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_http_url("https://x:443/"),
            Err(UrlError::Https("https://x:443/".into()))
        );
        for bad in [
            "",
            "127.0.0.1:9000/hook",
            "http://",
            "http://user:pw@host:1/",
            "http://host:port/x",
            "http://host:99999/x",
            "ftp://host/",
        ] {
            assert_eq!(
                parse_http_url(bad),
                Err(UrlError::NotHttp(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let r = RetryConfig {
            attempts: 6,
            initial_backoff_ms: 200,
            max_backoff_ms: 1000,
            timeout_ms: 1,
        };
        let waits: Vec<u64> = (1..=6).map(|a| r.backoff_ms(a)).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(r.backoff_ms(200), 1000, "no overflow on long runs");
    }
}
