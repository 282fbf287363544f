//! E-mail receivers against a real SMTP server in its own process (Python's
//! aiosmtpd, `tests/smtp_server.py`) on loopback (127.0.9.7x): STARTTLS
//! with a certificate from a CA made for the test and trusted through
//! `ca_file`, login, a server without STARTTLS refused, a final refusal not
//! retried, and `starttls = false` for a local relay.
//!
//! aiosmtpd is installed if missing (into a venv under the target dir);
//! when that fails the tests fail and say why: they never skip.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use switchyard_model::time::now_ms;
use switchyard_notify::{
    deliver, Delivery, Grouped, Notice, NotifyConfig, ReceiverConfig, ReceiverKind, RetryConfig,
    Severity,
};
use switchyard_testkit::TestCa;

/// A Python that can import aiosmtpd: the system's if it already can, else
/// a venv made once per target dir with aiosmtpd installed from PyPI.
fn python() -> &'static Path {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PY.get_or_init(|| {
        let has = |py: &Path| {
            Command::new(py)
                .args(["-c", "import aiosmtpd"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let system = PathBuf::from("python3");
        if has(&system) {
            return Ok(system);
        }
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aiosmtpd-venv");
        let py = venv.join("bin/python");
        if has(&py) {
            return Ok(py);
        }
        let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
            let out = cmd
                .output()
                .map_err(|e| format!("{what}: cannot run: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{what} failed ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
        run(
            Command::new(&py).args(["-m", "pip", "install", "--quiet", "aiosmtpd"]),
            "pip install aiosmtpd",
        )?;
        if has(&py) {
            Ok(py)
        } else {
            Err("aiosmtpd installed but not importable".into())
        }
    });
    match found {
        Ok(p) => p,
        Err(e) => panic!(
            "these tests need Python 3 with aiosmtpd (a real SMTP server); \
             install it with `python3 -m pip install --user aiosmtpd` \
             (scripts/test does): {e}"
        ),
    }
}

/// An SMTP server process writing what it accepts into `out`.
struct Smtp {
    addr: SocketAddr,
    out: tempfile::TempDir,
    child: Child,
}

#[derive(Default)]
struct SmtpOptions<'a> {
    tls: Option<&'a TestCa>,
    login: Option<(&'a str, &'a str)>,
    reject: Option<u16>,
}

impl Smtp {
    fn start(x: u8, o: SmtpOptions) -> Smtp {
        let addr = SocketAddr::from(([127, 0, 9, x], 2525));
        let out = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_server.py"))
            .args(["--host", &addr.ip().to_string()])
            .args(["--port", &addr.port().to_string()])
            .arg("--out")
            .arg(out.path());
        if let Some(ca) = o.tls {
            let cert = ca.server_cert(&[&addr.ip().to_string()]);
            let (c, k) = cert.write_pem(out.path(), "server");
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        if let Some((u, p)) = o.login {
            cmd.args(["--user", u, "--password", p]);
        }
        if let Some(code) = o.reject {
            cmd.args(["--reject", &code.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start smtp_server.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "smtp_server.py did not start");
        Smtp { addr, out, child }
    }

    /// `(envelope and session as JSON, message text)` of every accepted
    /// message, oldest first.
    fn received(&self) -> Vec<(serde_json::Value, String)> {
        let mut metas: Vec<PathBuf> = std::fs::read_dir(self.out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        metas.sort();
        metas
            .into_iter()
            .map(|m| {
                let meta = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
                let eml = std::fs::read_to_string(m.with_extension("eml")).unwrap();
                (meta, eml)
            })
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receiver(smtp: &Smtp) -> ReceiverConfig {
    ReceiverConfig {
        name: "mail".into(),
        kind: ReceiverKind::Email,
        host: Some(smtp.addr.ip().to_string()),
        port: Some(smtp.addr.port()),
        from: Some("Switchyard <switchyard@example.com>".into()),
        to: vec![
            "oncall@example.com".into(),
            "Ops Team <ops@example.com>".into(),
        ],
        ..ReceiverConfig::default()
    }
}

fn config(rc: ReceiverConfig, attempts: u32) -> NotifyConfig {
    let cfg = NotifyConfig {
        retry: RetryConfig {
            attempts,
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
            timeout_ms: 5000,
        },
        receivers: vec![rc],
        ..NotifyConfig::default()
    };
    assert_eq!(cfg.validate(|_| None), Ok(()));
    cfg
}

fn grouped() -> Grouped {
    let now = now_ms();
    Grouped::single(Notice {
        incident_id: "inc-42".into(),
        service: "catalog".into(),
        severity: Severity::Sev2,
        status: "mitigating".into(),
        title: "Errors in zone eu-1a".into(),
        summary: "5xx from zone eu-1a".into(),
        scopes: vec!["zone:eu/eu-1a".into()],
        event: "opened".into(),
        at_ms: now,
        started_at_ms: now,
        ended_at_ms: None,
        url: Some("http://127.0.0.1:7000/v1/incidents/inc-42".into()),
        urgent: false,
        acknowledged: false,
    })
}

async fn send(cfg: &NotifyConfig) -> Delivery {
    let mut out = deliver(cfg, &grouped(), &["mail".to_string()], |_| {}).await;
    out.remove(0)
}

#[tokio::test]
async fn mail_goes_over_starttls_with_login_trusting_the_ca_file() {
    let ca = TestCa::new("mail relay CA");
    let smtp = Smtp::start(
        71,
        SmtpOptions {
            tls: Some(&ca),
            login: Some(("switchyard", "s3cret-pw")),
            ..SmtpOptions::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut rc = receiver(&smtp);
    rc.ca_file = Some(ca.write_pem(dir.path(), "ca.pem").display().to_string());
    rc.username = Some("switchyard".into());
    rc.password = Some("s3cret-pw".into());
    let cfg = config(rc, 2);
    let d = send(&cfg).await;
    assert!(d.delivered, "{:#?}", d.attempts);
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].kind, "email");
    assert_eq!(d.attempts[0].error, None);

    let got = smtp.received();
    assert_eq!(got.len(), 1);
    let (meta, eml) = &got[0];
    assert_eq!(meta["tls"], true, "{meta}");
    assert_eq!(meta["login"], "switchyard");
    assert_eq!(meta["mail_from"], "switchyard@example.com");
    assert_eq!(
        meta["rcpt_tos"],
        serde_json::json!(["oncall@example.com", "ops@example.com"])
    );
    // Headers are folded and encoded as mail needs; read them unfolded.
    let unfolded = eml.replace("\r\n ", " ").replace("\r\n", "\n");
    assert!(
        unfolded.contains("Subject: =?utf-8?") || unfolded.contains("Subject: [SEV2] catalog"),
        "{unfolded}"
    );
    assert!(
        unfolded.contains("From: Switchyard <switchyard@example.com>"),
        "{unfolded}"
    );
    assert!(unfolded.contains("Content-Type: text/plain"), "{unfolded}");
    assert!(unfolded.contains("Errors in zone eu-1a"), "{unfolded}");
    assert!(
        unfolded.contains("Incident inc-42: http://127.0.0.1:7000/v1/incidents/inc-42"),
        "{unfolded}"
    );
}

#[tokio::test]
async fn without_the_ca_file_the_relay_certificate_is_refused_and_nothing_is_sent() {
    let ca = TestCa::new("mail relay CA");
    let smtp = Smtp::start(
        72,
        SmtpOptions {
            tls: Some(&ca),
            ..SmtpOptions::default()
        },
    );
    let cfg = config(receiver(&smtp), 3);
    let d = send(&cfg).await;
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 1, "{:#?}", d.attempts);
    let e = d.attempts[0].error.as_deref().unwrap();
    assert!(e.starts_with("TLS handshake failed: "), "{e}");
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(smtp.received().is_empty());
}

#[tokio::test]
async fn a_server_without_starttls_is_refused_unless_starttls_is_off() {
    let smtp = Smtp::start(73, SmtpOptions::default());
    let d = send(&config(receiver(&smtp), 3)).await;
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 1, "{:#?}", d.attempts);
    let e = d.attempts[0].error.as_deref().unwrap();
    assert!(e.starts_with("mail refused: "), "{e}");
    assert!(e.to_ascii_lowercase().contains("starttls"), "{e}");
    assert!(smtp.received().is_empty(), "nothing in clear text");

    let mut rc = receiver(&smtp);
    rc.starttls = Some(false);
    let d = send(&config(rc, 3)).await;
    assert!(d.delivered, "{:#?}", d.attempts);
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["tls"], false);
}

#[tokio::test]
async fn a_permanent_refusal_is_not_retried_and_a_transient_one_is() {
    let smtp = Smtp::start(
        74,
        SmtpOptions {
            reject: Some(554),
            ..SmtpOptions::default()
        },
    );
    let mut rc = receiver(&smtp);
    rc.starttls = Some(false);
    let d = send(&config(rc.clone(), 3)).await;
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 1, "{:#?}", d.attempts);
    let e = d.attempts[0].error.as_deref().unwrap();
    assert!(e.starts_with("mail refused: ") && e.contains("554"), "{e}");
    drop(smtp);

    let smtp = Smtp::start(
        75,
        SmtpOptions {
            reject: Some(451),
            ..SmtpOptions::default()
        },
    );
    let mut rc = receiver(&smtp);
    rc.starttls = Some(false);
    let d = send(&config(rc, 3)).await;
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 3, "{:#?}", d.attempts);
    assert!(d.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("retrying in 50 ms"));
}
