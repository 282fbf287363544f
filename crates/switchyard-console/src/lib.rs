//! The web console (`/ui` on the control plane's listener): its pages and
//! scripts, embedded in the binary so a fresh machine needs nothing at run
//! time ([`assets`]); the session cookie and CSRF token it logs people in
//! with ([`session`]); and the Markdown of postmortems and drill reports
//! rendered into HTML that cannot carry a script ([`markdown`]).
//!
//! The HTTP handlers live in the control plane (`api_console`), which owns
//! tokens and scopes; this crate holds what does not need the plane.
#![forbid(unsafe_code)]

pub mod assets;
pub mod markdown;
pub mod session;
