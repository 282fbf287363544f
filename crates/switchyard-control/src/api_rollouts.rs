//! The rollout API: start a staged rollout of a new config (or only plan
//! one), list and show rollouts, pause, resume or abort one. Reads are
//! open; the rest needs an `operate` token and happens on the leader
//! (followers pass it on). A config with risky differences nobody
//! acknowledged is 409 naming each; another rollout in the way is 409; a
//! config that does not validate is 400 with every problem and its path.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use switchyard_api::rollout::{RolloutAction, RolloutList, StartRollout};
use switchyard_model::Scope;

use crate::plane::now_ms;
use crate::respond::{
    authorize, body, error, not_found, read_body, unavailable, within_limits, Answer, Api,
};
use crate::rollout::Hand;
use crate::rollout_run::{HandError, StartError};
use crate::store::Store;
use switchyard_api::limits;

pub fn routes<S: Store + 'static>() -> Router<Api<S>> {
    Router::new()
        .route("/v1/rollouts", get(list::<S>).post(start::<S>))
        .route("/v1/rollouts/{id}", get(show::<S>))
        .route("/v1/rollouts/{id}/{action}", post(act::<S>))
}

#[allow(clippy::result_large_err)]
fn refused_start(e: StartError) -> Response {
    match e {
        StartError::Invalid(reasons) => error(StatusCode::BAD_REQUEST, "invalid", reasons),
        StartError::NeedsAccept(plan) => {
            let mut reasons: Vec<String> = plan
                .differences
                .iter()
                .filter(|d| plan.needs_accept.iter().any(|k| k == d.kind.as_str()))
                .map(|d| {
                    format!(
                        "{} ({}): {} → {}: {}",
                        d.path,
                        d.kind.as_str(),
                        d.before,
                        d.after,
                        d.why
                    )
                })
                .collect();
            reasons.push(format!(
                "nothing started: to go ahead, acknowledge with accept = [{}]",
                plan.needs_accept
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            error(StatusCode::CONFLICT, "needs_acknowledgement", reasons)
        }
        StartError::Conflict(why) => error(StatusCode::CONFLICT, "conflict", vec![why]),
        StartError::Refused(refusals) => {
            let body = switchyard_api::ErrorBody {
                error: "refused".into(),
                reasons: refusals
                    .iter()
                    .map(|(rule, why)| format!("{rule}: {why}"))
                    .collect(),
                rules: refusals
                    .into_iter()
                    .map(|(rule, message)| switchyard_api::Refusal {
                        rule: rule.to_string(),
                        message,
                    })
                    .collect(),
            };
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        StartError::Store(e) => unavailable(e),
    }
}

async fn start<S: Store>(State(api): State<Api<S>>, headers: HeaderMap, raw: Body) -> Answer {
    let who = authorize(&api, &headers, Scope::Operate)?;
    let req: StartRollout = body(&read_body(raw).await?)?;
    let mut fields = vec![
        ("reason", req.reason.as_str(), limits::REASON),
        ("canary", req.canary.as_deref().unwrap_or(""), limits::NAME),
        ("bake", req.bake.as_deref().unwrap_or(""), limits::NAME),
    ];
    fields.extend(
        req.accept
            .iter()
            .map(|a| ("accept", a.as_str(), limits::NAME)),
    );
    within_limits(&fields)?;
    if req.accept.len() > 32 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            vec![format!(
                "accept: at most 32 kinds, got {}",
                req.accept.len()
            )],
        ));
    }
    if req.dry_run {
        let (plan, _) = api
            .rollouts
            .plan(&api.plane, &req)
            .await
            .map_err(refused_start)?;
        return Ok(Json(plan).into_response());
    }
    let r = api
        .rollouts
        .start(&api.plane, &req, &who, now_ms())
        .await
        .map_err(refused_start)?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

async fn list<S: Store>(State(api): State<Api<S>>) -> Answer {
    let rollouts = api.rollouts.list(&api.plane).await.map_err(unavailable)?;
    Ok(Json(RolloutList { rollouts }).into_response())
}

async fn show<S: Store>(State(api): State<Api<S>>, Path(id): Path<String>) -> Answer {
    match api
        .rollouts
        .get(&api.plane, &id)
        .await
        .map_err(unavailable)?
    {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(not_found(format!("no rollout {id:?}"))),
    }
}

async fn act<S: Store>(
    State(api): State<Api<S>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let who = authorize(&api, &headers, Scope::Operate)?;
    let hand = match RolloutAction::parse(&action) {
        Some(RolloutAction::Pause) => Hand::Pause,
        Some(RolloutAction::Resume) => Hand::Resume,
        Some(RolloutAction::Abort) => Hand::Abort,
        None => {
            return Err(not_found(format!(
                "no action {action:?} on a rollout (pause, resume, abort)"
            )))
        }
    };
    match api
        .rollouts
        .hand(&api.plane, &api.incidents, &id, hand, &who, now_ms())
        .await
    {
        Ok(r) => Ok(Json(r).into_response()),
        Err(HandError::NotFound) => Err(not_found(format!("no rollout {id:?}"))),
        Err(HandError::Refused(why)) => {
            Err(error(StatusCode::CONFLICT, "invalid_transition", vec![why]))
        }
        Err(HandError::Store(e)) => Err(unavailable(e)),
    }
}
