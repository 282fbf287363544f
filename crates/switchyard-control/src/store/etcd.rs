//! The shared backend: an existing etcd cluster, spoken to through its
//! gRPC-gateway JSON API over HTTP or HTTPS (with a client certificate when
//! the cluster asks for one, `--client-cert-auth`), so that several control planes (one
//! per region) see the same controls and the same audit log. etcd answers a
//! write only once a quorum has it in its fsynced WAL, so an acknowledged
//! change survives the loss of any minority of members, and its reads are
//! linearizable by default, so a control plane never loads controls older
//! than a commit another one has already been told about.
//!
//! Keys, under the prefix:
//! - `controls`: `{"version": N, "controls": {...}}`, put exactly once per
//!   accepted change, so etcd's own per-key `version` (the number of puts
//!   since creation) is N as well. `commit` compares on that number, which
//!   also covers "nothing stored yet": etcd compares an absent key as if it
//!   were a key with every number 0, so `version == 0` holds only while the
//!   key does not exist.
//! - `audit_seq`: a counter put once per audit entry; its etcd `version` is
//!   the sequence number of the newest entry.
//! - `audit/{seq:020}`: one entry each; zero-padded so key order is
//!   numeric order.
//! - `docs/{kind}/{id}`: documents (incidents, silences, the store's
//!   identity); a document's revision is its key's `mod_revision`, so a
//!   conditional put compares on that (or, for "absent", the
//!   `create_revision`). A put fenced to the leader also compares, in the same
//!   txn, that `leader` is still attached to this plane's lease: a plane that
//!   stalled past its lease writes nothing, whatever it believes.
//! - `leader`: the elected control plane (`{"id", "url"}`), attached to its
//!   lease: created only while absent (a campaign, as etcd's own election
//!   API does it), kept while the leader's keep-alives renew the lease, and
//!   gone the moment the lease expires or is revoked.
//!
//! Why a counter rather than the txn's revision or a random suffix for audit
//! keys: the revision a txn will get is unknown until it has committed, so it
//! cannot name the key written in that txn; any revision read beforehand (or
//! a random suffix) would let a writer that read early but committed late
//! sort before one that committed first, and `history` would then show
//! entries out of order. Taking the next number in the same txn that writes
//! the entry, guarded by comparing the counter, makes key order exactly
//! commit order: of two writers racing for the same number one wins, the
//! other sees the new counter in the txn's failure branch and tries the next
//! number. It also keeps `history(limit)` a plain ascending range over
//! `limit` keys; etcd ignores `limit` for sorted (e.g. descending) ranges and
//! reads the whole prefix before truncating, which would grow with the log.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use switchyard_model::error::chain;
use switchyard_model::Controls;

use switchyard_model::AuditRecord;

use super::{
    AuditEntry, Candidate, Doc, DocRev, Dump, Fence, Progress, Store, StoreError, Stored, Term,
};

/// A member that does not accept a connection within this is treated as
/// down and the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longer than etcd's own request timeout (about 5 s on a healthy cluster),
/// so that etcd reports its own failures rather than us guessing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Each lost race means another writer appended, so this bounds only
/// pathological contention, never a healthy store.
const MAX_SEQUENCE_RACES: usize = 64;

pub struct EtcdStore {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoints: Vec<String>,
    /// The endpoint that answered last; starting there saves a connect
    /// timeout per request while an earlier one stays down.
    preferred: AtomicUsize,
    controls_key: String,
    seq_key: String,
    audit_prefix: String,
    docs_prefix: String,
    /// The audit counter as last seen. Only a guess: a wrong one costs one
    /// failed txn, whose failure branch returns the right value.
    seq_hint: AtomicU64,
    leader_key: String,
    /// The lease this plane campaigns with, once granted.
    lease: Mutex<Option<i64>>,
}

/// How one request to one endpoint failed, which decides whether the next
/// endpoint may be tried.
enum Attempt {
    /// Certainly not applied: the connection was never made, or the member
    /// refused before proposing it because it has no leader.
    NotApplied(String),
    /// Sent, but no (usable) answer: a write may or may not have applied.
    Lost(String),
    /// etcd answered with an error.
    Refused(String),
}

impl EtcdStore {
    /// `endpoints` are the cluster's client URLs (`http://host:port`; a bare
    /// `host:port` means plain HTTP), tried in turn while one is unreachable.
    /// `prefix` namespaces every key (e.g. `/switchyard/`); a trailing `/` is
    /// added when missing.
    pub fn new(endpoints: Vec<String>, prefix: &str) -> EtcdStore {
        EtcdStore::with_tls(endpoints, prefix, None)
    }

    /// [`EtcdStore::new`] speaking TLS with `tls` (`[control.etcd_tls]`:
    /// a private CA, a client certificate) to `https://` endpoints; without
    /// it they are verified against the shipped roots.
    pub fn with_tls(
        endpoints: Vec<String>,
        prefix: &str,
        tls: Option<rustls::ClientConfig>,
    ) -> EtcdStore {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        // The TLS layer, not the TCP one, decides on the scheme.
        connector.enforce_http(false);
        let tls = tls.unwrap_or_else(|| {
            switchyard_api::tls::client_config(&[], None)
                .expect("the shipped roots make a valid TLS config")
        });
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                let e = e.trim().trim_end_matches('/');
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        EtcdStore {
            client,
            endpoints,
            preferred: AtomicUsize::new(0),
            controls_key: format!("{prefix}controls"),
            seq_key: format!("{prefix}audit_seq"),
            audit_prefix: format!("{prefix}audit/"),
            docs_prefix: format!("{prefix}docs/"),
            seq_hint: AtomicU64::new(0),
            leader_key: format!("{prefix}leader"),
            lease: Mutex::new(None),
        }
    }

    fn doc_key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}/{id}", self.docs_prefix)
    }

    fn audit_key(&self, seq: u64) -> String {
        format!("{}{seq:020}", self.audit_prefix)
    }

    /// Sends one request, moving on to the next endpoint while they fail.
    /// A write moves on only when it certainly was not applied: resending one
    /// that may have been could append an audit entry twice.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        write: bool,
    ) -> Result<T, StoreError> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(StoreError::Unavailable(
                "no etcd endpoint configured".into(),
            ));
        }
        let body = Bytes::from(body.to_string());
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let endpoint = &self.endpoints[idx];
            let error = match self.call_one(endpoint, path, body.clone()).await {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Attempt::NotApplied(e)) => format!("etcd at {endpoint}: {e}"),
                Err(Attempt::Lost(e)) if write => {
                    return Err(StoreError::Unknown(format!(
                        "etcd at {endpoint}: {e}; the write may or may not have been applied"
                    )))
                }
                Err(Attempt::Refused(e)) if write => {
                    return Err(StoreError::Unavailable(format!(
                        "etcd at {endpoint} refused the write: {e}"
                    )))
                }
                Err(Attempt::Lost(e) | Attempt::Refused(e)) => format!("etcd at {endpoint}: {e}"),
            };
            if i + 1 < n {
                tracing::warn!(%error, "etcd endpoint failed, trying the next");
            }
            failures.push(error);
        }
        Err(StoreError::Unavailable(failures.join("; ")))
    }

    async fn call_one<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        path: &str,
        body: Bytes,
    ) -> Result<T, Attempt> {
        let request = http::Request::post(format!("{endpoint}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            // Without it a member cut off from its leader holds the request
            // until etcd's timeout and then cannot say whether a write
            // applied; with it the member refuses at once, before proposing,
            // so even a write can safely go to the next endpoint.
            .header("grpc-metadata-hasleader", "true")
            .body(Full::new(body))
            .map_err(|e| Attempt::NotApplied(format!("bad endpoint: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    Attempt::NotApplied(format!("unreachable: {}", chain(&e)))
                } else {
                    Attempt::Lost(chain(&e))
                }
            })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Attempt::Lost(chain(&e)))?
                .to_bytes();
            Ok::<_, Attempt>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| Attempt::Lost(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            let message = format!("HTTP {status}: {message}");
            return Err(if message.contains("etcdserver: no leader") {
                Attempt::NotApplied(message)
            } else {
                Attempt::Refused(message)
            });
        }
        // Not etcd's answer format means something else listens there (a
        // proxy's error page, another service), not that the data is bad.
        serde_json::from_slice(&bytes)
            .map_err(|e| Attempt::Refused(format!("unexpected answer ({e})")))
    }

    async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let r: RangeResponse = self
            .call("/v3/kv/range", &json!({ "key": b64(key) }), false)
            .await?;
        Ok(r.kvs.into_iter().next())
    }

    /// Appends `entry` as the next audit entry and, when `controls` is given
    /// as `(expected, body)`, puts `body` as the controls in the same txn if
    /// they are still at version `expected`.
    async fn append(&self, controls: Option<(u64, &[u8])>, entry: &[u8]) -> Result<(), StoreError> {
        let mut seq = self.seq_hint.load(Ordering::Relaxed);
        for _ in 0..MAX_SEQUENCE_RACES {
            let next = seq + 1;
            let audit_key = self.audit_key(next);
            // The second compare never fails while the counter is intact; it
            // is there so that a counter reset by hand (deleting the key
            // restarts its version) cannot overwrite old entries.
            let mut compare = vec![
                compare_version(&self.seq_key, seq),
                compare_absent(&audit_key),
            ];
            let mut success = vec![
                put(&self.seq_key, next.to_string().as_bytes()),
                put(&audit_key, entry),
            ];
            let mut failure = vec![range(&self.seq_key), range(&audit_key)];
            if let Some((expected, body)) = controls {
                compare.push(compare_version(&self.controls_key, expected));
                success.push(put(&self.controls_key, body));
                failure.push(range(&self.controls_key));
            }
            let txn = json!({"compare": compare, "success": success, "failure": failure});
            let r: TxnResponse = self.call("/v3/kv/txn", &txn, true).await?;
            if r.succeeded {
                self.seq_hint.store(next, Ordering::Relaxed);
                return Ok(());
            }
            // The failure branch read everything compared, at the revision
            // the compares were evaluated, so these say exactly which failed.
            let read = |i: usize| -> Result<Option<u64>, StoreError> {
                match r.responses.get(i).and_then(|op| op.response_range.as_ref()) {
                    Some(range) => Ok(range.kvs.first().map(|kv| kv.version)),
                    None => Err(StoreError::Corrupt(format!(
                        "etcd answered a failed txn without range {i}"
                    ))),
                }
            };
            let found_seq = read(0)?.unwrap_or(0);
            let entry_exists = read(1)?.is_some();
            if let Some((expected, _)) = controls {
                let found = read(2)?.unwrap_or(0);
                if found != expected {
                    self.seq_hint.store(found_seq, Ordering::Relaxed);
                    return Err(StoreError::Conflict { expected, found });
                }
            }
            if found_seq == seq {
                if entry_exists {
                    return Err(StoreError::Corrupt(format!(
                        "audit entry {audit_key} exists but {} says the newest entry is {seq}; \
                         refusing to overwrite the audit log",
                        self.seq_key
                    )));
                }
                return Err(StoreError::Corrupt(
                    "etcd refused a txn whose compares all held".into(),
                ));
            }
            seq = found_seq;
            self.seq_hint.store(seq, Ordering::Relaxed);
        }
        Err(StoreError::Unavailable(format!(
            "lost the race for the next audit sequence number {MAX_SEQUENCE_RACES} times in a row"
        )))
    }
}

/// Audit entries and documents are read this many keys at a time.
const PAGE: usize = 1000;

impl EtcdStore {
    /// Audit entries after `after`, at most `limit`, read at `revision`
    /// (0: the newest); with whether more follow.
    async fn audit_range(
        &self,
        after: u64,
        limit: usize,
        revision: u64,
    ) -> Result<(Vec<AuditRecord>, bool), StoreError> {
        let mut request = json!({
            "key": b64(self.audit_key(after.saturating_add(1))),
            "range_end": b64(prefix_end(&self.audit_prefix)),
            "limit": limit.to_string(),
        });
        if revision > 0 {
            request["revision"] = revision.to_string().into();
        }
        let r: RangeResponse = self.call("/v3/kv/range", &request, false).await?;
        let records = r
            .kvs
            .iter()
            .map(|kv| {
                let key = kv.key_text();
                let seq = key[self.audit_prefix.len()..].parse::<u64>().map_err(|e| {
                    StoreError::Corrupt(format!("{key}: not an audit sequence number: {e}"))
                })?;
                let entry = serde_json::from_slice(&kv.value(&key)?)
                    .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
                Ok(AuditRecord { seq, entry })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((records, r.more))
    }

    /// Every document, read at `revision`.
    async fn docs_at(&self, revision: u64) -> Result<Vec<Doc>, StoreError> {
        let mut out = Vec::new();
        let end = b64(prefix_end(&self.docs_prefix));
        let mut from = self.docs_prefix.clone().into_bytes();
        loop {
            let request = json!({
                "key": b64(&from),
                "range_end": end,
                "limit": PAGE.to_string(),
                "revision": revision.to_string(),
            });
            let r: RangeResponse = self.call("/v3/kv/range", &request, false).await?;
            for kv in &r.kvs {
                let key = kv.key_text();
                let rest = &key[self.docs_prefix.len()..];
                let Some((kind, id)) = rest.split_once('/') else {
                    return Err(StoreError::Corrupt(format!(
                        "{key}: not a kind/id document key"
                    )));
                };
                let body = serde_json::from_slice(&kv.value(&key)?)
                    .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
                out.push(Doc {
                    kind: kind.into(),
                    id: id.into(),
                    body,
                });
            }
            match (r.more, r.kvs.last()) {
                (true, Some(last)) => {
                    // The next key after the last one read.
                    from = B64.decode(&last.key).unwrap_or_default();
                    from.push(0);
                }
                _ => break,
            }
        }
        // etcd orders by the whole key; `kind/id` sorts the same way
        // except where a kind is a prefix of another, so sort as the
        // dump promises.
        out.sort_by(|a, b| (&a.kind, &a.id).cmp(&(&b.kind, &b.id)));
        Ok(out)
    }
}

impl Store for EtcdStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        let Some(kv) = self.get(&self.controls_key).await? else {
            return Ok(None);
        };
        let body = kv.value(&self.controls_key)?;
        let doc: ControlsDoc = serde_json::from_slice(&body)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.controls_key)))?;
        // `commit` compares on etcd's count of puts; if it disagrees with the
        // version written inside (the key was edited by hand), a commit could
        // succeed from a state nobody loaded.
        if doc.version != kv.version {
            return Err(StoreError::Corrupt(format!(
                "{} says version {} but etcd has stored it {} times",
                self.controls_key, doc.version, kv.version
            )));
        }
        Ok(Some(Stored {
            version: doc.version,
            controls: doc.controls,
        }))
    }

    async fn commit(
        &self,
        expected: u64,
        controls: &Controls,
        audit: &AuditEntry,
    ) -> Result<u64, StoreError> {
        let version = expected + 1;
        let body = serde_json::to_vec(&json!({"version": version, "controls": controls}))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut audit = audit.clone();
        audit.version = Some(version);
        let entry = serde_json::to_vec(&audit).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.append(Some((expected, &body)), &entry).await?;
        Ok(version)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = serde_json::to_vec(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.append(None, &entry).await
    }

    async fn put_doc(&self, kind: &str, id: &str, body: &Value) -> Result<(), StoreError> {
        let key = self.doc_key(kind, id);
        let _: Value = self
            .call(
                "/v3/kv/put",
                &json!({"key": b64(&key), "value": b64(body.to_string())}),
                true,
            )
            .await?;
        Ok(())
    }

    async fn get_doc_rev(&self, kind: &str, id: &str) -> Result<Option<DocRev>, StoreError> {
        let key = self.doc_key(kind, id);
        match self.get(&key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some(DocRev {
                rev: kv.mod_revision,
                body: serde_json::from_slice(&kv.value(&key)?)
                    .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?,
            })),
        }
    }

    async fn list_docs_rev(&self, kind: &str) -> Result<Vec<(String, DocRev)>, StoreError> {
        let prefix = self.doc_key(kind, "");
        let r: RangeResponse = self
            .call(
                "/v3/kv/range",
                &json!({"key": b64(&prefix), "range_end": b64(prefix_end(&prefix))}),
                false,
            )
            .await?;
        let mut out: Vec<(String, DocRev)> = r
            .kvs
            .iter()
            .map(|kv| {
                let key = kv.key_text();
                let body = serde_json::from_slice(&kv.value(&key)?)
                    .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
                Ok((
                    key[prefix.len()..].to_string(),
                    DocRev {
                        rev: kv.mod_revision,
                        body,
                    },
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn put_doc_if(
        &self,
        kind: &str,
        id: &str,
        body: &Value,
        expected: Option<u64>,
        fence: Fence,
    ) -> Result<u64, StoreError> {
        let key = self.doc_key(kind, id);
        let mut compare = vec![match expected {
            None => compare_absent(&key),
            Some(rev) => compare_mod(&key, rev),
        }];
        let mut failure = vec![range(&key)];
        let lease = match fence {
            Fence::None => None,
            Fence::Leader => {
                let held = *self.lease.lock().unwrap_or_else(|e| e.into_inner());
                let Some(lease) = held else {
                    return Err(StoreError::NotLeader(format!(
                        "{kind}/{id} (it holds no lease: it never campaigned or resigned)"
                    )));
                };
                compare.push(compare_lease(&self.leader_key, lease));
                failure.push(range(&self.leader_key));
                Some(lease)
            }
        };
        let txn = json!({
            "compare": compare,
            "success": [put(&key, body.to_string().as_bytes())],
            "failure": failure,
        });
        let r: TxnResponse = self.call("/v3/kv/txn", &txn, true).await?;
        if r.succeeded {
            // The txn's revision is the one its put gave the key.
            return Ok(r.header.revision);
        }
        // The failure branch read both keys at the revision the compares
        // were evaluated at, so these say exactly which one failed.
        let read = |i: usize| -> Result<Option<&Kv>, StoreError> {
            match r.responses.get(i).and_then(|op| op.response_range.as_ref()) {
                Some(range) => Ok(range.kvs.first()),
                None => Err(StoreError::Corrupt(format!(
                    "etcd answered a failed txn without range {i}"
                ))),
            }
        };
        if let Some(lease) = lease {
            let holder = read(1)?.map(|kv| kv.lease);
            if holder != Some(lease) {
                return Err(StoreError::NotLeader(format!("{kind}/{id}")));
            }
        }
        let found = read(0)?.map(|kv| kv.mod_revision);
        if found == expected {
            return Err(StoreError::Corrupt(format!(
                "etcd refused the put of {key} though its compares held"
            )));
        }
        Err(StoreError::DocConflict {
            kind: kind.into(),
            id: id.into(),
            expected,
            found,
        })
    }

    async fn create_doc(&self, kind: &str, id: &str, body: &Value) -> Result<Value, StoreError> {
        let key = self.doc_key(kind, id);
        let txn = json!({
            "compare": [compare_absent(&key)],
            "success": [put(&key, body.to_string().as_bytes())],
            "failure": [range(&key)],
        });
        let r: TxnResponse = self.call("/v3/kv/txn", &txn, true).await?;
        if r.succeeded {
            return Ok(body.clone());
        }
        let kv = r
            .responses
            .first()
            .and_then(|op| op.response_range.as_ref())
            .and_then(|range| range.kvs.first())
            .ok_or_else(|| StoreError::Corrupt(format!("{key}: neither created nor found")))?;
        serde_json::from_slice(&kv.value(&key)?)
            .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))
    }

    async fn delete_doc(&self, kind: &str, id: &str) -> Result<(), StoreError> {
        let key = self.doc_key(kind, id);
        let _: Value = self
            .call("/v3/kv/deleterange", &json!({"key": b64(&key)}), true)
            .await?;
        Ok(())
    }

    async fn campaign(&self, me: &Candidate, ttl: Duration) -> Result<Term, StoreError> {
        let held = *self.lease.lock().unwrap_or_else(|e| e.into_inner());
        let mut lease = None;
        if let Some(id) = held {
            // A keep-alive of a lease that has expired answers without a TTL.
            let r: Value = self
                .call("/v3/lease/keepalive", &json!({"ID": id.to_string()}), false)
                .await?;
            let left = r["result"]["TTL"]
                .as_str()
                .and_then(|t| t.parse::<i64>().ok())
                .or_else(|| r["result"]["TTL"].as_i64())
                .unwrap_or(0);
            if left > 0 {
                lease = Some(id);
            }
        }
        let id = match lease {
            Some(id) => id,
            None => {
                // A grant whose answer is lost leaves a lease nobody renews:
                // it expires on its own, so trying another member is safe.
                let r: Value = self
                    .call(
                        "/v3/lease/grant",
                        &json!({"TTL": ttl.as_secs().max(2).to_string()}),
                        false,
                    )
                    .await?;
                let id = r["ID"]
                    .as_str()
                    .and_then(|t| t.parse::<i64>().ok())
                    .or_else(|| r["ID"].as_i64())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("lease grant without an ID: {r}"))
                    })?;
                *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
                id
            }
        };
        let body = serde_json::to_vec(me).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let txn = json!({
            "compare": [compare_absent(&self.leader_key)],
            "success": [{"request_put": {"key": b64(&self.leader_key), "value": b64(&body), "lease": id.to_string()}}],
            "failure": [range(&self.leader_key)],
        });
        let r: TxnResponse = self.call("/v3/kv/txn", &txn, false).await?;
        if r.succeeded {
            return Ok(Term {
                leading: true,
                leader: Some(me.clone()),
            });
        }
        let kv = r
            .responses
            .first()
            .and_then(|op| op.response_range.as_ref())
            .and_then(|range| range.kvs.first());
        let Some(kv) = kv else {
            // Deleted between the compare and the read of the failure
            // branch: nobody leads this instant; the next round campaigns.
            return Ok(Term {
                leading: false,
                leader: None,
            });
        };
        let leader: Option<Candidate> = kv
            .value(&self.leader_key)
            .ok()
            .and_then(|v| serde_json::from_slice(&v).ok());
        Ok(Term {
            leading: kv.lease == id,
            leader,
        })
    }

    async fn resign(&self) -> Result<(), StoreError> {
        let held = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(id) = held {
            let _: Value = self
                .call("/v3/lease/revoke", &json!({"ID": id.to_string()}), false)
                .await?;
        }
        Ok(())
    }

    async fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self.audit_range(after, limit, 0).await?.0)
    }

    async fn dump(&self, progress: Progress<'_>) -> Result<Dump, StoreError> {
        // Every read after the first names the revision the first saw, so
        // the dump is the store at one instant however long it takes.
        let r: RangeResponse = self
            .call(
                "/v3/kv/range",
                &json!({ "key": b64(&self.controls_key) }),
                false,
            )
            .await?;
        let revision = r.header.revision;
        let controls = match r.kvs.first() {
            None => None,
            Some(kv) => {
                let doc: ControlsDoc = serde_json::from_slice(&kv.value(&self.controls_key)?)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.controls_key)))?;
                Some(Stored {
                    version: doc.version,
                    controls: doc.controls,
                })
            }
        };
        let mut audit: Vec<AuditRecord> = Vec::new();
        loop {
            let after = audit.last().map_or(0, |r| r.seq);
            let (page, more) = self.audit_range(after, PAGE, revision).await?;
            audit.extend(page);
            progress(audit.len());
            if !more {
                break;
            }
        }
        let docs = self.docs_at(revision).await?;
        Ok(Dump {
            controls,
            audit,
            docs,
        })
    }

    async fn restore(&self, d: &Dump, progress: Progress<'_>) -> Result<(), StoreError> {
        let there = self.dump(&|_| {}).await?;
        if !there.is_empty() {
            return Err(StoreError::NotEmpty(there.describe()));
        }
        // etcd has no transaction large enough for a whole store, so the
        // order matters if a restore stops half-way: the store's identity
        // first, so a plane started on a partial store holds back (its
        // version is behind the edges') rather than minting a new one;
        // the controls last, put once per version because `commit`
        // compares on etcd's count of puts.
        let origin_first = d
            .docs
            .iter()
            .filter(|x| (x.kind.as_str(), x.id.as_str()) == ("meta", "origin"))
            .chain(
                d.docs
                    .iter()
                    .filter(|x| (x.kind.as_str(), x.id.as_str()) != ("meta", "origin")),
            );
        for doc in origin_first {
            self.put_doc(&doc.kind, &doc.id, &doc.body).await?;
        }
        for (i, r) in d.audit.iter().enumerate() {
            let entry =
                serde_json::to_vec(&r.entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.append(None, &entry).await?;
            if (i + 1) % PAGE == 0 {
                progress(i + 1);
            }
        }
        progress(d.audit.len());
        if let Some(s) = &d.controls {
            for v in 1..=s.version {
                let body = serde_json::to_vec(&json!({"version": v, "controls": s.controls}))
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let txn = json!({
                    "compare": [compare_version(&self.controls_key, v - 1)],
                    "success": [put(&self.controls_key, &body)],
                    "failure": [range(&self.controls_key)],
                });
                let r: TxnResponse = self.call("/v3/kv/txn", &txn, true).await?;
                if !r.succeeded {
                    return Err(StoreError::Conflict {
                        expected: v - 1,
                        found: r
                            .responses
                            .first()
                            .and_then(|op| op.response_range.as_ref())
                            .and_then(|range| range.kvs.first())
                            .map_or(0, |kv| kv.version),
                    });
                }
            }
        }
        Ok(())
    }

    async fn history(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let newest = self.get(&self.seq_key).await?.map_or(0, |kv| kv.version);
        self.seq_hint.store(newest, Ordering::Relaxed);
        if newest == 0 {
            return Ok(Vec::new());
        }
        let oldest = newest - newest.min(u64::try_from(limit).unwrap_or(u64::MAX)) + 1;
        // Bounded by the counter just read, so entries appended meanwhile do
        // not push the oldest ones out of a consistent view.
        let request = json!({
            "key": b64(self.audit_key(oldest)),
            "range_end": b64(self.audit_key(newest + 1)),
        });
        let r: RangeResponse = self.call("/v3/kv/range", &request, false).await?;
        r.kvs
            .iter()
            .map(|kv| {
                let key =
                    String::from_utf8_lossy(&B64.decode(&kv.key).unwrap_or_default()).into_owned();
                let body = kv.value(&key)?;
                serde_json::from_slice(&body)
                    .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct ControlsDoc {
    version: u64,
    controls: Controls,
}

// etcd's JSON leaves out every field at its zero value (an absent
// `succeeded` means false, absent `kvs` means none), hence the defaults.

#[derive(Deserialize, Default)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<Kv>,
    #[serde(default)]
    header: Header,
    /// More keys lie in the range than `limit` let through.
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "number")]
    revision: u64,
}

impl Kv {
    fn key_text(&self) -> String {
        String::from_utf8_lossy(&B64.decode(&self.key).unwrap_or_default()).into_owned()
    }
}

#[derive(Deserialize)]
struct Kv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "number")]
    version: u64,
    /// The revision of the key's last change: a document's revision.
    #[serde(default, deserialize_with = "number")]
    mod_revision: u64,
    /// The lease the key is attached to (0: none).
    #[serde(default, deserialize_with = "signed")]
    lease: i64,
}

impl Kv {
    fn value(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        B64.decode(&self.value)
            .map_err(|e| StoreError::Corrupt(format!("{key}: value is not base64: {e}")))
    }
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<ResponseOp>,
}

#[derive(Deserialize)]
struct ResponseOp {
    #[serde(default)]
    response_range: Option<RangeResponse>,
}

/// 64-bit numbers arrive as JSON strings (protobuf's JSON mapping), but
/// accept plain numbers too.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Text(String),
        Number(u64),
    }
    match N::deserialize(d)? {
        N::Number(n) => Ok(n),
        N::Text(s) => s.parse().map_err(D::Error::custom),
    }
}

/// Lease ids are signed 64-bit numbers, also sent as JSON strings.
fn signed<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Text(String),
        Number(i64),
    }
    match N::deserialize(d)? {
        N::Number(n) => Ok(n),
        N::Text(s) => s.parse().map_err(D::Error::custom),
    }
}

/// The end of etcd's range holding every key that starts with `prefix`:
/// the prefix with its last byte incremented.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

fn compare_version(key: &str, version: u64) -> Value {
    json!({"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": version.to_string()})
}

/// etcd compares an absent key as if every number it has were 0, and a key
/// that exists was created at some revision above 0.
fn compare_absent(key: &str) -> Value {
    json!({"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
}

fn compare_mod(key: &str, rev: u64) -> Value {
    json!({"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
}

/// Holds while `key` is attached to `lease`; an absent key has lease 0,
/// which no granted lease is.
fn compare_lease(key: &str, lease: i64) -> Value {
    json!({"key": b64(key), "target": "LEASE", "result": "EQUAL", "lease": lease.to_string()})
}

fn put(key: &str, value: &[u8]) -> Value {
    json!({"request_put": {"key": b64(key), "value": b64(value)}})
}

fn range(key: &str) -> Value {
    json!({"request_range": {"key": b64(key)}})
}
