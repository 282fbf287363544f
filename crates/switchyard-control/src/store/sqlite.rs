//! The embedded default: one SQLite file. Every commit is one transaction in
//! WAL mode with `synchronous = FULL`, so an acknowledged change is on disk
//! before the caller hears about it and survives kill -9.
//!
//! Documents carry a revision (`rev`, 1 when created, one more on every
//! write) for conditional puts. Files made before it existed get the column
//! when opened, every document starting at revision 1.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use switchyard_model::Controls;

use switchyard_model::AuditRecord;

use super::{AuditEntry, Doc, DocRev, Dump, Fence, Progress, Store, StoreError, Stored};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(d) = path.parent() {
            if !d.as_os_str().is_empty() {
                std::fs::create_dir_all(d).map_err(unavailable)?;
            }
        }
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS controls (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS docs (kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, rev INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (kind, id));",
        )
        .map_err(unavailable)?;
        migrate_docs_rev(&conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs blocking SQLite work off the async workers.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .map_err(unavailable)?
    }
}

/// Adds the `rev` column to a file made before documents had revisions.
fn migrate_docs_rev(conn: &Connection) -> Result<(), StoreError> {
    let mut st = conn
        .prepare("SELECT name FROM pragma_table_info('docs')")
        .map_err(unavailable)?;
    let columns = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    if !columns.iter().any(|c| c == "rev") {
        conn.execute(
            "ALTER TABLE docs ADD COLUMN rev INTEGER NOT NULL DEFAULT 1",
            [],
        )
        .map_err(unavailable)?;
    }
    Ok(())
}

fn doc_rev(c: &Connection, kind: &str, id: &str) -> Result<Option<(u64, String)>, StoreError> {
    c.query_row(
        "SELECT rev, body FROM docs WHERE kind = ?1 AND id = ?2",
        params![kind, id],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
    )
    .optional()
    .map_err(unavailable)
}

fn corrupt(what: impl std::fmt::Display, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn audit_after(c: &Connection, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
    let mut st = c
        .prepare("SELECT seq, body FROM audit WHERE seq > ?1 ORDER BY seq ASC LIMIT ?2")
        .map_err(unavailable)?;
    let rows = st
        .query_map(
            params![after as i64, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
        )
        .map_err(unavailable)?;
    rows.map(|r| {
        let (seq, b) = r.map_err(unavailable)?;
        let entry =
            serde_json::from_str(&b).map_err(|e| corrupt(format!("audit entry {seq}"), e))?;
        Ok(AuditRecord { seq, entry })
    })
    .collect()
}

/// Everything in `c`, read within the caller's transaction.
fn dump(c: &Connection, progress: Progress<'_>) -> Result<Dump, StoreError> {
    let controls = match current(c)? {
        None => None,
        Some((version, body)) => Some(Stored {
            version,
            controls: serde_json::from_str(&body).map_err(|e| corrupt("controls", e))?,
        }),
    };
    let mut audit = Vec::new();
    loop {
        let page = audit_after(c, audit.last().map_or(0, |r: &AuditRecord| r.seq), 10_000)?;
        if page.is_empty() {
            break;
        }
        audit.extend(page);
        progress(audit.len());
    }
    let mut st = c
        .prepare("SELECT kind, id, body FROM docs ORDER BY kind, id")
        .map_err(unavailable)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(unavailable)?;
    let docs = rows
        .map(|r| {
            let (kind, id, b) = r.map_err(unavailable)?;
            let body = serde_json::from_str(&b).map_err(|e| corrupt(format!("{kind}/{id}"), e))?;
            Ok(Doc { kind, id, body })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Dump {
        controls,
        audit,
        docs,
    })
}

fn current(c: &Connection) -> Result<Option<(u64, String)>, StoreError> {
    c.query_row("SELECT version, body FROM controls WHERE id = 1", [], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
    })
    .optional()
    .map_err(unavailable)
}

impl Store for SqliteStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        self.with(|c| match current(c)? {
            None => Ok(None),
            Some((version, body)) => Ok(Some(Stored {
                version,
                controls: serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            })),
        })
        .await
    }

    async fn commit(
        &self,
        expected: u64,
        controls: &Controls,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let body =
            serde_json::to_string(controls).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut audit = audit.clone();
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let found = current(&tx)?.map(|x| x.0).unwrap_or(0);
            if found != expected {
                return Err(StoreError::Conflict { expected, found });
            }
            let version = expected + 1;
            tx.execute(
                "INSERT INTO controls (id, version, body) VALUES (1, ?1, ?2) ON CONFLICT(id) DO UPDATE SET version = ?1, body = ?2",
                params![version as i64, body],
            )
            .map_err(unavailable)?;
            audit.version = Some(version);
            let a = serde_json::to_string(&audit).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute("INSERT INTO audit (body) VALUES (?1)", params![a]).map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(version)
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let a = serde_json::to_string(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(move |c| {
            c.execute("INSERT INTO audit (body) VALUES (?1)", params![a])
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn history(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.with(move |c| {
            let mut st = c
                .prepare("SELECT body FROM (SELECT seq, body FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq ASC")
                .map_err(unavailable)?;
            let rows = st.query_map(params![limit as i64], |r| r.get::<_, String>(0)).map_err(unavailable)?;
            rows.map(|r| {
                let b = r.map_err(unavailable)?;
                serde_json::from_str(&b).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
        })
        .await
    }

    async fn put_doc(
        &self,
        kind: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let (kind, id, body) = (kind.to_string(), id.to_string(), body.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO docs (kind, id, body) VALUES (?1, ?2, ?3) ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, rev = docs.rev + 1",
                params![kind, id, body],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn get_doc_rev(&self, kind: &str, id: &str) -> Result<Option<DocRev>, StoreError> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.with(move |c| {
            doc_rev(c, &kind, &id)?
                .map(|(rev, b)| {
                    let body = serde_json::from_str(&b)
                        .map_err(|e| StoreError::Corrupt(format!("{kind}/{id}: {e}")))?;
                    Ok(DocRev { rev, body })
                })
                .transpose()
        })
        .await
    }

    async fn list_docs_rev(&self, kind: &str) -> Result<Vec<(String, DocRev)>, StoreError> {
        let kind = kind.to_string();
        self.with(move |c| {
            let mut st = c
                .prepare("SELECT id, rev, body FROM docs WHERE kind = ?1 ORDER BY id")
                .map_err(unavailable)?;
            let rows = st
                .query_map(params![kind], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(unavailable)?;
            rows.map(|r| {
                let (id, rev, b) = r.map_err(unavailable)?;
                let body = serde_json::from_str(&b)
                    .map_err(|e| StoreError::Corrupt(format!("{kind}/{id}: {e}")))?;
                Ok((id, DocRev { rev, body }))
            })
            .collect()
        })
        .await
    }

    /// One plane per file, so it always leads: the fence has nothing to check.
    async fn put_doc_if(
        &self,
        kind: &str,
        id: &str,
        body: &serde_json::Value,
        expected: Option<u64>,
        _fence: Fence,
    ) -> Result<u64, StoreError> {
        let (kind, id, body) = (kind.to_string(), id.to_string(), body.to_string());
        self.with(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let found = doc_rev(&tx, &kind, &id)?.map(|(rev, _)| rev);
            if found != expected {
                return Err(StoreError::DocConflict {
                    kind,
                    id,
                    expected,
                    found,
                });
            }
            let rev = found.map_or(1, |r| r + 1);
            tx.execute(
                "INSERT INTO docs (kind, id, body, rev) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, rev = excluded.rev",
                params![kind, id, body, rev as i64],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(rev)
        })
        .await
    }

    async fn create_doc(
        &self,
        kind: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, StoreError> {
        let (kind, id, body) = (kind.to_string(), id.to_string(), body.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO docs (kind, id, body) VALUES (?1, ?2, ?3) ON CONFLICT (kind, id) DO NOTHING",
                params![kind, id, body],
            )
            .map_err(unavailable)?;
            let stored: String = c
                .query_row(
                    "SELECT body FROM docs WHERE kind = ?1 AND id = ?2",
                    params![kind, id],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            serde_json::from_str(&stored)
                .map_err(|e| StoreError::Corrupt(format!("{kind}/{id}: {e}")))
        })
        .await
    }

    async fn delete_doc(&self, kind: &str, id: &str) -> Result<(), StoreError> {
        let (kind, id) = (kind.to_string(), id.to_string());
        self.with(move |c| {
            c.execute(
                "DELETE FROM docs WHERE kind = ?1 AND id = ?2",
                params![kind, id],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.with(move |c| audit_after(c, after, limit)).await
    }

    async fn dump(&self, progress: Progress<'_>) -> Result<Dump, StoreError> {
        // One read transaction: in WAL mode it sees one commit's state
        // throughout while planes go on writing. Run in place (it borrows
        // `progress`): backups and restores run from the command line, not
        // on a plane's workers.
        let c = self.conn.clone();
        let run = move || {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            let tx = c.transaction().map_err(unavailable)?;
            let d = dump(&tx, progress)?;
            tx.finish().map_err(unavailable)?;
            Ok(d)
        };
        run()
    }

    async fn restore(&self, d: &Dump, progress: Progress<'_>) -> Result<(), StoreError> {
        let c = self.conn.clone();
        // One transaction: a restore that fails half-way leaves the store
        // as empty as it found it.
        let run = move || {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            let tx = c.transaction().map_err(unavailable)?;
            let there = dump(&tx, &|_| {})?;
            if !there.is_empty() {
                return Err(StoreError::NotEmpty(there.describe()));
            }
            if let Some(s) = &d.controls {
                let body =
                    serde_json::to_string(&s.controls).map_err(|e| corrupt("controls", e))?;
                tx.execute(
                    "INSERT INTO controls (id, version, body) VALUES (1, ?1, ?2)",
                    params![s.version as i64, body],
                )
                .map_err(unavailable)?;
            }
            for (i, r) in d.audit.iter().enumerate() {
                let b = serde_json::to_string(&r.entry)
                    .map_err(|e| corrupt(format!("audit entry {}", r.seq), e))?;
                tx.execute(
                    "INSERT INTO audit (seq, body) VALUES (?1, ?2)",
                    params![r.seq as i64, b],
                )
                .map_err(|e| corrupt(format!("audit entry {}", r.seq), e))?;
                if (i + 1) % 10_000 == 0 {
                    progress(i + 1);
                }
            }
            for doc in &d.docs {
                tx.execute(
                    "INSERT INTO docs (kind, id, body) VALUES (?1, ?2, ?3)",
                    params![doc.kind, doc.id, doc.body.to_string()],
                )
                .map_err(|e| corrupt(format!("{}/{}", doc.kind, doc.id), e))?;
            }
            tx.commit().map_err(unavailable)?;
            progress(d.audit.len());
            Ok(())
        };
        run()
    }
}
