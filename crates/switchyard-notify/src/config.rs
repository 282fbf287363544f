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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// Switchyard's own JSON document.
    #[default]
    Webhook,
    /// A Slack incoming webhook (or anything that speaks its format).
    Slack,
    /// Alertmanager's `POST /api/v2/alerts`; the URL names that path.
    Alertmanager,
    /// PagerDuty Events API v2: trigger, acknowledge, resolve.
    Pagerduty,
    /// E-mail over SMTP.
    Email,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Alertmanager => "alertmanager",
            ReceiverKind::Pagerduty => "pagerduty",
            ReceiverKind::Email => "email",
        }
    }

    /// Reached by an HTTP(S) POST to `url`.
    pub fn is_http(self) -> bool {
        !matches!(self, ReceiverKind::Email)
    }
}

/// Where PagerDuty's Events API v2 takes events.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// How often a firing incident is sent again to Alertmanager, which resolves
/// an alert on its own once `resolve_timeout` (5 min by default) passes
/// without hearing of it.
pub const DEFAULT_RESEND_MS: u64 = 60_000;
/// The SMTP submission port, where STARTTLS is the norm.
pub const DEFAULT_SMTP_PORT: u16 = 587;

/// A named place to send messages. Which fields apply depends on `kind`;
/// [`NotifyConfig::validate`] refuses a field set for a kind that ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    /// `http(s)://host[:port]/path`, posted to as is (HTTP kinds; PagerDuty
    /// defaults to [`PAGERDUTY_URL`]).
    #[serde(default)]
    pub url: String,
    /// PEM file of CA certificates trusted for this receiver on top of the
    /// shipped roots, for a private relay (HTTPS kinds and e-mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PagerDuty's integration (routing) key, or the variable holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_env: Option<String>,
    /// Alertmanager: send a firing incident again this often (default
    /// [`DEFAULT_RESEND_MS`]; 0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_ms: Option<u64>,
    /// E-mail: the SMTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// E-mail: default [`DEFAULT_SMTP_PORT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// E-mail: require STARTTLS (the default). Only `false` for a relay on
    /// the same host or network, since mail and password would cross in
    /// clear text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttls: Option<bool>,
}

impl ReceiverConfig {
    /// An HTTP receiver with nothing but a name, kind and URL.
    pub fn http(name: &str, kind: ReceiverKind, url: impl Into<String>) -> ReceiverConfig {
        ReceiverConfig {
            name: name.into(),
            kind,
            url: url.into(),
            ..ReceiverConfig::default()
        }
    }

    /// The URL posted to: as written, or PagerDuty's when left out.
    pub fn target_url(&self) -> &str {
        if self.kind == ReceiverKind::Pagerduty && self.url.trim().is_empty() {
            PAGERDUTY_URL
        } else {
            &self.url
        }
    }

    /// PagerDuty's routing key, from the file or the environment.
    pub fn routing_key_with(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        secret(&self.routing_key, &self.routing_key_env, env)
    }

    /// The SMTP password, from the file or the environment.
    pub fn password_with(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        secret(&self.password, &self.password_env, env)
    }

    /// How often a firing incident is sent again; `None` for kinds that do
    /// not need it and when turned off.
    pub fn resend_every_ms(&self) -> Option<u64> {
        if self.kind != ReceiverKind::Alertmanager {
            return None;
        }
        Some(self.resend_ms.unwrap_or(DEFAULT_RESEND_MS)).filter(|ms| *ms > 0)
    }

    pub fn smtp_port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_SMTP_PORT)
    }

    pub fn starttls(&self) -> bool {
        self.starttls.unwrap_or(true)
    }
}

/// A secret written in the file or named by an environment variable; an
/// unset or empty variable is no secret.
fn secret(
    literal: &Option<String>,
    var: &Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    match (literal, var) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(v)) => env(v).filter(|s| !s.is_empty()),
        (None, None) => None,
    }
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

/// A receiver URL taken apart: `http://` or `https://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub uri: http::Uri,
    pub tls: bool,
}

/// Why a receiver URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a URL of the form http(s)://host[:port]/path")]
    NotHttp(String),
}

/// Parses a receiver URL, plain or TLS.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, UrlError> {
    let lower = url.trim().to_ascii_lowercase();
    let not_http = || UrlError::NotHttp(url.to_string());
    let tls = if lower.starts_with("https://") {
        true
    } else if lower.starts_with("http://") {
        false
    } else {
        return Err(not_http());
    };
    let uri: http::Uri = url.trim().parse().map_err(|_| not_http())?;
    let authority = uri.authority().ok_or_else(not_http)?;
    // Userinfo is not what anyone means here, and over plain http it would
    // be sent in clear text.
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(not_http());
    }
    if authority.as_str().contains(':') && authority.port_u16().is_none() {
        return Err(not_http());
    }
    Ok(HttpTarget { uri, tls })
}

/// The problems of one receiver, each prefixed with `at`.
fn validate_receiver(
    rc: &ReceiverConfig,
    at: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    use ReceiverKind::*;
    let mut errs = Vec::new();
    let kind = rc.kind;
    // A field the kind ignores is a mistake (a key meant for another
    // receiver, a typo of kind); saying so beats silently not using it.
    let fields: [(&str, bool, &[ReceiverKind]); 13] = [
        (
            "url",
            !rc.url.is_empty(),
            &[Webhook, Slack, Alertmanager, Pagerduty],
        ),
        (
            "ca_file",
            rc.ca_file.is_some(),
            &[Webhook, Slack, Alertmanager, Pagerduty, Email],
        ),
        ("routing_key", rc.routing_key.is_some(), &[Pagerduty]),
        (
            "routing_key_env",
            rc.routing_key_env.is_some(),
            &[Pagerduty],
        ),
        ("resend_ms", rc.resend_ms.is_some(), &[Alertmanager]),
        ("host", rc.host.is_some(), &[Email]),
        ("port", rc.port.is_some(), &[Email]),
        ("from", rc.from.is_some(), &[Email]),
        ("to", !rc.to.is_empty(), &[Email]),
        ("username", rc.username.is_some(), &[Email]),
        ("password", rc.password.is_some(), &[Email]),
        ("password_env", rc.password_env.is_some(), &[Email]),
        ("starttls", rc.starttls.is_some(), &[Email]),
    ];
    for (field, set, kinds) in fields {
        if set && !kinds.contains(&kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            errs.push(format!(
                "{at}.{field}: not used by kind = {:?} (only by {})",
                kind.as_str(),
                names.join(", ")
            ));
        }
    }

    if kind.is_http() {
        let url = rc.target_url();
        if url.trim().is_empty() {
            errs.push(format!("{at}.url: required for kind = {:?}", kind.as_str()));
        } else {
            match parse_http_url(url) {
                Err(e) => errs.push(format!("{at}.url: {e}")),
                Ok(t) if !t.tls && rc.ca_file.is_some() => errs.push(format!(
                    "{at}.ca_file: set, but the url {url:?} is plain http, where no certificate is checked"
                )),
                Ok(_) => {}
            }
        }
    }
    if let Some(path) = &rc.ca_file {
        if let Err(e) = crate::tls::read_ca_file(path) {
            errs.push(format!("{at}.ca_file: {e}"));
        }
    }

    if kind == Pagerduty {
        match (&rc.routing_key, &rc.routing_key_env) {
            (Some(_), Some(_)) => errs.push(format!(
                "{at}.routing_key: set either routing_key or routing_key_env, not both"
            )),
            (Some(k), None) if k.trim().is_empty() => {
                errs.push(format!("{at}.routing_key: must not be empty"))
            }
            (None, Some(v)) if rc.routing_key_with(env).is_none() => errs.push(format!(
                "{at}.routing_key_env: the variable {v:?} is not set (or empty)"
            )),
            (None, None) => errs.push(format!(
                "{at}.routing_key: required for kind = \"pagerduty\": routing_key or routing_key_env"
            )),
            _ => {}
        }
    }

    if let Some(ms) = rc.resend_ms {
        if ms > 0 && ms < 1000 {
            errs.push(format!(
                "{at}.resend_ms: {ms} is below 1000 (0 turns re-sending off)"
            ));
        }
    }

    if kind == Email {
        match rc.host.as_deref().map(str::trim) {
            None | Some("") => errs.push(format!("{at}.host: required for kind = \"email\"")),
            Some(_) => {}
        }
        if rc.port == Some(0) {
            errs.push(format!("{at}.port: 0 is not a port"));
        }
        match &rc.from {
            None => errs.push(format!("{at}.from: required for kind = \"email\"")),
            Some(f) => {
                if let Err(e) = crate::email::mailbox(f) {
                    errs.push(format!("{at}.from: {e}"));
                }
            }
        }
        if rc.to.is_empty() {
            errs.push(format!(
                "{at}.to: empty; an e-mail receiver needs at least one address"
            ));
        }
        for (j, t) in rc.to.iter().enumerate() {
            if let Err(e) = crate::email::mailbox(t) {
                errs.push(format!("{at}.to[{j}]: {e}"));
            }
        }
        match (&rc.password, &rc.password_env) {
            (Some(_), Some(_)) => errs.push(format!(
                "{at}.password: set either password or password_env, not both"
            )),
            (None, Some(v)) if rc.password_with(env).is_none() => errs.push(format!(
                "{at}.password_env: the variable {v:?} is not set (or empty)"
            )),
            _ => {}
        }
        let has_password = rc.password.is_some() || rc.password_env.is_some();
        match (&rc.username, has_password) {
            (Some(_), false) => errs.push(format!(
                "{at}.password: required with username (password or password_env)"
            )),
            (None, true) => errs.push(format!("{at}.username: required with a password")),
            _ => {}
        }
        if !rc.starttls() {
            if has_password {
                errs.push(format!(
                    "{at}.starttls: false would send the password in clear text; keep STARTTLS or drop the password"
                ));
            }
            if rc.ca_file.is_some() {
                errs.push(format!(
                    "{at}.ca_file: set, but starttls = false, so no certificate is checked"
                ));
            }
        }
    }
    errs
}

impl NotifyConfig {
    /// Checks the whole table and returns every problem, each prefixed with
    /// its path (`control.notify.route[1].receivers: …`), so one edit can fix
    /// them all. `env` resolves the `*_env` secrets (`|k| std::env::var(k).ok()`
    /// in production, a map in tests); `ca_file`s are read.
    pub fn validate(&self, env: impl Fn(&str) -> Option<String>) -> Result<(), Vec<String>> {
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
            errs.extend(validate_receiver(rc, &at, &env));
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

    fn no_env(_: &str) -> Option<String> {
        None
    }

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
        assert_eq!(cfg.validate(no_env), Ok(()));
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
        assert_eq!(cfg.validate(no_env), Ok(()));
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
            routing_key = "abc"
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
        let errs = cfg.validate(no_env).unwrap_err();
        let expected = [
            "control.notify.retry.attempts: must be at least 1 (0 would never send anything)",
            "control.notify.retry.max_backoff_ms: 100 is below initial_backoff_ms 500",
            "control.notify.receiver[1].routing_key: not used by kind = \"slack\" (only by pagerduty)",
            "control.notify.receiver[2].name: duplicate receiver \"oncall\" (also receiver[0])",
            "control.notify.receiver[2].url: \"ftp://127.0.0.1/alerts\" is not a URL of the form http(s)://host[:port]/path",
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
            receivers: vec![ReceiverConfig::http(
                " ",
                ReceiverKind::Webhook,
                "http://127.0.0.1:9000/",
            )],
            routes: vec![RouteConfig {
                services: vec!["".into()],
                ..RouteConfig::default()
            }],
            ..NotifyConfig::default()
        };
        let errs = cfg.validate(no_env).unwrap_err();
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
            assert!(!parse_http_url(ok).unwrap().tls, "{ok}");
        }
        for ok in ["https://x:443/", "https://events.pagerduty.com/v2/enqueue"] {
            assert!(parse_http_url(ok).unwrap().tls, "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1:9000/hook",
            "http://",
            "http://user:pw@host:1/",
            "http://host:port/x",
            "http://host:99999/x",
            "ftp://host/",
            "https://",
        ] {
            assert_eq!(
                parse_http_url(bad),
                Err(UrlError::NotHttp(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn pagerduty_email_and_alertmanager_receivers_parse_with_their_defaults() {
        let cfg = parse(
            r#"
            [[control.notify.receiver]]
            name = "pager"
            kind = "pagerduty"
            routing_key_env = "PD_KEY"
            [[control.notify.receiver]]
            name = "mail"
            kind = "email"
            host = "smtp.example.com"
            from = "Switchyard <switchyard@example.com>"
            to = ["oncall@example.com"]
            username = "switchyard"
            password_env = "SMTP_PASSWORD"
            [[control.notify.receiver]]
            name = "am"
            kind = "alertmanager"
            url = "http://127.0.0.1:9093/api/v2/alerts"
            "#,
        );
        let env = |k: &str| match k {
            "PD_KEY" => Some("R0UTINGKEY".to_string()),
            "SMTP_PASSWORD" => Some("pw".to_string()),
            _ => None,
        };
        assert_eq!(cfg.validate(env), Ok(()));
        let pd = cfg.receiver("pager").unwrap();
        assert_eq!(pd.target_url(), PAGERDUTY_URL);
        assert_eq!(pd.routing_key_with(env).as_deref(), Some("R0UTINGKEY"));
        let mail = cfg.receiver("mail").unwrap();
        assert_eq!(mail.smtp_port(), 587);
        assert!(mail.starttls());
        assert_eq!(mail.password_with(env).as_deref(), Some("pw"));
        assert_eq!(
            cfg.receiver("am").unwrap().resend_every_ms(),
            Some(DEFAULT_RESEND_MS)
        );
        assert_eq!(pd.resend_every_ms(), None);

        let errs = cfg.validate(no_env).unwrap_err();
        assert_eq!(
            errs,
            [
                "control.notify.receiver[0].routing_key_env: the variable \"PD_KEY\" is not set (or empty)",
                "control.notify.receiver[1].password_env: the variable \"SMTP_PASSWORD\" is not set (or empty)",
            ]
        );
    }

    #[test]
    fn receiver_fields_are_checked_per_kind_all_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        let cfg = parse(&format!(
            r#"
            [[control.notify.receiver]]
            name = "a"
            kind = "webhook"
            url = "https://relay.internal/hook"
            ca_file = {junk:?}
            [[control.notify.receiver]]
            name = "b"
            kind = "slack"
            url = "https://relay.internal/slack"
            ca_file = {broken:?}
            [[control.notify.receiver]]
            name = "c"
            kind = "webhook"
            url = "http://relay.internal/hook"
            ca_file = {missing:?}
            [[control.notify.receiver]]
            name = "d"
            kind = "pagerduty"
            url = "ftp://x/"
            [[control.notify.receiver]]
            name = "e"
            kind = "pagerduty"
            routing_key = "k"
            routing_key_env = "K"
            host = "smtp.example.com"
            [[control.notify.receiver]]
            name = "f"
            kind = "email"
            url = "http://127.0.0.1/"
            port = 0
            from = "not an address"
            to = ["ok@example.com", "@@"]
            password = "pw"
            starttls = false
            resend_ms = 500
            [[control.notify.receiver]]
            name = "g"
            kind = "alertmanager"
            url = "http://127.0.0.1:9093/api/v2/alerts"
            resend_ms = 500
            "#,
        ));
        let errs = cfg.validate(no_env).unwrap_err();
        let (junk, broken, missing) = (
            junk.display().to_string(),
            broken.display().to_string(),
            missing.display().to_string(),
        );
        let r = "control.notify.receiver";
        let expected = vec![
            format!("{r}[0].ca_file: {junk:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            format!("{r}[1].ca_file: {broken:?} is not a usable CA certificate file: "),
            format!("{r}[2].ca_file: set, but the url \"http://relay.internal/hook\" is plain http, where no certificate is checked"),
            format!("{r}[2].ca_file: cannot read {missing:?}: "),
            format!("{r}[3].url: \"ftp://x/\" is not a URL of the form http(s)://host[:port]/path"),
            format!("{r}[3].routing_key: required for kind = \"pagerduty\": routing_key or routing_key_env"),
            format!("{r}[4].host: not used by kind = \"pagerduty\" (only by email)"),
            format!("{r}[4].routing_key: set either routing_key or routing_key_env, not both"),
            format!("{r}[5].url: not used by kind = \"email\" (only by webhook, slack, alertmanager, pagerduty)"),
            format!("{r}[5].resend_ms: not used by kind = \"email\" (only by alertmanager)"),
            format!("{r}[5].resend_ms: 500 is below 1000 (0 turns re-sending off)"),
            format!("{r}[5].host: required for kind = \"email\""),
            format!("{r}[5].port: 0 is not a port"),
            format!("{r}[5].from: "),
            format!("{r}[5].to[1]: "),
            format!("{r}[5].username: required with a password"),
            format!("{r}[5].starttls: false would send the password in clear text; keep STARTTLS or drop the password"),
            format!("{r}[6].resend_ms: 500 is below 1000 (0 turns re-sending off)"),
        ];
        // Some messages end in a library's words; the path and our part are exact.
        let shown = errs.join("\n");
        let mut errs = errs.iter();
        for want in &expected {
            let got = errs
                .next()
                .unwrap_or_else(|| panic!("missing {want}\ngot:\n{shown}"));
            if want.ends_with(": ") {
                assert!(
                    got.starts_with(want.as_str()),
                    "{got}\nwant {want}…\ngot:\n{shown}"
                );
            } else {
                assert_eq!(got, want, "got:\n{shown}");
            }
        }
        assert_eq!(errs.next(), None, "got:\n{shown}");
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
