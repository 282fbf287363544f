//! Keeping a provider in step over time: push whenever the desired state
//! changes, and check again every `resync` so a change made at the provider
//! behind Switchyard's back (by hand, by a restore from backup) is undone.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::push::{push, PushOptions, PushReport};
use super::{Desired, Provider};

#[derive(Clone, Debug)]
pub struct FollowOptions {
    pub push: PushOptions,
    /// How often to read the provider when nothing changed on our side.
    pub resync: Duration,
    /// After a failed push, wait this long before the next (then the
    /// normal `resync`). Shorter than `resync`: a failover must not wait a
    /// full resync for a network blip; longer than zero: a refused key must
    /// not make us hammer the server.
    pub after_failure: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            push: PushOptions::default(),
            resync: Duration::from_secs(60),
            after_failure: Duration::from_secs(5),
        }
    }
}

/// Runs until `desired`'s sender is dropped (or `reports` is closed).
/// `None` means nothing to push yet (no decisions known); changes that
/// arrive during a push are coalesced: the next push takes the latest.
/// Every push's report is sent on `reports`, for logs, metrics and the
/// control plane's history.
pub async fn follow(
    provider: &dyn Provider,
    mut desired: watch::Receiver<Option<Desired>>,
    opts: FollowOptions,
    reports: mpsc::Sender<PushReport>,
) {
    let mut wait = Duration::ZERO;
    loop {
        if !wait.is_zero() {
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let current = desired.borrow_and_update().clone();
        let Some(current) = current else {
            // Nothing known yet: wait for the first decisions.
            if desired.changed().await.is_err() {
                return;
            }
            wait = Duration::ZERO;
            continue;
        };
        let report = push(provider, &current, &opts.push).await;
        wait = if report.error().is_some() {
            opts.after_failure
        } else {
            opts.resync
        };
        if reports.send(report).await.is_err() {
            return;
        }
    }
}
