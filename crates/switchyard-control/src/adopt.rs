//! A plane must never take the edges back: at start it asks every edge
//! which store and version it holds, and when its own store is behind —
//! empty (a mistyped path), restored from an older backup, or another
//! store altogether — it publishes nothing and refuses every change until
//! an admin adopts it (`switchyard control --adopt`, audited). The edges
//! refuse such controls on their own as well (`Controls::may_replace`);
//! this check is what tells the operator why, before anything is pushed.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_api::edge::EdgeStatus;
use switchyard_model::{Config, Controls, Origin};

/// What one edge holds.
#[derive(Debug, Clone)]
pub struct Holding {
    pub zone: String,
    pub version: u64,
    pub origin: Option<Origin>,
}

/// How this plane's store stands against what the edges hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Why publishing would take edges back, one line per edge; empty: it
    /// would not.
    pub behind: Vec<String>,
    /// Other stores the edges hold, to adopt over.
    pub over: Vec<String>,
    /// An edge holds a newer state of this very store: it needs a new
    /// identity that supersedes its old one.
    pub renew: bool,
}

const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks every edge of the config for its status; edges that do not answer
/// are left out (they refuse a step back on their own).
pub async fn holdings(config: &Config) -> Vec<Holding> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let mut out = Vec::new();
    for z in config.zones() {
        let uri = format!("http://{}/status", z.admin);
        let asked = async {
            let req = http::Request::get(&uri)
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let r = client.request(req).await.map_err(|e| e.to_string())?;
            let bytes = r
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice::<EdgeStatus>(&bytes).map_err(|e| e.to_string())
        };
        match tokio::time::timeout(ASK_TIMEOUT, asked).await {
            Ok(Ok(s)) => out.push(Holding {
                zone: z.name.clone(),
                version: s.controls.version,
                origin: s.controls.origin,
            }),
            Ok(Err(e)) => {
                tracing::info!(zone = %z.name, error = %e, "edge did not say what it holds")
            }
            Err(_) => tracing::info!(zone = %z.name, "edge did not say what it holds in time"),
        }
    }
    out
}

/// Judges `mine` (the plane's controls, with their origin) against the
/// edges' holdings.
pub fn judge(mine: &Controls, holdings: &[Holding]) -> Verdict {
    let mut v = Verdict::default();
    let Some(me) = &mine.origin else {
        return v;
    };
    for h in holdings {
        match &h.origin {
            Some(o) if o.store == me.store && h.version > mine.version => {
                v.renew = true;
                v.behind.push(format!(
                    "edge {} holds version {} of this store, which is at version {} (a restored backup?)",
                    h.zone, h.version, mine.version
                ));
            }
            Some(o) if o.store == me.store => {}
            Some(o) if me.supersedes.contains(&o.store) => {}
            Some(o) => {
                if !v.over.contains(&o.store) {
                    v.over.push(o.store.clone());
                }
                v.behind.push(format!(
                    "edge {} holds version {} of store {}, not this store {} (version {}): an empty or wrong store?",
                    h.zone, h.version, o.store, me.store, mine.version
                ));
            }
            // Hand-written controls: judged by version alone, as the edge does.
            None if h.version > mine.version => v.behind.push(format!(
                "edge {} holds hand-written controls at version {}, above this store's {}",
                h.zone, h.version, mine.version
            )),
            None => {}
        }
    }
    v
}

impl Verdict {
    pub fn explain(&self) -> String {
        format!(
            "this control plane's store is behind what the edges hold, so it publishes nothing and \
             changes nothing: {}. If this store is the right one, restart with \
             `switchyard control --adopt` (audited) to make its controls replace the edges'",
            self.behind.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controls(store: &str, version: u64, supersedes: &[&str]) -> Controls {
        Controls {
            version,
            origin: Some(Origin {
                store: store.into(),
                supersedes: supersedes.iter().map(|s| s.to_string()).collect(),
            }),
            ..Controls::default()
        }
    }

    fn holding(zone: &str, store: Option<&str>, version: u64) -> Holding {
        Holding {
            zone: zone.into(),
            version,
            origin: store.map(|s| Origin {
                store: s.into(),
                supersedes: Vec::new(),
            }),
        }
    }

    #[test]
    fn an_empty_or_restored_store_is_behind_and_an_adopted_one_is_not() {
        // A mistyped path: an empty store, edges on the real one.
        let v = judge(&controls("new", 0, &[]), &[holding("a", Some("real"), 57)]);
        assert_eq!(v.over, ["real"]);
        assert!(!v.renew);
        assert!(
            v.explain()
                .contains("edge a holds version 57 of store real"),
            "{}",
            v.explain()
        );
        // A backup restored into the same store: older than the edges.
        let v = judge(
            &controls("real", 40, &[]),
            &[holding("a", Some("real"), 57)],
        );
        assert!(v.renew && v.over.is_empty(), "{v:?}");
        // Once adopted over the real store, nothing is behind.
        let v = judge(
            &controls("new", 1, &["real"]),
            &[holding("a", Some("real"), 57)],
        );
        assert!(v.behind.is_empty(), "{v:?}");
        // Same store, edges not ahead: fine.
        let v = judge(
            &controls("real", 57, &[]),
            &[holding("a", Some("real"), 57)],
        );
        assert!(v.behind.is_empty(), "{v:?}");
    }
}
