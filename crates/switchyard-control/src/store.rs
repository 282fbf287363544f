//! Where the control plane keeps its state: the current controls with a
//! version, and the audit log. Two backends pass the same conformance suite:
//! a local SQLite file (the default; an acknowledged change survives kill -9)
//! and etcd (several control planes share state through a real cluster).

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_model::{AuditRecord, Controls};

pub mod etcd;
pub mod sqlite;

pub use switchyard_model::AuditEntry;

/// The controls as stored, with the version they were stored under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub version: u64,
    pub controls: Controls,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else (another control plane) changed the controls first.
    #[error("the controls changed meanwhile: expected version {expected}, found {found}")]
    Conflict { expected: u64, found: u64 },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but not confirmed: it may or may not have been
    /// applied. Retrying it with the same idempotency key is safe.
    #[error("the store did not confirm the write: {0}")]
    Unknown(String),
    #[error("store holds data it cannot read: {0}")]
    Corrupt(String),
    /// A restore goes only into an empty store; this names what is there.
    #[error("the store is not empty ({0}); a restore goes only into an empty store")]
    NotEmpty(String),
    /// A document changed since it was read (`None`: absent): someone else
    /// wrote it first, and nothing was written.
    #[error("{kind}/{id} changed meanwhile: expected {}, found {}", rev_text(*expected), rev_text(*found))]
    DocConflict {
        kind: String,
        id: String,
        expected: Option<u64>,
        found: Option<u64>,
    },
    /// A write fenced to the leader came from a plane that no longer holds
    /// the leadership in the store (its lease expired or was revoked while
    /// it stalled); nothing was written.
    #[error("this control plane no longer leads: the store refused its write of {0}")]
    NotLeader(String),
    /// A versioned document (the config assignment) was offered with a
    /// revision that is not the next one after what is stored: it would
    /// go back, or skip; nothing was written.
    #[error(
        "{what}: revision {given} is not the next one after revision {current}; nothing changed"
    )]
    NotNext {
        what: String,
        current: u64,
        given: u64,
    },
}

fn rev_text(rev: Option<u64>) -> String {
    match rev {
        Some(r) => format!("revision {r}"),
        None => "no document".into(),
    }
}

/// A document's body with the revision it was stored under: what
/// [`Store::put_doc_if`] compares against. Revisions of one document only
/// grow; nothing else about them is promised (etcd's are global).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRev {
    pub rev: u64,
    pub body: serde_json::Value,
}

/// Whether a conditional write must also come from the elected leader.
/// Incidents have one writer, the leader; a plane that stalled past its
/// lease must not overwrite what the next leader wrote meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Only the document's revision is compared.
    None,
    /// The write also needs this store handle's campaign to still hold the
    /// leadership, checked in the same atomic step as the write (else
    /// [`StoreError::NotLeader`]). A store only one plane can use (a local
    /// file) always leads.
    Leader,
}

/// One document as stored: `kind`/`id` and its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub kind: String,
    pub id: String,
    pub body: serde_json::Value,
}

/// Everything a store holds, read at one instant: what a backup carries and
/// a restore puts back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    /// `None` before the first commit.
    pub controls: Option<Stored>,
    /// Oldest first.
    pub audit: Vec<AuditRecord>,
    /// Ordered by kind, then id; the store's identity (`meta/origin`) among them.
    pub docs: Vec<Doc>,
}

impl Dump {
    /// What a store holds, in words, for a refusal: `controls at version 3,
    /// 12 audit entries, documents meta/origin, incident/i-1`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.controls {
            parts.push(format!("controls at version {}", c.version));
        }
        if !self.audit.is_empty() {
            parts.push(format!("{} audit entries", self.audit.len()));
        }
        if !self.docs.is_empty() {
            let names: Vec<String> = self
                .docs
                .iter()
                .take(10)
                .map(|d| format!("{}/{}", d.kind, d.id))
                .collect();
            let more = self.docs.len().saturating_sub(names.len());
            parts.push(format!(
                "documents {}{}",
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }

    pub fn is_empty(&self) -> bool {
        self.controls.is_none() && self.audit.is_empty() && self.docs.is_empty()
    }
}

/// Told how many audit entries a long backup or restore has handled so far.
pub type Progress<'a> = &'a (dyn Fn(usize) + Send + Sync);

impl StoreError {
    /// Whether trying again may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. }
                | StoreError::DocConflict { .. }
                | StoreError::Unavailable(_)
                | StoreError::Unknown(_)
        )
    }
}

/// A control plane standing for election: its id (unique per process) and
/// the URL its API answers on, for the others to send incident changes to.
pub use switchyard_api::PlaneRef as Candidate;

/// The outcome of one round of election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// This plane holds the leadership now.
    pub leading: bool,
    /// Who does, when known.
    pub leader: Option<Candidate>,
}

/// A backend. `commit` is a compare-and-swap on the version, so two control
/// planes sharing a store can never both apply a change made from the same
/// state: one of them gets a conflict and re-checks its change.
// The futures are declared `Send` so the API can run them on any worker.
pub trait Store: Send + Sync {
    /// The current controls, or `None` before the first commit.
    fn load(&self) -> impl Future<Output = Result<Option<Stored>, StoreError>> + Send;
    /// Stores `controls` as version `expected + 1` and appends `audit` (with
    /// that version), atomically, if the stored version is still `expected`
    /// (0 when nothing is stored yet). Returns the new version once durable.
    fn commit(
        &self,
        expected: u64,
        controls: &Controls,
        audit: &AuditEntry,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Appends an audit entry that changed nothing (a refusal).
    fn append_audit(
        &self,
        entry: &AuditEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The last `limit` audit entries, oldest first.
    fn history(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;
    /// Up to `limit` audit entries after sequence number `after` (0: from
    /// the first), oldest first, each with its sequence number: pages that
    /// never skip or repeat an entry however many are appended meanwhile.
    fn audit_page(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;
    /// Everything the store holds, as of one instant (one read transaction,
    /// one etcd revision), so a backup is never half of one change.
    fn dump(&self, progress: Progress<'_>)
        -> impl Future<Output = Result<Dump, StoreError>> + Send;
    /// Puts `dump` into this store, which must be empty (else
    /// [`StoreError::NotEmpty`] naming what is there, and nothing changes).
    /// Versions and the store's identity are kept, so edges holding a newer
    /// state of the same store still refuse to go back to it.
    fn restore(
        &self,
        dump: &Dump,
        progress: Progress<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Puts a document (an incident, a silence) as `kind`/`id`, replacing
    /// any there; returns once durable.
    fn put_doc(
        &self,
        kind: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A document with its revision.
    fn get_doc_rev(
        &self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<DocRev>, StoreError>> + Send;
    /// Every document of `kind` with its revision, ordered by id.
    fn list_docs_rev(
        &self,
        kind: &str,
    ) -> impl Future<Output = Result<Vec<(String, DocRev)>, StoreError>> + Send;
    /// Puts `body` as `kind`/`id` only if the stored revision is still
    /// `expected` (`None`: only if no document is there) and, with
    /// [`Fence::Leader`], only while this plane leads, in one atomic step.
    /// Returns the new revision; else [`StoreError::DocConflict`] with the
    /// revision found, or [`StoreError::NotLeader`], and nothing changes.
    fn put_doc_if(
        &self,
        kind: &str,
        id: &str,
        body: &serde_json::Value,
        expected: Option<u64>,
        fence: Fence,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    fn get_doc(
        &self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, StoreError>> + Send {
        async move { Ok(self.get_doc_rev(kind, id).await?.map(|d| d.body)) }
    }
    /// Every document of `kind`, ordered by id.
    fn list_docs(
        &self,
        kind: &str,
    ) -> impl Future<Output = Result<Vec<(String, serde_json::Value)>, StoreError>> + Send {
        async move {
            Ok(self
                .list_docs_rev(kind)
                .await?
                .into_iter()
                .map(|(id, d)| (id, d.body))
                .collect())
        }
    }
    /// Puts `body` as `kind`/`id` only if no document is there; returns the
    /// document as stored (the one already there, or `body`), so planes
    /// racing to create one all end up with the same.
    fn create_doc(
        &self,
        kind: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> impl Future<Output = Result<serde_json::Value, StoreError>> + Send;
    /// Removes a document; removing one that is not there is not an error.
    fn delete_doc(
        &self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// One round of the election among the control planes sharing this
    /// store: become or stay the leader for `ttl`, or learn who is. A store
    /// that only one plane can use (a local file) makes it the leader.
    fn campaign(
        &self,
        me: &Candidate,
        _ttl: Duration,
    ) -> impl Future<Output = Result<Term, StoreError>> + Send {
        let me = me.clone();
        async move {
            Ok(Term {
                leading: true,
                leader: Some(me),
            })
        }
    }
    /// Gives the leadership up at once (a clean shutdown), so another plane
    /// need not wait for it to expire.
    fn resign(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

/// The suite both backends must pass; tests call it with a fresh store.
pub mod conformance {
    use super::*;

    /// An audit entry whose content the suite checks comes back unchanged.
    pub fn entry(action: &str, accepted: bool) -> AuditEntry {
        AuditEntry {
            at_ms: 1,
            actor: switchyard_model::Actor::person("test"),
            kind: switchyard_model::AuditKind::Change,
            op: Some(switchyard_model::Op::ShedLevel {
                service: "catalog".into(),
                level: 1,
            }),
            action: action.into(),
            reason: "conformance".into(),
            accepted,
            rule: (!accepted).then(|| "some-rule".into()),
            version: None,
            detail: serde_json::json!({"k": 1}),
            check: None,
        }
    }

    /// Runs every check; panics with the first that fails.
    pub async fn run<S: Store>(s: &S) {
        assert_eq!(s.load().await.unwrap(), None, "a fresh store is empty");
        let mut c = Controls::default();
        c.services.entry("catalog".into()).or_default().read_only = true;
        let v1 = s.commit(0, &c, &entry("read-only on", true)).await.unwrap();
        assert_eq!(v1, 1);
        let got = s.load().await.unwrap().unwrap();
        assert_eq!(got.version, 1);
        assert!(got.controls.services["catalog"].read_only);

        // A commit from a stale version is refused and changes nothing.
        let mut c2 = c.clone();
        c2.services.get_mut("catalog").unwrap().shed_level = 2;
        match s.commit(0, &c2, &entry("stale", true)).await {
            Err(StoreError::Conflict {
                expected: 0,
                found: 1,
            }) => {}
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(
            s.load().await.unwrap().unwrap().controls.services["catalog"].shed_level,
            0
        );

        let v2 = s.commit(1, &c2, &entry("shed 2", true)).await.unwrap();
        assert_eq!(v2, 2);
        s.append_audit(&entry("refused thing", false))
            .await
            .unwrap();
        let h = s.history(10).await.unwrap();
        let actions: Vec<&str> = h.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, vec!["read-only on", "shed 2", "refused thing"]);
        assert_eq!(h[0].version, Some(1));
        assert_eq!(h[1].version, Some(2));
        assert_eq!(h[2].rule.as_deref(), Some("some-rule"));
        assert_eq!(h[2].version, None);
        assert_eq!(s.history(2).await.unwrap().len(), 2, "the newest two");
        assert_eq!(s.history(2).await.unwrap()[1].action, "refused thing");

        // Documents: put replaces, kinds do not mix, list is ordered by id.
        assert_eq!(s.get_doc("incident", "a").await.unwrap(), None);
        s.put_doc("incident", "b", &serde_json::json!({"n": 1}))
            .await
            .unwrap();
        s.put_doc("incident", "a", &serde_json::json!({"n": 2}))
            .await
            .unwrap();
        s.put_doc("incident", "a", &serde_json::json!({"n": 3}))
            .await
            .unwrap();
        s.put_doc("silence", "a", &serde_json::json!({"s": true}))
            .await
            .unwrap();
        assert_eq!(
            s.get_doc("incident", "a").await.unwrap(),
            Some(serde_json::json!({"n": 3}))
        );
        let ids: Vec<String> = s
            .list_docs("incident")
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
        // Created once: the second creation gets the first's document.
        let first = s
            .create_doc("meta", "origin", &serde_json::json!({"n": 1}))
            .await
            .unwrap();
        let second = s
            .create_doc("meta", "origin", &serde_json::json!({"n": 2}))
            .await
            .unwrap();
        assert_eq!(
            (first.clone(), second),
            (serde_json::json!({"n": 1}), first)
        );
        s.delete_doc("silence", "a").await.unwrap();
        s.delete_doc("silence", "never-there").await.unwrap();
        assert!(s.list_docs("silence").await.unwrap().is_empty());
        assert_eq!(s.list_docs("incident").await.unwrap().len(), 2);

        // Pages by sequence number: no entry skipped or repeated.
        let first = s.audit_page(0, 2).await.unwrap();
        let seqs: Vec<u64> = first.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(first[0].entry.action, "read-only on");
        let rest = s.audit_page(2, 10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            (rest[0].seq, rest[0].entry.action.as_str()),
            (3, "refused thing")
        );
        assert!(s.audit_page(3, 10).await.unwrap().is_empty());

        // The dump holds everything, and refuses to go into this store.
        let dump = s.dump(&|_| {}).await.unwrap();
        assert_eq!(dump.controls.as_ref().map(|c| c.version), Some(2));
        assert_eq!(dump.audit.len(), 3);
        let names: Vec<String> = dump
            .docs
            .iter()
            .map(|d| format!("{}/{}", d.kind, d.id))
            .collect();
        assert_eq!(names, vec!["incident/a", "incident/b", "meta/origin"]);
        match s.restore(&dump, &|_| {}).await {
            Err(StoreError::NotEmpty(what)) => assert!(
                what.contains("controls at version 2") && what.contains("meta/origin"),
                "{what}"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }

        revisions(s).await;
    }

    /// Conditional puts: a write goes in only from the revision it was
    /// read at, and a stale one changes nothing.
    async fn revisions<S: Store>(s: &S) {
        use serde_json::json;
        let me = Candidate {
            id: "conformance".into(),
            url: "http://conformance.invalid".into(),
        };
        assert!(
            s.campaign(&me, Duration::from_secs(30))
                .await
                .unwrap()
                .leading,
            "alone, the suite's store leads"
        );
        assert_eq!(s.get_doc_rev("incident", "c").await.unwrap(), None);
        let r1 = s
            .put_doc_if("incident", "c", &json!({"n": 1}), None, Fence::Leader)
            .await
            .unwrap();
        assert_eq!(
            s.get_doc_rev("incident", "c").await.unwrap(),
            Some(DocRev {
                rev: r1,
                body: json!({"n": 1})
            })
        );
        // Created once: a second creation is a conflict naming what is there.
        match s
            .put_doc_if("incident", "c", &json!({"n": 9}), None, Fence::None)
            .await
        {
            Err(StoreError::DocConflict {
                expected: None,
                found: Some(found),
                ..
            }) => assert_eq!(found, r1),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let r2 = s
            .put_doc_if("incident", "c", &json!({"n": 2}), Some(r1), Fence::Leader)
            .await
            .unwrap();
        assert!(r2 > r1, "revisions grow: {r1} then {r2}");
        match s
            .put_doc_if("incident", "c", &json!({"n": 9}), Some(r1), Fence::None)
            .await
        {
            Err(e @ StoreError::DocConflict { .. }) => {
                assert!(e.retryable());
                match e {
                    StoreError::DocConflict {
                        ref kind,
                        ref id,
                        expected,
                        found,
                    } => assert_eq!(
                        (kind.as_str(), id.as_str(), expected, found),
                        ("incident", "c", Some(r1), Some(r2))
                    ),
                    _ => unreachable!(),
                }
                assert!(e.to_string().contains("incident/c"), "{e}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        // An unconditional put moves the revision too, so a writer that
        // read before it cannot overwrite it.
        s.put_doc("incident", "c", &json!({"n": 3})).await.unwrap();
        let r3 = s.get_doc_rev("incident", "c").await.unwrap().unwrap().rev;
        assert!(r3 > r2, "revisions grow: {r2} then {r3}");
        match s
            .put_doc_if("incident", "c", &json!({"n": 9}), Some(r2), Fence::Leader)
            .await
        {
            Err(StoreError::DocConflict { found, .. }) => assert_eq!(found, Some(r3)),
            other => panic!("expected a conflict, got {other:?}"),
        }
        // A revision expected of a document that is not there.
        match s
            .put_doc_if("incident", "gone", &json!({"n": 9}), Some(r1), Fence::None)
            .await
        {
            Err(StoreError::DocConflict {
                expected: Some(_),
                found: None,
                ..
            }) => {}
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(s.get_doc("incident", "gone").await.unwrap(), None);
        assert_eq!(
            s.get_doc("incident", "c").await.unwrap(),
            Some(json!({"n": 3}))
        );
        // A listing carries the same revisions as single reads.
        let listed = s.list_docs_rev("incident").await.unwrap();
        let c = listed.iter().find(|(id, _)| id == "c").map(|(_, d)| d.rev);
        assert_eq!(c, Some(r3));
        s.resign().await.unwrap();
    }

    /// A dump of `from` restored into the fresh `to` reads back the same,
    /// and `to` goes on from there.
    pub async fn restore_into<S: Store, T: Store>(from: &S, to: &T) {
        let dump = from.dump(&|_| {}).await.unwrap();
        to.restore(&dump, &|_| {}).await.unwrap();
        assert_eq!(to.dump(&|_| {}).await.unwrap(), dump);
        let v = dump.controls.as_ref().map_or(0, |c| c.version);
        let next = to
            .commit(v, &Controls::default(), &entry("after restore", true))
            .await
            .unwrap();
        assert_eq!(next, v + 1);
        let last = to.audit_page(0, 1000).await.unwrap().pop().unwrap();
        assert_eq!(last.seq, dump.audit.len() as u64 + 1);
    }
}
