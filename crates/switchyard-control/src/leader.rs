//! Which control plane acts. Several planes may share one store for high
//! availability; all of them serve the API, the watch streams and reads,
//! and all of them follow the edges' signals (so a new leader's detection
//! is warm), but exactly one — the leader — applies the playbooks' actions,
//! tracks incidents and tells people.
//!
//! The leader is elected through the store ([`Store::campaign`]): on etcd a
//! key created only while absent and attached to a lease the leader keeps
//! alive. The leader acts only until its own deadline: the time it *sent*
//! its last successful renewal plus the lease's TTL, less a margin. etcd
//! counts the TTL from when it *received* that renewal, so the deadline
//! always passes before the lease can expire and another plane can be
//! elected: two planes never act at once, even when the leader is cut off
//! from etcd and cannot know it lost.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::plane::now_ms;
use crate::store::{Candidate, Store};

/// How long a leader holds its lease without renewing it. A dead leader is
/// replaced within this plus one round.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often every plane campaigns (and the leader renews).
pub const ROUND: Duration = Duration::from_secs(1);
/// Taken off the leader's deadline for clocks that run at slightly
/// different rates on the plane and on etcd.
const MARGIN: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Acts until `until_ms` unless renewed.
    Leader { until_ms: u64 },
    /// Another plane leads (`None`: nobody is known to, e.g. the store is
    /// unreachable or the last leader just died).
    Follower { leader: Option<Candidate> },
}

/// This plane's place in the election, shared by the tasks that must know.
#[derive(Clone)]
pub struct Leadership {
    pub me: Candidate,
    role: Arc<watch::Sender<Role>>,
}

impl Leadership {
    pub fn new(me: Candidate) -> Leadership {
        Leadership {
            me,
            role: Arc::new(watch::channel(Role::Follower { leader: None }).0),
        }
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Whether this plane may act now.
    pub fn acting(&self, now_ms: u64) -> bool {
        matches!(*self.role.borrow(), Role::Leader { until_ms } if now_ms < until_ms)
    }

    /// The leader's URL when another plane leads.
    pub fn leader_url(&self) -> Option<String> {
        match &*self.role.borrow() {
            Role::Follower { leader: Some(c) } if c.id != self.me.id => Some(c.url.clone()),
            _ => None,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    fn set(&self, role: Role) {
        let before = self.role();
        let was = matches!(before, Role::Leader { .. });
        let is = matches!(role, Role::Leader { .. });
        if was != is {
            match &role {
                Role::Leader { .. } => {
                    tracing::warn!(id = %self.me.id, "elected: this control plane now acts")
                }
                Role::Follower { leader } => tracing::warn!(
                    id = %self.me.id,
                    leader = ?leader.as_ref().map(|c| &c.id),
                    "no longer the leader: this control plane stops acting"
                ),
            }
        }
        self.role.send_replace(role);
    }

    /// Campaigns every round until `stop`, then resigns so another plane
    /// takes over at once.
    pub async fn run<S: Store>(&self, store: &S, mut stop: watch::Receiver<bool>) {
        loop {
            let sent = now_ms();
            match store.campaign(&self.me, LEASE_TTL).await {
                Ok(t) if t.leading => self.set(Role::Leader {
                    until_ms: sent + (LEASE_TTL - MARGIN).as_millis() as u64,
                }),
                Ok(t) => self.set(Role::Follower { leader: t.leader }),
                Err(e) => {
                    // Unsure: a leader keeps acting until its deadline (no
                    // other plane can be elected before), then stops.
                    let now = now_ms();
                    match self.role() {
                        Role::Leader { until_ms } if now < until_ms => {}
                        Role::Leader { .. } => self.set(Role::Follower { leader: None }),
                        Role::Follower { .. } => {}
                    }
                    tracing::warn!(error = %e, "election round failed: cannot reach the store");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(ROUND) => {}
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        self.set(Role::Follower { leader: None });
        if let Err(e) = store.resign().await {
            tracing::warn!(error = %e, "cannot resign; the lease will expire on its own");
        }
    }
}
