//! E-mail receivers: one plain-text message per grouped notice, sent over
//! SMTP with STARTTLS required (unless a local relay is configured with
//! `starttls = false`), trusting what HTTPS receivers trust.
//!
//! lettre does the SMTP; this file turns its answers into the same
//! [`Outcome`] an HTTP receiver's produce, so retries and the timeline treat
//! both alike: a 5xx reply is a refusal (not retried), a 4xx reply or a lost
//! connection may pass (retried), a certificate nobody trusts will not.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::ReceiverConfig;
use crate::deliver::{Outcome, PostError};
use crate::group::Grouped;
use crate::payload;

/// `text` as an address (`a@b.c` or `Name <a@b.c>`), or why not.
pub fn mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("{text:?} is not an e-mail address ({e})"))
}

/// A message ready to go and the transport that takes it.
pub struct Mail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    message: Message,
}

impl Mail {
    /// Builds the message of `g` for `rc`; what cannot be built (a bad
    /// address or CA file in a config that skipped validation) is a
    /// configuration error, not worth retrying.
    pub fn prepare(
        rc: &ReceiverConfig,
        g: &Grouped,
        password: Option<String>,
        timeout: Duration,
    ) -> Result<Mail, PostError> {
        let config = |what: String| PostError::Config(what);
        let host = rc
            .host
            .clone()
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| config("no host".into()))?;
        let from = mailbox(rc.from.as_deref().unwrap_or_default()).map_err(config)?;
        let (subject, body) = payload::email(g);
        let mut builder = Message::builder().from(from).subject(subject);
        for to in &rc.to {
            builder = builder.to(mailbox(to).map_err(config)?);
        }
        let message = builder
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| config(e.to_string()))?;

        let tls = if rc.starttls() {
            let mut params = TlsParameters::builder(host.clone())
                .certificate_store(CertificateStore::WebpkiRoots);
            if let Some(path) = &rc.ca_file {
                let certs = crate::tls::read_ca_file(path).map_err(|e| config(e.to_string()))?;
                for c in certs {
                    let cert = Certificate::from_der(c.to_vec())
                        .map_err(|e| config(format!("{path:?}: {e}")))?;
                    params = params.add_root_certificate(cert);
                }
            }
            Tls::Required(params.build_rustls().map_err(|e| config(e.to_string()))?)
        } else {
            Tls::None
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(rc.smtp_port())
            .tls(tls)
            .timeout(Some(timeout));
        if let (Some(user), Some(pw)) = (&rc.username, password) {
            transport = transport.credentials(Credentials::new(user.clone(), pw));
        }
        Ok(Mail {
            transport: transport.build(),
            message,
        })
    }

    /// One SMTP session delivering the message, within `timeout`.
    pub async fn send(&self, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.transport.send(self.message.clone())).await {
            Err(_) => Outcome::Failed(PostError::Timeout(timeout.as_millis() as u64)),
            Ok(Ok(r)) => Outcome::Mailed {
                code: r.code().to_string().parse().unwrap_or(250),
                answer: r.message().collect::<Vec<_>>().join(" "),
            },
            Ok(Err(e)) => Outcome::Failed(classify(&e)),
        }
    }
}

/// Sorts lettre's error into what the judge needs to know.
fn classify(e: &lettre::transport::smtp::Error) -> PostError {
    if let Some(t) = crate::tls::find_tls_error(e) {
        return PostError::Tls(crate::tls::explain(t));
    }
    let text = crate::deliver::causes(e);
    if e.is_permanent() {
        PostError::SmtpRefused(text)
    } else if e.is_timeout() {
        PostError::Request(text)
    } else if e.is_client() || e.is_tls() {
        // Refused before any mail moved: STARTTLS missing, or a client-side
        // rule; the same session would be refused again.
        PostError::SmtpRefused(text)
    } else {
        PostError::Request(text)
    }
}
