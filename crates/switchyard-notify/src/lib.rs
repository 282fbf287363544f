//! Incident notifications: who hears about an incident, when, and in what
//! shape, and proof of whether they were told.
//!
//! The flow for the control plane: each [`Notice`] an incident emits is
//! pushed into a [`Grouper`]; whatever [`Grouper::due`] returns is routed with
//! [`route()`] (silences first, then the configured routes) and handed to
//! [`deliver()`], whose attempts go into the incident's timeline. Everything
//! except [`deliver()`] is pure and takes the clock as an argument.
//!
//! Modules: [`config`] (the `[control.notify]` table and its validation),
//! [`types`], [`route`](mod@route), [`group`], [`resend`] (keeping
//! Alertmanager's alerts firing), [`payload`] (webhook, Slack, Alertmanager,
//! PagerDuty and e-mail bodies), [`tls`] (whom HTTPS and STARTTLS trust),
//! [`email`] (SMTP) and [`deliver`](mod@deliver) (sending, with retries).
#![forbid(unsafe_code)]

pub mod config;
pub mod deliver;
pub mod email;
pub mod group;
pub mod payload;
pub mod resend;
pub mod route;
pub mod tls;
pub use switchyard_model::notice as types;

pub use config::{
    parse_http_url, HttpTarget, NotifyConfig, ReceiverConfig, ReceiverKind, RetryConfig,
    RouteConfig, SilenceConfig, UrlError, DEFAULT_RESEND_MS, PAGERDUTY_URL,
};
pub use deliver::{deliver, judge, Judgement, Outcome, PostError};
pub use group::{Grouped, Grouper};
pub use resend::Resender;
pub use route::{route, Routed};
pub use types::{Attempt, Delivery, Notice, ParseSeverityError, Severity, Silence};
