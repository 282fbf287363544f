//! The control plane's core: one place where every change — from a person
//! through the API or from a playbook — is checked against the topology and
//! the safety rules, committed to the store (compare-and-swap on the
//! version), audited, and pushed to every watcher. Whoever else cares about
//! changes (incidents, their timelines) subscribes to the change events the
//! plane publishes; the plane calls into none of them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use switchyard_api::{FindingsView, Refusal};
use switchyard_model::ops::ApplyContext;
use switchyard_model::{Actor, AuditKind, Config, Controls, Op, OpError};
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
    #[error("refused by {}", .0.iter().map(|r| format!("{}: {}", r.rule, r.message)).collect::<Vec<_>>().join("; "))]
    Refused(Vec<Refusal>),
    /// The store could not take it (503); nothing changed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<OpError> for ChangeError {
    fn from(e: OpError) -> ChangeError {
        match e {
            OpError::Invalid(m) => ChangeError::Invalid(vec![m]),
            OpError::NotFound(m) => ChangeError::NotFound(m),
        }
    }
}

/// What happened to a change, for whoever follows the plane: the audit
/// entry as stored and the services whose controls it changed (or would
/// have, when refused).
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub entry: AuditEntry,
    pub services: BTreeSet<String>,
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
    /// Every change made or refused here, for incidents and other followers.
    events: broadcast::Sender<Arc<ChangeEvent>>,
    /// What detection and the playbooks see now, for `/v1/findings`.
    pub observed: Mutex<FindingsView>,
    pub metrics: crate::metrics::Metrics,
    /// Alerts and heartbeats posted to the API, for the detection loop.
    pub ingest: tokio::sync::mpsc::UnboundedSender<Ingest>,
    pub ingest_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Ingest>>>,
}

/// What the ingest endpoints hand to detection.
#[derive(Debug)]
pub enum Ingest {
    Alerts(Vec<switchyard_detect::alerts::IngestedAlert>),
    Heartbeat(switchyard_detect::alerts::Heartbeat),
}

/// A change to make: who asks, what, why.
pub struct Change {
    pub actor: Actor,
    pub op: Op,
    pub reason: String,
    /// Skip the safety rules (admin only, audited as forced).
    pub force: bool,
}

impl<S: Store> ControlPlane<S> {
    pub async fn new(
        config: Arc<Config>,
        safety: SafetyConfig,
        store: S,
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
            events: broadcast::channel(256).0,
            observed: Mutex::new(FindingsView::default()),
            metrics: crate::metrics::Metrics::new(),
            ingest,
            ingest_rx: Mutex::new(Some(ingest_rx)),
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

    /// Every change event from now on. A follower that falls more than 256
    /// behind is told how many it missed.
    pub fn change_events(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.events.subscribe()
    }

    /// Watch streams open now (edges following this control plane).
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    pub async fn history(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.history(limit).await
    }

    /// The controls an operation would produce from the current ones, and
    /// what the rules would say about them, without making the change.
    pub fn preview(
        &self,
        op: &Op,
        actor: &Actor,
        reason: &str,
    ) -> Result<(Controls, safety::Verdict), ChangeError> {
        let cur = self.current();
        let now = now_ms();
        let proposed = self.propose(&cur, op, actor, reason, now)?;
        let verdict = self.judge(&cur.controls, &proposed, now);
        Ok((proposed, verdict))
    }

    /// Every safety rule's verdict on going from `cur` to `proposed`.
    fn judge(&self, cur: &Controls, proposed: &Controls, now: u64) -> safety::Verdict {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        safety::check(&self.config, &self.safety, &h, cur, proposed, now)
    }

    /// The one place an operation becomes new controls: applied to a copy,
    /// then checked against the topology as a whole.
    fn propose(
        &self,
        cur: &Published,
        op: &Op,
        actor: &Actor,
        reason: &str,
        now: u64,
    ) -> Result<Controls, ChangeError> {
        let mut proposed = cur.controls.clone();
        let label = actor.label(reason);
        op.apply(
            &ApplyContext {
                config: &self.config,
                now_ms: now,
                reason: &label,
            },
            &mut proposed,
        )?;
        proposed.version = cur.version + 1;
        proposed
            .validate(&self.config)
            .map_err(|e| ChangeError::Invalid(e.iter().map(|x| x.to_string()).collect()))?;
        Ok(proposed)
    }

    /// Records a playbook's recommendation or verification: an audit entry
    /// that changes nothing, published like a change.
    pub async fn record(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.store.append_audit(&entry).await?;
        let services = entry
            .op
            .as_ref()
            .and_then(|o| o.service())
            .map(str::to_string)
            .into_iter()
            .collect();
        self.publish_event(&entry, services);
        Ok(())
    }

    /// Makes a change, or says why not. Changes are serialized here; across
    /// control planes sharing a store, the version check serializes them.
    pub async fn change(&self, c: Change) -> Result<Published, ChangeError> {
        self.change_or_same(c).await.map(|(p, _)| p)
    }

    /// [`ControlPlane::change`], and whether it changed anything: an
    /// operation asking for what is already in force is answered with the
    /// current state — no commit, no audit entry, no push to every edge —
    /// before any rule is asked (nothing changes, so no rule can object).
    pub async fn change_or_same(&self, c: Change) -> Result<(Published, bool), ChangeError> {
        let r = self.change_inner(&c).await;
        let result = match &r {
            Ok((_, false)) => "unchanged",
            Ok((p, true)) => {
                self.metrics.version.set(p.version as i64);
                "accepted"
            }
            Err(ChangeError::Refused(rules)) => {
                for r in rules {
                    self.metrics
                        .refusals
                        .get_or_create(&crate::metrics::RuleLabels {
                            rule: r.rule.clone(),
                        })
                        .inc();
                }
                "refused"
            }
            Err(_) => "failed",
        };
        self.metrics
            .changes
            .get_or_create(&crate::metrics::ChangeLabels {
                by: c.actor.kind().into(),
                result: result.into(),
            })
            .inc();
        r
    }

    async fn change_inner(&self, c: &Change) -> Result<(Published, bool), ChangeError> {
        let _one_at_a_time = self.changes.lock().await;
        for attempt in 0..3 {
            let cur = self.current();
            let now = now_ms();
            let mut proposed = self.propose(&cur, &c.op, &c.actor, &c.reason, now)?;
            if proposed.same_as(&cur.controls) {
                return Ok((cur, false));
            }
            let services = services_changed(&cur.controls, &proposed);
            let verdict = self.judge(&cur.controls, &proposed, now);
            let refusals: Vec<Refusal> = verdict.refusals.iter().map(|r| r.to_wire()).collect();
            let mut entry = AuditEntry {
                at_ms: now,
                actor: c.actor.clone(),
                kind: AuditKind::Change,
                op: Some(c.op.clone()),
                action: c.op.describe(),
                reason: c.reason.clone(),
                accepted: false,
                rule: None,
                version: None,
                detail: serde_json::Value::Null,
                check: None,
            };
            // A whole document says nothing of what it changes: the audit
            // entry does, leaf by leaf.
            let mut detail = serde_json::Map::new();
            if matches!(c.op, Op::Replace { .. }) {
                detail.insert("diff".into(), cur.controls.diff(&proposed).into());
            }
            if !verdict.allowed && !c.force {
                entry.rule = Some(
                    refusals
                        .iter()
                        .map(|r| r.rule.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
                detail.insert("refusals".into(), serde_json::json!(refusals));
                entry.detail = detail.into();
                self.store.append_audit(&entry).await?;
                self.publish_event(&entry, services);
                return Err(ChangeError::Refused(refusals));
            }
            entry.accepted = true;
            // Force is recorded whenever it is asked for, not only when a
            // rule had to be overridden: who holds the override and uses it
            // is worth knowing either way.
            if c.force {
                detail.insert("forced".into(), true.into());
                if !verdict.allowed {
                    detail.insert("forced_past".into(), serde_json::json!(refusals));
                }
            }
            if !detail.is_empty() {
                entry.detail = detail.into();
            }
            match self.store.commit(cur.version, &proposed, &entry).await {
                Ok(v) => {
                    proposed.version = v;
                    entry.version = Some(v);
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
                    tracing::info!(actor = %c.actor, action = %entry.action, version = v, "controls changed");
                    self.publish_event(&entry, services);
                    return Ok((p, true));
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

    fn publish_event(&self, entry: &AuditEntry, services: BTreeSet<String>) {
        let _ = self.events.send(Arc::new(ChangeEvent {
            entry: entry.clone(),
            services,
        }));
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

/// The services whose controls differ between two states.
pub fn services_changed(a: &Controls, b: &Controls) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = a
        .services
        .keys()
        .chain(b.services.keys())
        .filter(|s| a.services.get(*s) != b.services.get(*s))
        .cloned()
        .collect();
    if a.faults != b.faults {
        out.extend(a.faults.iter().chain(&b.faults).map(|f| f.service.clone()));
    }
    out
}
