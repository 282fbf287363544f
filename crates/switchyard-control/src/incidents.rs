//! Incidents inside the control plane: the tracker fed by detection and by
//! every control change (followed from the plane's change events), persisted in the store (an incident and its
//! timeline survive kill -9), and notifications routed, grouped, silenced
//! and delivered with every attempt written into the incident's timeline;
//! firing incidents are re-sent to Alertmanager receivers so it does not
//! resolve them on its own.
//!
//! The store holds the one shared copy of every incident; the leader's
//! tracker works on copies and writes them back by compare-and-set on the
//! revision it read, fenced to the leadership (`Store::put_doc_if` with
//! `Fence::Leader`). When the store's copy changed meanwhile it wins over
//! the tracker's; a plane that no longer leads writes nothing and lets its
//! copies go.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use switchyard_incident::{Incident, Status, Tracker, TrackerConfig};
use switchyard_model::{AuditKind, Config};
use switchyard_notify::{Grouper, NotifyConfig, Resender, Silence};

use crate::plane::ControlPlane;
use crate::store::{DocRev, Fence, Store, StoreError};

pub const INCIDENT: &str = "incident";
pub const SILENCE: &str = "silence";

pub struct Incidents {
    pub tracker: Mutex<Tracker>,
    pub notify: NotifyConfig,
    grouper: Mutex<Grouper>,
    resender: Mutex<Resender>,
    /// The store revision of each incident as last read or written here:
    /// what the next write of it expects to find.
    revs: Mutex<BTreeMap<String, u64>>,
    /// One write-back at a time: two at once would each expect the same
    /// revision and the second would take its own plane's write for
    /// another's. Also held from a change by hand to its own write-back
    /// ([`ByHand`]).
    writing: tokio::sync::Mutex<()>,
}

/// What one write-back did: only a change by hand ([`ByHand::write`])
/// asks which incidents it wrote.
#[derive(Debug, Default)]
struct Persisted {
    /// The incidents written.
    written: Vec<String>,
    /// Incidents whose store copy had changed meanwhile: that copy replaced
    /// the one held here, and the change made here was not written.
    superseded: Vec<String>,
}

/// One write-back, to its end or to the first failure.
struct WriteBack {
    done: Persisted,
    /// The failure that ended it early, and the incidents it left
    /// unwritten: dropped when this plane no longer leads, else still to
    /// be written.
    stopped: Option<(StoreError, Vec<String>)>,
}

/// Why a change made by hand (see [`Incidents::by_hand`]) is not stored.
#[derive(Debug, thiserror::Error)]
pub enum Unwritten {
    /// The store's copy changed meanwhile and replaced the one held: the
    /// change is gone.
    #[error("the incident changed in the store meanwhile; its copy replaced this plane's")]
    Superseded,
    /// The store refused or failed the write: on `NotLeader` the change is
    /// gone, otherwise it stays to be written with the next write-back.
    #[error(transparent)]
    Store(StoreError),
    /// The tracker let the incident go before it was written (this plane
    /// stopped acting, or the incident left the recently resolved ones it
    /// keeps): the change is gone.
    #[error("this control plane let the incident go before writing it (it stopped acting)")]
    LetGo,
}

/// A change by hand to the incidents the tracker holds, and then its
/// write-back. While this is held no other write-back runs: one running
/// between the change and its own would take the change with what it
/// writes, and its failure (the store's copy winning, this plane no longer
/// leading) would drop the change after nobody is left to tell — the change
/// would be answered as made and be lost. Written here, its outcome is the
/// change's.
pub struct ByHand<'a> {
    incidents: &'a Incidents,
    _writing: tokio::sync::MutexGuard<'a, ()>,
}

impl ByHand<'_> {
    pub fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.incidents.lock()
    }

    /// Writes back what changed, and says whether the change to `id` is
    /// in the store.
    pub async fn write<S: Store>(self, plane: &ControlPlane<S>, id: &str) -> Result<(), Unwritten> {
        let back = self.incidents.write_back(plane).await;
        if back.done.written.iter().any(|x| x == id) {
            return Ok(());
        }
        if back.done.superseded.iter().any(|x| x == id) {
            return Err(Unwritten::Superseded);
        }
        match back.stopped {
            Some((e, unwritten)) if unwritten.iter().any(|x| x == id) => Err(Unwritten::Store(e)),
            // Not among the changed ones at all: nothing else took it (this
            // write-back is the only one since the change), so the tracker
            // let it go.
            _ => Err(Unwritten::LetGo),
        }
    }
}

/// What people are told about an incident at one moment; `urgent` pages
/// without waiting for the group interval.
pub fn notice(
    i: &Incident,
    event: &str,
    at_ms: u64,
    urgent: bool,
    base_url: &str,
) -> switchyard_notify::Notice {
    let started = i
        .stages
        .get(&switchyard_incident::Stage::Occurred)
        .copied()
        .unwrap_or(i.created_ms);
    switchyard_notify::Notice {
        incident_id: i.id.clone(),
        service: i.service.clone(),
        severity: i.severity,
        status: i.status.as_str().into(),
        title: i.title.clone(),
        summary: format!(
            "{} — {}; {:.1} % of traffic ({}), {} failed requests; {}",
            i.scopes.join(", "),
            i.severity_reason,
            i.impact.traffic_share * 100.0,
            if i.impact.routes.is_empty() {
                "no route failing".to_string()
            } else {
                i.impact.routes.join(", ")
            },
            i.impact.failed,
            i.status
        ),
        scopes: i.scopes.clone(),
        event: event.into(),
        at_ms,
        started_at_ms: started,
        ended_at_ms: (i.status == Status::Resolved).then_some(i.updated_ms),
        url: Some(format!("{base_url}/v1/incidents/{}", i.id)),
        urgent,
        acknowledged: i
            .stages
            .contains_key(&switchyard_incident::Stage::Acknowledged),
    }
}

impl Incidents {
    pub fn new(config: &Config, tracker: TrackerConfig, notify: NotifyConfig) -> Incidents {
        let zone_region: BTreeMap<String, String> = config
            .regions
            .iter()
            .flat_map(|r| {
                r.zones
                    .iter()
                    .map(move |z| (z.name.clone(), r.name.clone()))
            })
            .collect();
        let critical = config
            .services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.routes
                        .iter()
                        .filter(|r| r.priority == switchyard_model::Priority::Critical)
                        .map(|r| r.name.clone())
                        .collect(),
                )
            })
            .collect();
        let grouper = Grouper::with_interval(notify.group_wait_ms, notify.group_interval_ms);
        Incidents {
            tracker: Mutex::new(Tracker::new(tracker, zone_region, critical)),
            notify,
            grouper: Mutex::new(grouper),
            resender: Mutex::new(Resender::new()),
            revs: Mutex::new(BTreeMap::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    fn revs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.revs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes back what the store holds after a (re)start or at a takeover.
    pub async fn restore<S: Store>(&self, store: &S) -> Result<usize, StoreError> {
        let _writing = self.writing.lock().await;
        let docs = store.list_docs_rev(INCIDENT).await?;
        let mut all = Vec::new();
        let mut revs = BTreeMap::new();
        for (id, d) in docs {
            match serde_json::from_value::<Incident>(d.body) {
                Ok(i) => {
                    revs.insert(i.id.clone(), d.rev);
                    all.push(i);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "unreadable incident in the store, skipped")
                }
            }
        }
        let open = all.iter().filter(|i| i.status != Status::Resolved).count();
        let mut t = self.lock();
        for i in &all {
            t.know_id(&i.id);
        }
        t.restore(all);
        *self.revs() = revs;
        Ok(open)
    }

    /// Writes every changed incident back, each only over the revision it
    /// was read at and only while this plane leads. A copy changed in the
    /// store meanwhile replaces the one held (and is counted); once the
    /// store says this plane no longer leads, nothing more is written and
    /// nothing stays to be written.
    pub async fn persist<S: Store>(&self, plane: &ControlPlane<S>) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        match self.write_back(plane).await.stopped {
            Some((e, _)) => Err(e),
            None => Ok(()),
        }
    }

    /// Holds off every other write-back for a change by hand and its own
    /// write-back ([`ByHand`]).
    pub async fn by_hand(&self) -> ByHand<'_> {
        ByHand {
            incidents: self,
            _writing: self.writing.lock().await,
        }
    }

    /// [`Incidents::persist`]'s work; the caller holds `writing`.
    async fn write_back<S: Store>(&self, plane: &ControlPlane<S>) -> WriteBack {
        let store = plane.store();
        let dirty = self.lock().take_dirty();
        let mut out = Persisted::default();
        for (n, i) in dirty.iter().enumerate() {
            let body = serde_json::to_value(i).expect("serializable");
            let expected = self.revs().get(&i.id).copied();
            let failed = match store
                .put_doc_if(INCIDENT, &i.id, &body, expected, Fence::Leader)
                .await
            {
                Ok(rev) => {
                    self.revs().insert(i.id.clone(), rev);
                    out.written.push(i.id.clone());
                    continue;
                }
                Err(StoreError::DocConflict { found, .. }) => {
                    tracing::warn!(
                        incident = %i.id, ?expected, ?found,
                        "the incident changed in the store meanwhile: the store's copy replaces this plane's"
                    );
                    plane.metrics.incident_conflicts.inc();
                    match store.get_doc_rev(INCIDENT, &i.id).await {
                        Ok(stored) => {
                            self.take_stored(&i.id, stored);
                            out.superseded.push(i.id.clone());
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Err(e @ StoreError::NotLeader(_)) => {
                    tracing::warn!(error = %e, dropped = dirty.len() - n, "no longer the leader: incident changes not written");
                    e
                }
                Err(e) => e,
            };
            let unwritten: Vec<String> = dirty[n..].iter().map(|i| i.id.clone()).collect();
            if !matches!(failed, StoreError::NotLeader(_)) {
                // Not written: try these again next time.
                let mut t = self.lock();
                for id in &unwritten {
                    t.mark_dirty(id);
                }
            }
            return WriteBack {
                done: out,
                stopped: Some((failed, unwritten)),
            };
        }
        WriteBack {
            done: out,
            stopped: None,
        }
    }

    /// The store's copy of `id` (`None`: gone) in place of the one held.
    fn take_stored(&self, id: &str, stored: Option<DocRev>) {
        let parsed = stored.map(|d| (d.rev, serde_json::from_value::<Incident>(d.body)));
        match parsed {
            Some((rev, Ok(i))) => {
                self.revs().insert(id.to_string(), rev);
                self.lock().replace(i);
            }
            Some((_, Err(e))) => {
                tracing::warn!(incident = %id, error = %e, "unreadable incident in the store: no longer tracked");
                self.revs().remove(id);
                self.lock().forget(id);
            }
            None => {
                self.revs().remove(id);
                self.lock().forget(id);
            }
        }
    }

    /// This plane stopped acting: its copies of the incidents, what was
    /// still to be written, told or re-sent go; reads come from the store
    /// and the next takeover restores from it.
    pub fn step_down(&self) {
        self.lock().let_go();
        self.revs().clear();
        *self.grouper.lock().unwrap_or_else(|e| e.into_inner()) =
            Grouper::with_interval(self.notify.group_wait_ms, self.notify.group_interval_ms);
        *self.resender() = Resender::new();
    }

    pub async fn silences<S: Store>(&self, store: &S) -> Vec<Silence> {
        let mut out = self.notify.static_silences();
        match store.list_docs(SILENCE).await {
            Ok(docs) => out.extend(
                docs.into_iter()
                    .filter_map(|(_, v)| serde_json::from_value(v).ok()),
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read silences; using the static ones"),
        }
        out
    }

    /// The last message about `id` reached nobody: the next need not wait
    /// for the group interval.
    pub fn untold(&self, id: &str) {
        self.grouper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .untold(id);
    }

    fn resender(&self) -> std::sync::MutexGuard<'_, Resender> {
        self.resender.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the tracker's notices, and hands back the groups that are due.
    pub fn due_notices(&self, base_url: &str, now_ms: u64) -> Vec<switchyard_notify::Grouped> {
        let notices = self.lock().take_notices();
        let mut g = self.grouper.lock().unwrap_or_else(|e| e.into_inner());
        for n in notices {
            g.push(
                notice(&n.incident, &n.event, n.at_ms, n.urgent, base_url),
                now_ms,
            );
        }
        g.due(now_ms)
    }
}

/// Writes every change the plane makes or refuses into the timelines of the
/// open incidents of the services it touches, until the plane is gone.
pub async fn follow_changes<S: Store + 'static>(
    plane: Arc<ControlPlane<S>>,
    incidents: Arc<Incidents>,
) {
    let mut events = plane.change_events();
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "incidents fell behind the control plane's changes"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let e = &ev.entry;
        // Only the leader tracks incidents (and may write them).
        if !matches!(e.kind, AuditKind::Change | AuditKind::Rollout)
            || ev.services.is_empty()
            || !plane.leadership.acting(crate::plane::now_ms())
        {
            continue;
        }
        {
            let mut t = incidents.lock();
            for svc in &ev.services {
                t.on_change(svc, e);
            }
        }
        if let Err(err) = incidents.persist(&plane).await {
            tracing::warn!(error = %err, "cannot store the incidents' timelines");
        }
    }
}

/// Routes and delivers one grouped message, writing every attempt (and a
/// silence, when one holds it back) into the incident's timeline.
pub async fn deliver<S: Store + 'static>(
    plane: Arc<ControlPlane<S>>,
    incidents: Arc<Incidents>,
    grouped: switchyard_notify::Grouped,
) {
    let now = crate::plane::now_ms();
    let silences = incidents.silences(plane.store()).await;
    let routed = switchyard_notify::route(&incidents.notify, &grouped.notice, &silences, now);
    let id = grouped.notice.incident_id.clone();
    if let Some(s) = &routed.silenced_by {
        incidents.lock().on_attempt(
            &id,
            "silence",
            false,
            now,
            format!("not sent: silenced by {s}"),
            json!({"silence": s}),
        );
        incidents.untold(&id);
        // A silence promises quiet: Alertmanager may let the alert lapse.
        incidents.resender().forget(&id);
        return;
    }
    if routed.receivers.is_empty() {
        incidents.untold(&id);
        return;
    }
    incidents
        .resender()
        .sent(&incidents.notify, &grouped, &routed.receivers, now);
    send(
        &plane,
        &incidents,
        &grouped,
        &routed.receivers,
        Record::Every,
    )
    .await;
}

/// Which attempts go into the timeline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    Every,
    /// A routine re-send: a line a minute per incident would bury the
    /// timeline, so only failures are written (all are counted).
    Failures,
}

async fn send<S: Store + 'static>(
    plane: &Arc<ControlPlane<S>>,
    incidents: &Arc<Incidents>,
    grouped: &switchyard_notify::Grouped,
    receivers: &[String],
    record: Record,
) {
    let id = grouped.notice.incident_id.clone();
    let cfg = incidents.notify.clone();
    let (p, inc) = (plane.clone(), incidents.clone());
    let deliveries = switchyard_notify::deliver(&cfg, grouped, receivers, |a| {
        let resent = if record == Record::Failures {
            "re-send "
        } else {
            ""
        };
        let text = match (&a.status, &a.error) {
            (_, Some(e)) => format!("{resent}attempt {} failed: {e}", a.attempt),
            (Some(s), None) if a.ok => format!("delivered (attempt {}, HTTP {s})", a.attempt),
            (Some(s), None) => format!("attempt {} answered HTTP {s}", a.attempt),
            (None, None) if a.ok => format!("delivered (attempt {})", a.attempt),
            (None, None) => format!("attempt {}", a.attempt),
        };
        if record == Record::Every || !a.ok {
            inc.lock().on_attempt(
                &id,
                &a.receiver,
                a.ok,
                a.at_ms,
                text,
                serde_json::to_value(a).unwrap_or_default(),
            );
        }
        p.metrics
            .notifications
            .get_or_create(&crate::metrics::NotifyLabels {
                receiver: a.receiver.clone(),
                result: if a.ok {
                    "delivered".into()
                } else {
                    "failed".into()
                },
            })
            .inc();
    })
    .await;
    for d in deliveries.iter().filter(|d| !d.delivered) {
        tracing::warn!(incident = %id, receiver = %d.receiver, attempts = d.attempts.len(), "notification not delivered");
    }
    if let Err(e) = incidents.persist(plane).await {
        tracing::warn!(error = %e, "cannot store the incident's delivery attempts");
    }
}

/// Sends firing incidents again to the receivers that ask for it
/// (Alertmanager's `resend_ms`), once a second looking for what is due,
/// until the plane is gone. A re-send is routed again first, so a silence
/// or a route changed since still holds.
pub async fn resend<S: Store + 'static>(plane: Arc<ControlPlane<S>>, incidents: Arc<Incidents>) {
    if !incidents
        .notify
        .receivers
        .iter()
        .any(|r| r.resend_every_ms().is_some())
    {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = crate::plane::now_ms();
        let due = incidents.resender().due(&incidents.notify, now);
        if due.is_empty() {
            continue;
        }
        let silences = incidents.silences(plane.store()).await;
        for (grouped, receiver) in due {
            let routed =
                switchyard_notify::route(&incidents.notify, &grouped.notice, &silences, now);
            if routed.silenced_by.is_some() {
                incidents.resender().forget(&grouped.notice.incident_id);
                continue;
            }
            if !routed.receivers.contains(&receiver) {
                continue;
            }
            let (p, inc) = (plane.clone(), incidents.clone());
            tokio::spawn(async move {
                send(&p, &inc, &grouped, &[receiver], Record::Failures).await;
            });
        }
    }
}
