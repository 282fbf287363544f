//! Where to push: one `[[dns.push]]` table per zone, with exactly one
//! backend table inside it (`[dns.push.rfc2136]` today). Validated like the rest of
//! Switchyard's configuration: every problem at once, each named by its path.
//!
//! ```toml
//! [[dns.push]]
//! zone = "example.com"
//! attempts = 4               # tries per read/apply for transient failures
//! [dns.push.rfc2136]
//! server = "192.0.2.53:53"
//! key_file = "/etc/switchyard/switchyard.key"   # as tsig-keygen writes it
//! # or: key_name = "switchyard", key_algorithm = "hmac-sha256",
//! #     key_secret_env = "SWITCHYARD_TSIG_SECRET"
//! timeout_ms = 5000
//! ```
//!
//! This is the one place a backend is registered: a new one adds its raw
//! table to [`raw::Push`], a check in [`validate`] and an arm in
//! [`Backend::provider`].

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_model::error::ValidationErrors;

use super::push::PushOptions;
use super::rfc2136::{Rfc2136, Rfc2136Config, TsigAlg, TsigKey};
use super::{DnsName, Provider};

/// The tables as written: they live in the model's `[dns]` section
/// (`[[dns.push]]`), so the whole file parses in one place.
pub mod raw {
    pub use switchyard_model::dns::raw::{Push, Rfc2136};
}

/// One zone to keep in step, validated.
#[derive(Debug, Clone)]
pub struct PushTarget {
    pub zone: DnsName,
    pub options: PushOptions,
    /// Read the zone back this often when nothing changed here.
    pub resync: Duration,
    pub backend: Backend,
}

#[derive(Debug, Clone)]
pub enum Backend {
    Rfc2136(Rfc2136Config),
}

impl Backend {
    pub fn provider(&self) -> Box<dyn Provider> {
        match self {
            // The key was checked in `validate`, which built it the same way.
            Backend::Rfc2136(cfg) => {
                Box::new(Rfc2136::new(cfg.clone()).expect("a validated RFC 2136 config builds"))
            }
        }
    }
}

/// Checks `[[dns.push]]` tables. `prefix` is their path in the file
/// (`dns.push`); `read_file` reads a key file and `env` resolves
/// `key_secret_env` (files and environment are the caller's, so this is
/// testable without either).
pub fn validate(
    raw: &[raw::Push],
    prefix: &str,
    read_file: impl Fn(&str) -> std::io::Result<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<PushTarget>, ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let mut targets = Vec::new();
    let mut seen_zones = std::collections::BTreeMap::new();
    for (i, p) in raw.iter().enumerate() {
        let path = format!("{prefix}[{i}]");
        let zone = match &p.zone {
            None => {
                errs.push(format!("{path}.zone"), "required");
                None
            }
            Some(z) => match DnsName::parse(z) {
                Ok(z) => {
                    if let Some(other) = seen_zones.insert(z.clone(), path.clone()) {
                        errs.push(
                            format!("{path}.zone"),
                            format!("zone {z} is already pushed by {other}; one writer per zone"),
                        );
                    }
                    Some(z)
                }
                Err(e) => {
                    errs.push(format!("{path}.zone"), e.to_string());
                    None
                }
            },
        };
        let mut options = PushOptions::default();
        match p.attempts {
            Some(0) => errs.push(format!("{path}.attempts"), "must be at least 1"),
            Some(n) => options.attempts = n,
            None => {}
        }
        if let Some(ms) = p.initial_backoff_ms {
            options.initial_backoff = Duration::from_millis(ms);
        }
        if let Some(ms) = p.max_backoff_ms {
            options.max_backoff = Duration::from_millis(ms);
        }
        if options.max_backoff < options.initial_backoff {
            errs.push(
                format!("{path}.max_backoff_ms"),
                format!(
                    "{} is below initial_backoff_ms {}",
                    options.max_backoff.as_millis(),
                    options.initial_backoff.as_millis()
                ),
            );
        }
        let backend = match &p.rfc2136 {
            Some(r) => rfc2136(r, &format!("{path}.rfc2136"), &read_file, &env, &mut errs)
                .map(Backend::Rfc2136),
            None => {
                errs.push(
                    path.clone(),
                    "no provider: add a backend table ([push.rfc2136])",
                );
                None
            }
        };
        let resync = Duration::from_secs(p.resync_s.unwrap_or(60));
        if resync.is_zero() {
            errs.push(format!("{path}.resync_s"), "must be at least 1");
        }
        if let (Some(zone), Some(backend)) = (zone, backend) {
            targets.push(PushTarget {
                zone,
                options,
                resync,
                backend,
            });
        }
    }
    errs.into_result(targets)
}

/// The `[[dns.push]]` targets of a validated config: key files are read
/// relative to `dir` (the config file's folder), secrets from `env`. Also refuses a
/// zone that holds none of the services' names (it would push nothing).
pub fn from_config(
    config: &switchyard_model::Config,
    dir: &std::path::Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<PushTarget>, ValidationErrors> {
    let Some(dns) = &config.dns else {
        return Ok(Vec::new());
    };
    let targets = validate(
        &dns.push,
        "dns.push",
        |f| std::fs::read_to_string(dir.join(f)),
        env,
    )?;
    check_names(config, &targets)?;
    Ok(targets)
}

/// Refuses a target zone that holds none of the services' names: it would
/// push nothing, which is a typo more often than an intent.
pub fn check_names(
    config: &switchyard_model::Config,
    targets: &[PushTarget],
) -> Result<(), ValidationErrors> {
    let mut errs = ValidationErrors::default();
    for (i, t) in targets.iter().enumerate() {
        if super::desired::names_in(config, &t.zone).is_empty() {
            errs.push(
                format!("dns.push[{i}].zone"),
                format!(
                    "no service has a host inside {}: there is nothing to push there",
                    t.zone
                ),
            );
        }
    }
    errs.into_result(())
}

fn rfc2136(
    r: &raw::Rfc2136,
    path: &str,
    read_file: &impl Fn(&str) -> std::io::Result<String>,
    env: &impl Fn(&str) -> Option<String>,
    errs: &mut ValidationErrors,
) -> Option<Rfc2136Config> {
    let server = match &r.server {
        None => {
            errs.push(
                format!("{path}.server"),
                "required (the zone's primary, HOST:PORT)",
            );
            None
        }
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(
                    format!("{path}.server"),
                    format!("{s:?} is not an IP address with a port (e.g. \"192.0.2.53:53\")"),
                );
                None
            }
        },
    };
    let key = match (&r.key_file, &r.key_name) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{path}.key_file"),
                "give key_file or key_name/key_algorithm/key_secret_env, not both",
            );
            None
        }
        (Some(file), None) => {
            for (field, set) in [
                ("key_algorithm", r.key_algorithm.is_some()),
                ("key_secret_env", r.key_secret_env.is_some()),
            ] {
                if set {
                    errs.push(
                        format!("{path}.{field}"),
                        "not used with key_file (the file holds it)",
                    );
                }
            }
            match read_file(file) {
                Err(e) => {
                    errs.push(
                        format!("{path}.key_file"),
                        format!("cannot read {file:?}: {e}"),
                    );
                    None
                }
                Ok(text) => match TsigKey::from_bind_key_file(&text) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        errs.push(format!("{path}.key_file"), format!("{file:?}: {e}"));
                        None
                    }
                },
            }
        }
        (None, Some(name)) => {
            let alg = match r.key_algorithm.as_deref().map(TsigAlg::parse) {
                None => Some(TsigAlg::HmacSha256),
                Some(Ok(a)) => Some(a),
                Some(Err(e)) => {
                    errs.push(format!("{path}.key_algorithm"), e.to_string());
                    None
                }
            };
            let secret = match &r.key_secret_env {
                None => {
                    errs.push(
                        format!("{path}.key_secret_env"),
                        "required with key_name (the variable holding the base64 secret)",
                    );
                    None
                }
                Some(var) => match env(var) {
                    Some(s) => Some(s),
                    None => {
                        errs.push(
                            format!("{path}.key_secret_env"),
                            format!("environment variable {var} is not set"),
                        );
                        None
                    }
                },
            };
            match (alg, secret) {
                (Some(alg), Some(secret)) => match TsigKey::new(name, alg, &secret) {
                    Ok(k) => Some(k),
                    Err(e) => {
                        errs.push(format!("{path}.key_name"), e.to_string());
                        None
                    }
                },
                _ => None,
            }
        }
        (None, None) => {
            errs.push(
                format!("{path}.key_file"),
                "required: a TSIG key (key_file, or key_name with key_secret_env)",
            );
            None
        }
    };
    let mut ok = true;
    if r.timeout_ms == Some(0) {
        errs.push(format!("{path}.timeout_ms"), "must be above 0");
        ok = false;
    }
    let (server, key) = (server?, key?);
    let mut cfg = Rfc2136Config::new(server, key);
    if let Some(ms) = r.timeout_ms {
        cfg.timeout = Duration::from_millis(ms);
    }
    if let Some(f) = r.fudge_s {
        cfg.fudge = f;
    }
    if let Err(e) = Rfc2136::new(cfg.clone()) {
        errs.push(format!("{path}.key_file"), e.to_string());
        ok = false;
    }
    ok.then_some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        push: Vec<raw::Push>,
    }

    const KEY_FILE: &str = "key \"switchyard\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n";

    fn check(text: &str) -> Result<Vec<PushTarget>, ValidationErrors> {
        let file: File = toml::from_str(text).unwrap();
        validate(
            &file.push,
            "push",
            |p| {
                if p == "/keys/switchyard.key" {
                    Ok(KEY_FILE.to_string())
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such file",
                    ))
                }
            },
            |v| (v == "TSIG_SECRET").then(|| "c2VjcmV0LXNlY3JldC1zZWNyZXQ=".to_string()),
        )
    }

    #[test]
    fn a_valid_target_builds_its_provider() {
        let targets = check(
            r#"
            [[push]]
            zone = "Example.COM"
            attempts = 2
            [push.rfc2136]
            server = "192.0.2.53:53"
            key_file = "/keys/switchyard.key"
            timeout_ms = 1500

            [[push]]
            zone = "example.net"
            [push.rfc2136]
            server = "[2001:db8::53]:5353"
            key_name = "other"
            key_algorithm = "hmac-sha512"
            key_secret_env = "TSIG_SECRET"
            "#,
        )
        .unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].zone.as_str(), "example.com.");
        assert_eq!(targets[0].options.attempts, 2);
        let Backend::Rfc2136(cfg) = &targets[0].backend;
        assert_eq!(cfg.timeout, Duration::from_millis(1500));
        assert_eq!(
            targets[0].backend.provider().describe(),
            "rfc2136 192.0.2.53:53 key switchyard."
        );
        assert_eq!(
            targets[1].backend.provider().describe(),
            "rfc2136 [2001:db8::53]:5353 key other."
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let err = check(
            r#"
            [[push]]
            zone = "example.com"
            attempts = 0
            [push.rfc2136]
            server = "dns.example.com"
            key_file = "/keys/missing.key"

            [[push]]
            zone = "example.com"
            [push.rfc2136]
            server = "192.0.2.53:53"
            key_name = "k"
            key_algorithm = "hmac-md5"
            key_secret_env = "UNSET"

            [[push]]
            zone = "a..b"

            [[push]]
            zone = "example.org"
            [push.rfc2136]
            server = "192.0.2.53:53"
            "#,
        )
        .unwrap_err();
        let got: Vec<String> = err.iter().map(|e| e.to_string()).collect();
        let want = [
            "push[0].attempts: must be at least 1",
            "push[0].rfc2136.server: \"dns.example.com\" is not an IP address with a port",
            "push[0].rfc2136.key_file: cannot read \"/keys/missing.key\": no such file",
            "push[1].zone: zone example.com. is already pushed by push[0]; one writer per zone",
            "push[1].rfc2136.key_algorithm: TSIG key algorithm `hmac-md5` is not supported",
            "push[1].rfc2136.key_secret_env: environment variable UNSET is not set",
            "push[2].zone: invalid DNS name `a..b`: empty label",
            "push[2]: no provider: add a backend table ([push.rfc2136])",
            "push[3].rfc2136.key_file: required: a TSIG key",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }
}
