//! Where the control plane keeps its state: the current controls with a
//! version, and the audit log. Two backends pass the same conformance suite:
//! a local SQLite file (the default; an acknowledged change survives kill -9)
//! and etcd (several control planes share state through a real cluster).

use std::future::Future;
use std::time::Duration;

use switchyard_model::Controls;

pub mod etcd;
pub mod sqlite;

pub use switchyard_model::AuditEntry;

/// The controls as stored, with the version they were stored under.
#[derive(Debug, Clone, PartialEq)]
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
}

impl StoreError {
    /// Whether trying again may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::Unavailable(_) | StoreError::Unknown(_)
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
    /// Puts a document (an incident, a silence) as `kind`/`id`, replacing
    /// any there; returns once durable.
    fn put_doc(
        &self,
        kind: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get_doc(
        &self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, StoreError>> + Send;
    /// Every document of `kind`, ordered by id.
    fn list_docs(
        &self,
        kind: &str,
    ) -> impl Future<Output = Result<Vec<(String, serde_json::Value)>, StoreError>> + Send;
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
    }
}
