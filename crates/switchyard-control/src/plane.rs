//! The control plane's core: one place where every change — from a person
//! through the API or from a playbook — is checked against the topology and
//! the safety rules, committed to the store (compare-and-swap on the
//! version), audited, and pushed to every watcher. Whoever else cares about
//! changes (incidents, their timelines) subscribes to the change events the
//! plane publishes; the plane calls into none of them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use switchyard_api::{FindingsView, Refusal};
use switchyard_model::ops::ApplyContext;
use switchyard_model::{Actor, AuditKind, AuditRecord, Config, Controls, Op, OpError, Origin};
use tokio::sync::broadcast;

use crate::leader::Leadership;
use crate::safety::{self, History, SafetyConfig};
use crate::store::{AuditEntry, Candidate, Store, StoreError};

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
    /// This plane's store is behind what the edges hold (an empty,
    /// restored or other store); nothing is published or changed until an
    /// admin adopts it (409).
    #[error("{0}")]
    HeldBack(String),
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
    /// The plane's own `[control]` section from its file; regions, services,
    /// edge and DNS settings from the assignment's base (see
    /// [`ControlPlane::follow_base`]).
    config: arc_swap::ArcSwap<Config>,
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
    /// What the edges' signals show, second by second, for `/v1/live`.
    pub live: Mutex<crate::live::Live>,
    /// Bounds the live streams served at once.
    pub viewers: Arc<tokio::sync::Semaphore>,
    pub metrics: crate::metrics::Metrics,
    /// Set while this plane's store is behind what the edges hold: why.
    held_back: Mutex<Option<String>>,
    /// Where the last published state is kept, to serve it when the store
    /// cannot be reached at start.
    snapshot: Option<PathBuf>,
    /// Set while what is served is that snapshot, not the store's: why.
    stale: Mutex<Option<String>>,
    /// Whether this plane is the one that acts (playbooks, incidents,
    /// notifications) among those sharing the store.
    pub leadership: Leadership,
    /// Alerts and heartbeats posted to the API, for the detection loop.
    pub ingest: tokio::sync::mpsc::UnboundedSender<Ingest>,
    pub ingest_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Ingest>>>,
    /// Which config each member runs (see [`crate::configs`]).
    pub(crate) assignment: tokio::sync::watch::Sender<Arc<crate::configs::Assignment>>,
    /// Assignments are written one at a time here; across planes, the
    /// store's compare-and-set and the leader fence serialize them.
    pub(crate) assigning: tokio::sync::Mutex<()>,
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
    /// The caller's key for this change (`Idempotency-Key`): a change with
    /// the same key and actor already accepted is not applied again.
    pub idempotency_key: Option<String>,
}

impl<S: Store> ControlPlane<S> {
    /// Opens the plane on `store`. When the store cannot be reached and a
    /// `snapshot` of the last published state exists, the plane starts on
    /// it, says so (`stale`), and takes the store's state once it answers
    /// (`sync`); without a snapshot it then publishes nothing meanwhile.
    /// `config_text` is the text of the plane's config file: the config
    /// every member runs when the store has no assignment yet.
    pub async fn new(
        config: Arc<Config>,
        config_text: String,
        safety: SafetyConfig,
        store: S,
        me: Candidate,
        snapshot: Option<PathBuf>,
    ) -> Result<Arc<Self>, StoreError> {
        let (ingest, ingest_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut stale = None;
        let mut held_back = None;
        let (current, history) = match open_state(&store).await {
            Ok(x) => x,
            Err(StoreError::Unavailable(e)) if snapshot.is_some() => {
                let path = snapshot.as_ref().expect("checked");
                match switchyard_api::lkg::load(path, &config) {
                    Ok(Some(l)) => {
                        stale = Some(format!(
                            "the store is unreachable ({e}); serving the snapshot of version {} saved {}",
                            l.controls.version,
                            switchyard_model::time::human_utc(l.saved_at_ms as i64)
                        ));
                        (
                            Published {
                                version: l.controls.version,
                                controls: l.controls,
                            },
                            History::new(),
                        )
                    }
                    Ok(None) => {
                        let why = format!(
                            "the store is unreachable ({e}) and there is no snapshot of it: nothing to publish"
                        );
                        stale = Some(why.clone());
                        held_back = Some(why);
                        (
                            Published {
                                version: 0,
                                controls: Controls::default(),
                            },
                            History::new(),
                        )
                    }
                    Err(le) => {
                        return Err(StoreError::Unavailable(format!("{e}; and {le}")));
                    }
                }
            }
            Err(e) => return Err(e),
        };
        if let Some(why) = &stale {
            tracing::error!(%why, "starting without the store");
        }
        let assignment = if stale.is_some() {
            // Revision 0: whatever the store holds supersedes it once it
            // answers (`sync_assignment`).
            crate::configs::Assignment {
                revision: 0,
                ..crate::configs::seed(&config_text)
            }
        } else {
            crate::configs::open(&store, &config_text).await?
        };
        tracing::info!(
            revision = assignment.revision,
            base = %assignment.base.version,
            own = %switchyard_model::config_version(&config_text),
            "config assignment"
        );
        let plane = Arc::new(ControlPlane {
            config: arc_swap::ArcSwap::new(config),
            safety,
            store,
            current: Mutex::new(current),
            history: Mutex::new(history),
            changes: tokio::sync::Mutex::new(()),
            tx: broadcast::channel(64).0,
            events: broadcast::channel(256).0,
            observed: Mutex::new(FindingsView::default()),
            live: Mutex::new(crate::live::Live::default()),
            viewers: Arc::new(tokio::sync::Semaphore::new(crate::api_live::MAX_VIEWERS)),
            metrics: crate::metrics::Metrics::new(),
            leadership: Leadership::new(me),
            held_back: Mutex::new(held_back),
            snapshot,
            stale: Mutex::new(stale),
            ingest,
            ingest_rx: Mutex::new(Some(ingest_rx)),
            assignment: tokio::sync::watch::channel(Arc::new(assignment.clone())).0,
            assigning: tokio::sync::Mutex::new(()),
        });
        plane.follow_base(&assignment.base);
        Ok(plane)
    }

    /// The config the plane works with now.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Takes the topology, services and data-plane settings of the config
    /// every member runs (the assignment's base: after a rollout, the new
    /// config; after a restart, what the store says rather than an older
    /// file), so safety rules, floors and reads follow what the edges run.
    /// The plane's own `[control]` section stays its file's: where it
    /// listens, its store and its tokens change only with a restart. A base
    /// that does not validate here, or that the controls in force do not
    /// fit, is logged and the config held stays.
    pub fn follow_base(&self, base: &switchyard_model::ConfigDoc) {
        let held = self.config();
        let mut next = match Config::from_toml(&base.text, |k| std::env::var(k).ok()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(version = %base.version, reasons = ?e.reasons(), "the config every member runs does not validate here; the plane keeps the one it has");
                return;
            }
        };
        next.control = held.control.clone();
        if *held == next {
            return;
        }
        if let Err(e) = self.current().controls.validate(&next) {
            tracing::error!(version = %base.version, errors = ?e.iter().map(|x| x.to_string()).collect::<Vec<_>>(), "the controls in force do not fit the config every member runs; the plane keeps the one it has");
            return;
        }
        tracing::info!(version = %base.version, "the plane follows the config every member runs");
        self.config.store(Arc::new(next));
    }

    /// Why what is served is a snapshot rather than the store's state.
    pub fn stale(&self) -> Option<String> {
        self.stale.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps the state just published as the snapshot to start from when
    /// the store is unreachable. Best effort: the store has it already.
    fn keep_snapshot(&self, p: &Published) {
        let Some(path) = &self.snapshot else {
            return;
        };
        let mut c = p.controls.clone();
        c.version = p.version;
        if let Err(e) = switchyard_api::lkg::save(path, &c, "control-plane", now_ms()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the snapshot");
        }
    }

    /// The store answers again after a start without it: its state, its
    /// identity and the rules' memory replace the snapshot's.
    async fn recover(&self) -> Result<bool, StoreError> {
        let (p, history) = open_state(&self.store).await?;
        *self.history.lock().unwrap_or_else(|e| e.into_inner()) = history;
        let was = self.stale.lock().unwrap_or_else(|e| e.into_inner()).take();
        {
            let mut h = self.held_back.lock().unwrap_or_else(|e| e.into_inner());
            if h.is_some() && *h == was {
                *h = None;
            }
        }
        tracing::warn!(
            version = p.version,
            "the store answers again; serving its state"
        );
        self.publish(p);
        Ok(true)
    }

    /// The one way a new state goes into force here: held as current, kept
    /// as the snapshot to start from, and pushed to every watcher.
    fn publish(&self, p: Published) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = p.clone();
        self.keep_snapshot(&p);
        let _ = self.tx.send(Arc::new(p));
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

    /// Instances of `service` taken out of service within the hour before
    /// `now_ms` by changes to the controls (the removal-rate rule's count).
    pub fn removed_within_hour(&self, service: &str, now_ms: u64) -> f64 {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .removed_within_hour(service, now_ms)
    }

    pub async fn history(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.history(limit).await
    }

    /// Up to `limit` audit entries after sequence number `after` whose time
    /// lies in `[since, until]`, oldest first, and the cursor to ask with
    /// next (`None`: the log ends here). At most [`SCAN_PER_PAGE`] entries
    /// are read per call, so a narrow window far back in a long log answers
    /// with a short (even empty) page and a cursor rather than a long wait.
    pub async fn history_page(
        &self,
        after: u64,
        limit: usize,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<(Vec<AuditRecord>, Option<u64>), StoreError> {
        let mut out = Vec::new();
        let mut cursor = after;
        let mut scanned = 0;
        let chunk = limit.clamp(1, 1000);
        while scanned < SCAN_PER_PAGE {
            let page = self.store.audit_page(cursor, chunk).await?;
            let ended = page.len() < chunk;
            for r in page {
                cursor = r.seq;
                scanned += 1;
                let t = r.entry.at_ms;
                if since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u) {
                    out.push(r);
                    if out.len() == limit {
                        return Ok((out, Some(cursor)));
                    }
                }
            }
            if ended {
                return Ok((out, None));
            }
        }
        Ok((out, Some(cursor)))
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
        safety::check(&self.config(), &self.safety, &h, cur, proposed, now)
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
                config: &self.config(),
                now_ms: now,
                reason: &label,
            },
            &mut proposed,
        )?;
        proposed.version = cur.version + 1;
        proposed
            .validate(&self.config())
            .map_err(|e| ChangeError::Invalid(e.iter().map(|x| x.to_string()).collect()))?;
        Ok(proposed)
    }

    /// Records a playbook's recommendation or verification: an audit entry
    /// that changes nothing, published like a change.
    pub async fn record(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let services = entry
            .op
            .as_ref()
            .and_then(|o| o.service())
            .map(str::to_string)
            .into_iter()
            .collect();
        self.record_for(entry, services).await
    }

    /// [`ControlPlane::record`] of an entry without an operation that
    /// concerns `services` (a rollout's step): their incidents' timelines
    /// get it.
    pub async fn record_for(
        &self,
        entry: AuditEntry,
        services: BTreeSet<String>,
    ) -> Result<(), StoreError> {
        self.store.append_audit(&entry).await?;
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
        if let Some(why) = self.held_back() {
            return Err(ChangeError::HeldBack(why));
        }
        let _one_at_a_time = self.changes.lock().await;
        for attempt in 0..3 {
            if let Some(key) = &c.idempotency_key {
                if let Some(version) = self.applied_before(key, &c.actor).await? {
                    // Already applied (an earlier try whose answer was lost):
                    // answered as unchanged, with the version it made.
                    let mut cur = self.current();
                    cur.version = cur.version.max(version);
                    return Ok((cur, false));
                }
            }
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
            // The operation says what was asked, not what it did to the
            // controls (a whole document least of all): the entry says
            // that too, leaf by leaf, for every change, accepted or refused.
            let mut detail = serde_json::Map::new();
            detail.insert("diff".into(), cur.controls.diff(&proposed).into());
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
            // What the rules remember of it, committed with it.
            let effects = safety::Effects::of(&self.config(), &cur.controls, &proposed, now);
            detail.insert("safety".into(), serde_json::json!(effects));
            // Force is recorded whenever it is asked for, not only when a
            // rule had to be overridden: who holds the override and uses it
            // is worth knowing either way.
            if c.force {
                detail.insert("forced".into(), true.into());
                if !verdict.allowed {
                    detail.insert("forced_past".into(), serde_json::json!(refusals));
                }
            }
            if let Some(key) = &c.idempotency_key {
                detail.insert(IDEMPOTENCY_KEY.into(), key.clone().into());
            }
            entry.detail = detail.into();
            match self.store.commit(cur.version, &proposed, &entry).await {
                Ok(v) => {
                    proposed.version = v;
                    entry.version = Some(v);
                    self.history
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .apply(&effects, now);
                    let p = Published {
                        version: v,
                        controls: proposed,
                    };
                    self.publish(p.clone());
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

    /// The version an accepted change by `actor` with idempotency `key`
    /// made, if one is among the recent audit entries. Read from the store,
    /// so a retry through another plane finds it too.
    async fn applied_before(&self, key: &str, actor: &Actor) -> Result<Option<u64>, StoreError> {
        let entries = self.store.history(IDEMPOTENCY_WINDOW).await?;
        Ok(entries
            .iter()
            .rev()
            .find(|e| {
                e.accepted
                    && e.kind == AuditKind::Change
                    && e.actor == *actor
                    && e.detail.get(IDEMPOTENCY_KEY).and_then(|k| k.as_str()) == Some(key)
            })
            .and_then(|e| e.version))
    }

    /// Why this plane neither publishes nor changes anything, if it does not.
    pub fn held_back(&self) -> Option<String> {
        self.held_back
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn hold_back(&self, why: String) {
        tracing::error!(%why, "this control plane publishes nothing until its store is adopted");
        *self.held_back.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// An admin's adoption: this store's controls are the truth, over the
    /// stores the edges hold (`over`). When the edges hold a newer state of
    /// this very store (a restored backup), the store takes a new identity
    /// that supersedes its old one, since versions only count within one.
    /// Audited, and published to every watcher.
    pub async fn adopt(
        &self,
        actor: Actor,
        over: Vec<String>,
        renew: bool,
    ) -> Result<Published, ChangeError> {
        let _one_at_a_time = self.changes.lock().await;
        let cur = self.current();
        let mut origin = cur.controls.origin.clone().unwrap_or_default();
        if renew {
            origin.supersedes.push(origin.store.clone());
            origin.store = fresh_store_id();
        }
        for o in over {
            if o != origin.store && !origin.supersedes.contains(&o) {
                origin.supersedes.push(o);
            }
        }
        let mut controls = cur.controls.clone();
        controls.origin = Some(origin.clone());
        controls.version = cur.version + 1;
        let mut entry = AuditEntry::note(
            now_ms(),
            actor,
            AuditKind::Change,
            Op::Replace {
                controls: controls.clone(),
            },
            format!(
                "adopted store {} over {}: its controls replace what the edges hold",
                origin.store,
                origin.supersedes.join(", ")
            ),
        );
        entry.action = "adopt this control plane's store".into();
        entry.accepted = true;
        entry.detail = serde_json::json!({ "diff": cur.controls.diff(&controls) });
        self.store
            .put_doc(
                META,
                ORIGIN,
                &serde_json::to_value(&origin).expect("serializable"),
            )
            .await?;
        let v = self.store.commit(cur.version, &controls, &entry).await?;
        controls.version = v;
        let p = Published {
            version: v,
            controls,
        };
        *self.held_back.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.publish(p.clone());
        entry.version = Some(v);
        self.publish_event(&entry, BTreeSet::new());
        tracing::warn!(store = %origin.store, "store adopted over what the edges held");
        Ok(p)
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
        if self.stale().is_some() {
            return self.recover().await;
        }
        let Some(s) = self.store.load().await? else {
            return Ok(false);
        };
        let cur = self.current();
        if s.version == cur.version {
            return Ok(false);
        }
        let mut p = Published {
            version: s.version,
            controls: s.controls,
        };
        // An adoption by another plane changes the origin with a version.
        p.controls.origin = Some(read_origin(&self.store).await?);
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&self.config(), &cur.controls, &p.controls, now_ms());
        self.publish(p);
        Ok(true)
    }
}

/// The store's state as a plane starts on it: the controls with the
/// store's identity, and what the safety rules remember.
async fn open_state<S: Store>(store: &S) -> Result<(Published, History), StoreError> {
    let loaded = store.load().await?;
    let origin = load_origin(store).await?;
    let history = remembered(store).await?;
    let mut p = match loaded {
        Some(s) => Published {
            version: s.version,
            controls: s.controls,
        },
        None => Published {
            version: 0,
            controls: Controls::default(),
        },
    };
    p.controls.origin = Some(origin);
    Ok((p, history))
}

/// Where a change's idempotency key is kept in its audit entry.
const IDEMPOTENCY_KEY: &str = "idempotency_key";
/// Recent audit entries searched for a key: enough for retries of a change
/// whose answer was lost, which come seconds later.
const IDEMPOTENCY_WINDOW: usize = 1_000;

/// How many audit entries one history page reads at most.
pub const SCAN_PER_PAGE: usize = 50_000;

/// Audit entries read back at start to rebuild what the safety rules
/// remember; more accepted changes than this within the hour is far beyond
/// any rate the rules allow.
const REMEMBER_ENTRIES: usize = 10_000;

/// What the safety rules remember of the last hour, rebuilt from the
/// effects each accepted change carries in its audit entry: a restart or a
/// new leader grants no fresh removal budget and no early flip.
async fn remembered<S: Store>(store: &S) -> Result<History, StoreError> {
    let mut h = History::new();
    let now = now_ms();
    for e in store.history(REMEMBER_ENTRIES).await? {
        if !e.accepted || now.saturating_sub(e.at_ms) >= safety::HOUR_MS {
            continue;
        }
        if let Some(effects) = e
            .detail
            .get("safety")
            .and_then(|v| serde_json::from_value::<safety::Effects>(v.clone()).ok())
        {
            h.apply(&effects, e.at_ms);
        }
    }
    h.prune(now);
    Ok(h)
}

/// Where the store's identity is kept, among the documents.
const META: &str = "meta";
const ORIGIN: &str = "origin";

fn fresh_store_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The store's identity, made on first use; planes starting together on an
/// empty store all get the one that was created first.
async fn load_origin<S: Store>(store: &S) -> Result<Origin, StoreError> {
    let fresh = Origin {
        store: fresh_store_id(),
        supersedes: Vec::new(),
    };
    let v = store
        .create_doc(
            META,
            ORIGIN,
            &serde_json::to_value(&fresh).expect("serializable"),
        )
        .await?;
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("{META}/{ORIGIN}: {e}")))
}

/// The store's identity once made (at start, by [`load_origin`]): a plain
/// read, where making it would be a write to the store on every sync.
async fn read_origin<S: Store>(store: &S) -> Result<Origin, StoreError> {
    match store.get_doc(META, ORIGIN).await? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| StoreError::Corrupt(format!("{META}/{ORIGIN}: {e}"))),
        None => load_origin(store).await,
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
