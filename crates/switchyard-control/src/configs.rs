//! Which config each member runs: the control plane distributes configs,
//! not only controls. The assignment is one document in the store (kind
//! `config`, id `assignment`), written by compare-and-set and only by the
//! leader, with a revision that grows by one each time; every config it
//! ever named is kept by version (kind `config_version`) so any plane can
//! hand it out again. Each plane holds the assignment in a watch channel
//! that the watch streams follow.

use std::sync::Arc;

use switchyard_model::ConfigDoc;

use crate::plane::ControlPlane;
use crate::store::{Fence, Store, StoreError};

/// Which config each member runs. A member is an edge's zone name, or
/// `dns:<name>` for a DNS server (its watch identity); members named in
/// `members` run `target`, every other one `base`.
pub use switchyard_api::ConfigAssignment as Assignment;

pub const KIND: &str = "config";
pub const ID: &str = "assignment";
/// Every config an assignment named, by version.
pub const VERSIONS: &str = "config_version";

/// The member name of a watcher: its zone, `dns:<name>` for a DNS server,
/// `None` for a watcher that says neither (it gets the base).
pub fn member(zone: Option<&str>, dns: Option<&str>) -> Option<String> {
    match (zone, dns) {
        (Some(z), _) if !z.is_empty() => Some(z.to_string()),
        (_, Some(d)) if !d.is_empty() => Some(format!("dns:{d}")),
        _ => None,
    }
}

fn parse(body: serde_json::Value) -> Result<Assignment, StoreError> {
    serde_json::from_value(body).map_err(|e| StoreError::Corrupt(format!("{KIND}/{ID}: {e}")))
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("serializable")
}

/// The first assignment of a store: everyone runs the text of the config
/// file the first plane started with.
pub fn seed(own_text: &str) -> Assignment {
    Assignment {
        revision: 1,
        base: ConfigDoc::new(own_text.to_string()),
        target: None,
        members: Default::default(),
    }
}

/// The stored assignment, or the seed made from `own_text` when the store
/// has none yet. Planes starting together on an empty store all end up
/// with the one created first.
pub(crate) async fn open<S: Store>(store: &S, own_text: &str) -> Result<Assignment, StoreError> {
    if let Some(d) = store.get_doc_rev(KIND, ID).await? {
        return parse(d.body);
    }
    let seeded = seed(own_text);
    store
        .put_doc(VERSIONS, &seeded.base.version, &json(&seeded.base))
        .await?;
    parse(store.create_doc(KIND, ID, &json(&seeded)).await?)
}

impl<S: Store> ControlPlane<S> {
    /// The assignment in force here.
    pub fn assignment(&self) -> Arc<Assignment> {
        self.assignment.borrow().clone()
    }

    /// The assignment now and every later one.
    pub fn watch_assignment(&self) -> tokio::sync::watch::Receiver<Arc<Assignment>> {
        self.assignment.subscribe()
    }

    /// Puts `next` in force: stored (compare-and-set on what is stored,
    /// fenced to the leader) with every config it names, then published to
    /// every watcher. Its revision must be the stored one plus one
    /// ([`StoreError::NotNext`] otherwise: an assignment never goes back),
    /// so two writers acting on the same assignment cannot both succeed.
    pub async fn assign(&self, next: Assignment) -> Result<Arc<Assignment>, StoreError> {
        let _one_at_a_time = self.assigning.lock().await;
        let stored = self.store().get_doc_rev(KIND, ID).await?;
        let (rev, current) = match stored {
            Some(d) => (Some(d.rev), parse(d.body)?.revision),
            None => (None, self.assignment().revision),
        };
        if next.revision != current + 1 {
            return Err(StoreError::NotNext {
                what: format!("{KIND}/{ID}"),
                current,
                given: next.revision,
            });
        }
        // The configs first: an assignment in the store never names a
        // version another plane cannot hand out.
        for doc in std::iter::once(&next.base).chain(next.target.as_ref()) {
            self.store()
                .put_doc(VERSIONS, &doc.version, &json(doc))
                .await?;
        }
        self.store()
            .put_doc_if(KIND, ID, &json(&next), rev, Fence::Leader)
            .await?;
        let next = Arc::new(next);
        tracing::info!(
            revision = next.revision,
            base = %next.base.version,
            target = ?next.target.as_ref().map(|t| &t.version),
            members = next.members.len(),
            "config assignment changed"
        );
        self.assignment.send_replace(next.clone());
        self.follow_base(&next.base);
        Ok(next)
    }

    /// Takes the stored assignment when it is newer than the one here
    /// (another plane assigned it); returns whether it did. A store that
    /// has none yet (the plane started without it) is seeded now.
    pub async fn sync_assignment(&self) -> Result<bool, StoreError> {
        let cur = self.assignment();
        let stored = match self.store().get_doc_rev(KIND, ID).await? {
            Some(d) => parse(d.body)?,
            None => open(self.store(), &cur.base.text).await?,
        };
        if stored.revision <= cur.revision {
            return Ok(false);
        }
        self.follow_base(&stored.base);
        self.assignment.send_replace(Arc::new(stored));
        Ok(true)
    }

    /// A config this plane's store holds (every one ever assigned), by
    /// version; the ones in force are answered without the store.
    pub async fn config_doc(&self, version: &str) -> Result<Option<ConfigDoc>, StoreError> {
        let cur = self.assignment();
        if let Some(d) = std::iter::once(&cur.base)
            .chain(cur.target.as_ref())
            .find(|d| d.version == version)
        {
            return Ok(Some(d.clone()));
        }
        match self.store().get_doc(VERSIONS, version).await? {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{VERSIONS}/{version}: {e}"))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plane::ControlPlane;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Candidate;

    async fn plane(path: &std::path::Path, text: &str) -> Arc<ControlPlane<SqliteStore>> {
        let config = switchyard_model::Config::from_toml(
            include_str!("../../../examples/switchyard.toml"),
            |_| Some("t".into()),
        )
        .unwrap();
        ControlPlane::new(
            Arc::new(config),
            text.to_string(),
            Default::default(),
            SqliteStore::open(path).unwrap(),
            Candidate {
                id: "p".into(),
                url: "http://127.0.0.1:1".into(),
            },
            None,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn the_revision_only_moves_one_forward_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let p = plane(&db, "# first\n").await;
        let a = p.assignment();
        assert_eq!((a.revision, a.base.text.as_str()), (1, "# first\n"));
        let mut rx = p.watch_assignment();
        rx.borrow_and_update();

        let mut next = (*a).clone();
        next.revision = 2;
        next.target = Some(ConfigDoc::new("# second\n".into()));
        next.members.insert("a".into());
        p.assign(next.clone()).await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(p.assignment().doc_for("a").text, "# second\n");
        assert_eq!(p.assignment().doc_for("b").text, "# first\n");

        // Backwards, the same revision again, and a skip: all refused,
        // nothing changes.
        for revision in [1, 2, 4] {
            let mut bad = next.clone();
            bad.revision = revision;
            bad.target = None;
            let e = p.assign(bad).await.unwrap_err();
            assert!(
                matches!(e, StoreError::NotNext { current: 2, given, .. } if given == revision),
                "{e:?}"
            );
        }
        assert_eq!(p.assignment().revision, 2);
        assert!(p.assignment().target.is_some());

        // Another plane on the store (started with other text) serves the
        // stored assignment, not a seed of its own, and every config
        // assigned is still there by version.
        let q = plane(&db, "# other\n").await;
        assert_eq!(*q.assignment(), *p.assignment());
        let first = crate::configs::seed("# first\n").base;
        let mut later = (*p.assignment()).clone();
        later.revision = 3;
        later.target = None;
        later.members.clear();
        later.base = ConfigDoc::new("# third\n".into());
        p.assign(later).await.unwrap();
        assert_eq!(q.config_doc(&first.version).await.unwrap(), Some(first));
        assert!(q.config_doc("c0000000000000000").await.unwrap().is_none());
        // The other plane takes the newer one when it reads the store.
        assert!(q.sync_assignment().await.unwrap());
        assert_eq!(q.assignment().base.text, "# third\n");
        assert!(!q.sync_assignment().await.unwrap());
    }
}
