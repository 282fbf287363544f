//! The driver: desired sets → read → diff → apply → a report.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{diff, Desired, Provider, ProviderError, RrsetChange};

/// How hard to try. A push is repeated by its caller whenever the steering
/// decisions change, so these bound one push, not the convergence.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Tries per step (read, apply) for transient failures, the first
    /// included.
    pub attempts: u32,
    /// Pause before the second try; doubled before each further one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Times to read again and re-diff when the records changed between
    /// read and apply.
    pub conflict_rereads: u32,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            conflict_rereads: 2,
        }
    }
}

/// Which step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Read,
    Apply,
}

/// What one push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider already matched; nothing was sent.
    Unchanged { unchanged: usize },
    /// These changes were sent and accepted; the provider now matches.
    Sent {
        changes: Vec<RrsetChange>,
        unchanged: usize,
    },
    /// Nothing more was done after `error`; `planned` is what would have
    /// been sent (empty when reading failed). An UPDATE is atomic, so for
    /// RFC 2136 none of `planned` was applied.
    Failed {
        stage: Stage,
        planned: Vec<RrsetChange>,
        error: ProviderError,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    pub zone: String,
    pub provider: String,
    pub outcome: PushOutcome,
    /// Calls made to the provider (reads and applies, retries included).
    pub calls: u32,
}

/// The serializable form of a [`PushReport`], for the control plane's
/// history and for logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSummary {
    pub zone: String,
    pub provider: String,
    pub result: PushResult,
    /// Sent, or planned when the push failed.
    pub changes: Vec<RrsetChange>,
    pub unchanged: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub calls: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushResult {
    Unchanged,
    Sent,
    Failed,
}

impl PushReport {
    pub fn summary(&self) -> PushSummary {
        let base = |result, changes: &[RrsetChange], unchanged| PushSummary {
            zone: self.zone.clone(),
            provider: self.provider.clone(),
            result,
            changes: changes.to_vec(),
            unchanged,
            stage: None,
            error_kind: None,
            error: None,
            calls: self.calls,
        };
        match &self.outcome {
            PushOutcome::Unchanged { unchanged } => base(PushResult::Unchanged, &[], *unchanged),
            PushOutcome::Sent { changes, unchanged } => base(PushResult::Sent, changes, *unchanged),
            PushOutcome::Failed {
                stage,
                planned,
                error,
            } => PushSummary {
                stage: Some(*stage),
                error_kind: Some(error.kind().to_string()),
                error: Some(error.to_string()),
                ..base(PushResult::Failed, planned, 0)
            },
        }
    }

    pub fn error(&self) -> Option<&ProviderError> {
        match &self.outcome {
            PushOutcome::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Makes `provider` hold `desired` for the managed names, sending only the
/// RRsets that differ.
pub async fn push(provider: &dyn Provider, desired: &Desired, opts: &PushOptions) -> PushReport {
    let mut calls = 0;
    let mut rereads = 0;
    // Changes whose apply hit a conflict: if reading again shows the desired
    // state, they landed (a retried apply whose first try did arrive, or
    // another writer converging on the same decision).
    let mut attempted: Option<Vec<RrsetChange>> = None;
    let outcome = loop {
        let current = match with_retries(opts, &mut calls, || {
            provider.current(&desired.zone, &desired.names)
        })
        .await
        {
            Ok(c) => c,
            Err(error) => {
                break PushOutcome::Failed {
                    stage: Stage::Read,
                    planned: Vec::new(),
                    error,
                }
            }
        };
        let d = diff(desired, &current);
        if d.is_empty() {
            break match attempted {
                Some(changes) => PushOutcome::Sent {
                    changes,
                    unchanged: d.unchanged,
                },
                None => PushOutcome::Unchanged {
                    unchanged: d.unchanged,
                },
            };
        }
        match with_retries(opts, &mut calls, || provider.apply(&d)).await {
            Ok(()) => {
                break PushOutcome::Sent {
                    changes: d.changes,
                    unchanged: d.unchanged,
                }
            }
            Err(e @ ProviderError::Conflict { .. }) if rereads < opts.conflict_rereads => {
                rereads += 1;
                tracing::info!(zone = %desired.zone, error = %e, "records changed under the push; reading again");
                attempted = Some(d.changes);
            }
            Err(error) => {
                break PushOutcome::Failed {
                    stage: Stage::Apply,
                    planned: d.changes,
                    error,
                }
            }
        }
    };
    PushReport {
        zone: desired.zone.to_string(),
        provider: provider.describe(),
        outcome,
        calls,
    }
}

async fn with_retries<T, F, Fut>(
    opts: &PushOptions,
    calls: &mut u32,
    mut call: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut backoff = opts.initial_backoff;
    let mut tries = 0;
    loop {
        tries += 1;
        *calls += 1;
        match call().await {
            Err(e) if e.is_transient() && tries < opts.attempts.max(1) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "DNS provider call failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(opts.max_backoff);
            }
            other => return other,
        }
    }
}
