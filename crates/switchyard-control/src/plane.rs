//! The control plane's core: one place where every change — from a person
//! through the API or from a playbook — is checked against the topology and
//! the safety rules, committed to the store (compare-and-swap on the
//! version), audited, and pushed to every watcher.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use switchyard_model::{Config, Controls};
use tokio::sync::broadcast;

use crate::safety::{self, History, SafetyConfig};
use crate::store::{AuditEntry, Store, StoreError};

pub use switchyard_model::time::now_ms;

/// Why a change was not made, classified for the API's status codes.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The request itself is wrong (400).
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// It names a service, zone or region that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// A safety rule refused it (409); every rule that did, with numbers.
    #[error("refused by {}", .0.iter().map(|(r, m)| format!("{r}: {m}")).collect::<Vec<_>>().join("; "))]
    Refused(Vec<(String, String)>),
    /// The store could not take it (503); nothing changed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The state every watcher receives: the full controls and their version.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub version: u64,
    pub controls: Controls,
}

pub struct ControlPlane<S: Store> {
    pub config: Arc<Config>,
    pub safety: SafetyConfig,
    store: S,
    current: Mutex<Published>,
    history: Mutex<History>,
    changes: tokio::sync::Mutex<()>,
    tx: broadcast::Sender<Arc<Published>>,
    /// What detection and the playbooks see now, for `/v1/findings`.
    pub observed: Mutex<serde_json::Value>,
    pub metrics: crate::metrics::Metrics,
    /// Alerts and heartbeats posted to the API, for the detection loop.
    pub ingest: tokio::sync::mpsc::UnboundedSender<Ingest>,
    pub ingest_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Ingest>>>,
    /// Incidents, fed by detection and by every change made here.
    pub incidents: crate::incidents::Incidents,
}

/// What the ingest endpoints hand to detection.
#[derive(Debug)]
pub enum Ingest {
    Alerts(Vec<switchyard_detect::alerts::IngestedAlert>),
    Heartbeat(switchyard_detect::alerts::Heartbeat),
}

/// A change to make: who asks, what, why, and the edit itself.
pub struct Change<'a> {
    pub who: String,
    pub action: String,
    pub reason: String,
    /// Skip the safety rules (admin only, audited as forced).
    pub force: bool,
    pub edit: &'a (dyn Fn(&mut Controls) -> Result<(), ChangeError> + Send + Sync),
}

impl<S: Store> ControlPlane<S> {
    pub async fn new(
        config: Arc<Config>,
        safety: SafetyConfig,
        store: S,
        incidents: crate::incidents::Incidents,
    ) -> Result<Arc<Self>, StoreError> {
        let (ingest, ingest_rx) = tokio::sync::mpsc::unbounded_channel();
        let loaded = store.load().await?;
        let current = match loaded {
            Some(s) => Published {
                version: s.version,
                controls: s.controls,
            },
            None => Published {
                version: 0,
                controls: Controls::default(),
            },
        };
        Ok(Arc::new(ControlPlane {
            config,
            safety,
            store,
            current: Mutex::new(current),
            history: Mutex::new(History::new()),
            changes: tokio::sync::Mutex::new(()),
            tx: broadcast::channel(64).0,
            observed: Mutex::new(serde_json::json!({"findings": [], "mitigations": []})),
            metrics: crate::metrics::Metrics::new(),
            ingest,
            ingest_rx: Mutex::new(Some(ingest_rx)),
            incidents,
        }))
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn current(&self) -> Published {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// Watch streams open now (edges following this control plane).
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Appends an audit entry that changes nothing (a playbook's recommendation).
    pub async fn note(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.store.append_audit(entry).await
    }

    pub async fn history(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.history(limit).await
    }

    /// What the rules would say about a proposal, without making it.
    pub fn preview(&self, proposed: &Controls) -> safety::Verdict {
        let cur = self.current();
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        safety::check(
            &self.config,
            &self.safety,
            &h,
            &cur.controls,
            proposed,
            now_ms(),
        )
    }

    /// Makes a change, or says why not. Changes are serialized here; across
    /// control planes sharing a store, the version check serializes them.
    pub async fn change(&self, c: Change<'_>) -> Result<Published, ChangeError> {
        // Which services it touches, for their open incidents' timelines.
        let mut touched = std::collections::BTreeSet::new();
        let r = self.change_inner(&c, &mut touched).await;
        if matches!(r, Ok(_) | Err(ChangeError::Refused(_))) && !touched.is_empty() {
            let detail = match &r {
                Err(ChangeError::Refused(rules)) => {
                    serde_json::json!({"reason": c.reason, "refused_by": rules.iter().map(|(r, m)| serde_json::json!({"rule": r, "message": m})).collect::<Vec<_>>()})
                }
                Ok(p) => serde_json::json!({"reason": c.reason, "version": p.version}),
                Err(_) => serde_json::Value::Null,
            };
            {
                let mut t = self.incidents.lock();
                for svc in &touched {
                    t.on_action(svc, &c.who, &c.action, r.is_ok(), now_ms(), detail.clone());
                }
            }
            if let Err(e) = self.incidents.persist(&self.store).await {
                tracing::warn!(error = %e, "cannot store the incidents' timelines");
            }
        }
        let by = if c.who == "playbook" {
            "playbook"
        } else {
            "person"
        };
        let result = match &r {
            Ok(p) => {
                self.metrics.version.set(p.version as i64);
                "accepted"
            }
            Err(ChangeError::Refused(rules)) => {
                for (rule, _) in rules {
                    self.metrics
                        .refusals
                        .get_or_create(&crate::metrics::RuleLabels { rule: rule.clone() })
                        .inc();
                }
                "refused"
            }
            Err(_) => "failed",
        };
        self.metrics
            .changes
            .get_or_create(&crate::metrics::ChangeLabels {
                by: by.into(),
                result: result.into(),
            })
            .inc();
        r
    }

    /// `touched` gets the services the proposal changes, also when it is
    /// refused.
    async fn change_inner(
        &self,
        c: &Change<'_>,
        touched: &mut std::collections::BTreeSet<String>,
    ) -> Result<Published, ChangeError> {
        let _one_at_a_time = self.changes.lock().await;
        for attempt in 0..3 {
            let cur = self.current();
            let mut proposed = cur.controls.clone();
            (c.edit)(&mut proposed)?;
            proposed.version = cur.version + 1;
            proposed
                .validate(&self.config)
                .map_err(|e| ChangeError::Invalid(e.iter().map(|x| x.to_string()).collect()))?;
            *touched = crate::incidents::services_changed(&cur.controls, &proposed);
            let now = now_ms();
            let verdict = {
                let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
                safety::check(
                    &self.config,
                    &self.safety,
                    &h,
                    &cur.controls,
                    &proposed,
                    now,
                )
            };
            if !verdict.allowed && !c.force {
                let refusals: Vec<(String, String)> = verdict
                    .refusals
                    .iter()
                    .map(|r| (r.rule.to_string(), r.message.clone()))
                    .collect();
                let entry = AuditEntry {
                    at_ms: now,
                    who: c.who.clone(),
                    action: c.action.clone(),
                    reason: c.reason.clone(),
                    accepted: false,
                    rule: Some(
                        refusals
                            .iter()
                            .map(|(r, _)| r.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    version: None,
                    detail: serde_json::json!({"refusals": refusals.iter().map(|(r, m)| serde_json::json!({"rule": r, "message": m})).collect::<Vec<_>>()}),
                };
                self.store.append_audit(&entry).await?;
                return Err(ChangeError::Refused(refusals));
            }
            let entry = AuditEntry {
                at_ms: now,
                who: c.who.clone(),
                action: c.action.clone(),
                reason: c.reason.clone(),
                accepted: true,
                rule: None,
                version: None,
                detail: if c.force && !verdict.allowed {
                    serde_json::json!({"forced_past": verdict.refusals.iter().map(|r| serde_json::json!({"rule": r.rule, "message": r.message})).collect::<Vec<_>>()})
                } else {
                    serde_json::Value::Null
                },
            };
            match self.store.commit(cur.version, &proposed, &entry).await {
                Ok(v) => {
                    proposed.version = v;
                    self.history
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&self.config, &cur.controls, &proposed, now);
                    let p = Published {
                        version: v,
                        controls: proposed,
                    };
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = p.clone();
                    let _ = self.tx.send(Arc::new(p.clone()));
                    tracing::info!(who = %c.who, action = %c.action, version = v, "controls changed");
                    return Ok(p);
                }
                Err(StoreError::Conflict { .. }) if attempt < 2 => {
                    // Another control plane got there first: take its state
                    // and check this change again on top of it.
                    self.sync().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ChangeError::Store(StoreError::Unavailable(
            "the controls kept changing underneath; try again".into(),
        )))
    }

    /// Takes the store's state if another control plane changed it; returns
    /// whether anything changed.
    pub async fn sync(&self) -> Result<bool, StoreError> {
        let Some(s) = self.store.load().await? else {
            return Ok(false);
        };
        let cur = self.current();
        if s.version == cur.version {
            return Ok(false);
        }
        let p = Published {
            version: s.version,
            controls: s.controls,
        };
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&self.config, &cur.controls, &p.controls, now_ms());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = p.clone();
        let _ = self.tx.send(Arc::new(p));
        Ok(true)
    }
}
