//! `GET /v1/live`: the live view as server-sent events (`event: live`),
//! a frame once a second and at once after the controls change, so a
//! console shows a change within a second. Open like the other reads;
//! the number of streams is bounded, since each holds a connection and a
//! task for as long as the viewer stays.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, StreamExt};
use switchyard_api::live::LiveView;

use crate::plane::now_ms;
use crate::respond::{error, Api};
use crate::store::Store;

/// Live streams one plane serves at once; more get 503 and may retry.
pub const MAX_VIEWERS: usize = 64;

pub fn routes<S: Store + 'static>() -> Router<Api<S>> {
    Router::new().route("/v1/live", get(live::<S>))
}

/// One frame, as of now.
pub fn frame<S: Store>(api: &Api<S>) -> LiveView {
    let now = now_ms();
    let config = api.plane.config();
    let (traffic, edges) = {
        let l = api.plane.live.lock().unwrap_or_else(|e| e.into_inner());
        (l.traffic(&config, now), l.edges(&config, now))
    };
    // Only what is open, copied: the view keeps up to 200 findings.
    let (findings, mitigations) = {
        let o = api.plane.observed.lock().unwrap_or_else(|e| e.into_inner());
        let open = o.findings.iter().filter(|f| f.end_ms.is_none()).cloned();
        (open.collect(), o.mitigations.clone())
    };
    LiveView {
        at_ms: now,
        status: crate::api::status_view(api),
        traffic,
        edges,
        findings,
        mitigations,
        plane: crate::api::leader_view(api),
    }
}

async fn live<S: Store + 'static>(State(api): State<Api<S>>) -> Response {
    let Ok(permit) = api.plane.viewers.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_viewers",
            vec![format!(
                "this plane serves at most {MAX_VIEWERS} live streams at once; retry later"
            )],
        );
    };
    // Counted while the stream lives: the guard goes with the permit.
    let gauge = api.plane.metrics.live_viewers.clone();
    gauge.inc();
    let permit = (permit, Viewer(gauge));
    let to_event = |v: &LiveView| {
        Ok::<_, Infallible>(
            Event::default()
                .event("live")
                .data(serde_json::to_string(v).expect("a live view serializes")),
        )
    };
    let changes = api.plane.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (api.clone(), changes, tick, permit);
    let frames = stream::unfold(
        state,
        move |(api, mut changes, mut tick, permit)| async move {
            tokio::select! {
                _ = tick.tick() => {}
                r = changes.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                        return None;
                    }
                }
            }
            let v = frame(&api);
            Some((to_event(&v), (api, changes, tick, permit)))
        },
    );
    let mut stopping = api.stopping.clone();
    let frames = frames.take_until(async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    Sse::new(frames)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}

/// Takes its viewer off the gauge when the stream ends.
struct Viewer(prometheus_client::metrics::gauge::Gauge);

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.dec();
    }
}
