//! The RFC 2136 provider against a real BIND 9: what Switchyard pushes is
//! what `dig` gets back from named.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use switchyard_dns::provider::rfc2136::{Rfc2136, Rfc2136Config, TsigAlg, TsigKey};
use switchyard_dns::provider::{
    diff, push, Desired, Provider, ProviderError, PushOptions, PushOutcome,
};
use switchyard_testkit::{Bind, BindKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ZONE: &str = "example.test";
const REGION_A: [&str; 2] = ["192.0.2.1", "192.0.2.2"];
const REGION_B: [&str; 2] = ["198.51.100.1", "198.51.100.2"];

/// The zone as the steering decisions left it before the failover: each
/// region's name answers with its own edges; `www` is someone else's.
const RECORDS: &[&str] = &[
    "a.svc 30 IN A 192.0.2.1",
    "a.svc 30 IN A 192.0.2.2",
    "a.svc 30 IN AAAA 2001:db8:a::1",
    "b.svc 30 IN A 198.51.100.1",
    "b.svc 30 IN A 198.51.100.2",
    "www 300 IN A 203.0.113.80",
];

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn provider_with(server: SocketAddr, key: &BindKey) -> Rfc2136 {
    let key = TsigKey::new(
        &key.name,
        TsigAlg::parse(&key.algorithm).unwrap(),
        &key.secret,
    )
    .unwrap();
    Rfc2136::new(Rfc2136Config::new(server, key)).unwrap()
}

fn provider(bind: &Bind) -> Rfc2136 {
    provider_with(bind.addr, &bind.update_key)
}

/// Region A's users are sent to region B's edges; everything else as before.
fn after_failover() -> Desired {
    let mut d = Desired::new(ZONE).unwrap();
    let mut a_names = ips(&REGION_B);
    a_names.extend(ips(&["2001:db8:a::1"]));
    d.set("a.svc.example.test", 30, a_names).unwrap();
    d.set("b.svc.example.test", 30, ips(&REGION_B)).unwrap();
    d
}

fn before_failover() -> Desired {
    let mut d = Desired::new(ZONE).unwrap();
    let mut a_names = ips(&REGION_A);
    a_names.extend(ips(&["2001:db8:a::1"]));
    d.set("a.svc.example.test", 30, a_names).unwrap();
    d.set("b.svc.example.test", 30, ips(&REGION_B)).unwrap();
    d
}

fn update_lines(bind: &Bind) -> Vec<String> {
    bind.log()
        .lines()
        .filter(|l| l.contains("updating zone"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn failover_is_pushed_and_dig_returns_the_new_region() {
    let bind = Bind::start(ZONE, RECORDS).await;
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_A);
    let serial = bind.serial();

    let p = provider(&bind);
    let report = push(&p, &after_failover(), &PushOptions::default()).await;

    let PushOutcome::Sent { changes, unchanged } = &report.outcome else {
        panic!(
            "expected the change to be sent: {report:?}\n{}",
            bind.log_tail()
        );
    };
    // Only region A's A set moved; its AAAA set and region B's name did not.
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].key.to_string(), "a.svc.example.test. A");
    assert_eq!(*unchanged, 2);

    // A real resolver's view: the new addresses, with the TTL pushed.
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_B);
    assert_eq!(
        bind.dig("a.svc.example.test", "A"),
        vec![
            "a.svc.example.test. 30 IN A 198.51.100.1",
            "a.svc.example.test. 30 IN A 198.51.100.2"
        ]
    );
    assert_eq!(
        bind.dig_short("a.svc.example.test", "AAAA"),
        ["2001:db8:a::1"]
    );
    assert_eq!(bind.dig_short("www.example.test", "A"), ["203.0.113.80"]);
    // One UPDATE, applied once.
    assert_eq!(bind.serial(), serial + 1);

    // What named itself saw: the A set at a.svc deleted and two RRs added;
    // nothing at b.svc nor for the AAAA set.
    let lines = update_lines(&bind);
    assert!(
        lines.iter().all(|l| l.contains("'a.svc.example.test' A")),
        "{lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("deleting rrset"))
            .count(),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("adding an RR")).count(),
        2,
        "{lines:#?}"
    );

    // The audit form.
    let summary = serde_json::to_value(report.summary()).unwrap();
    assert_eq!(summary["result"], "sent");
    assert_eq!(summary["zone"], "example.test.");
    assert_eq!(summary["changes"][0]["name"], "a.svc.example.test.");
    assert_eq!(summary["changes"][0]["type"], "A");
    assert_eq!(
        summary["changes"][0]["to"]["addrs"],
        serde_json::json!(REGION_B)
    );
    assert_eq!(
        summary["provider"],
        format!("rfc2136 {} key switchyard-test.", bind.addr)
    );

    // Failing back is the same path the other way.
    let back = push(&p, &before_failover(), &PushOptions::default()).await;
    assert!(matches!(back.outcome, PushOutcome::Sent { .. }), "{back:?}");
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_A);
}

#[tokio::test]
async fn an_unchanged_desired_state_sends_nothing() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let p = provider(&bind);
    let serial = bind.serial();

    let report = push(&p, &before_failover(), &PushOptions::default()).await;
    assert_eq!(
        report.outcome,
        PushOutcome::Unchanged { unchanged: 3 },
        "{report:?}"
    );
    // One read, no apply.
    assert_eq!(report.calls, 1);
    assert_eq!(bind.serial(), serial);
    assert!(update_lines(&bind).is_empty());

    // After a change, pushing the same state again is again a no-op.
    let first = push(&p, &after_failover(), &PushOptions::default()).await;
    assert!(
        matches!(first.outcome, PushOutcome::Sent { .. }),
        "{first:?}"
    );
    let serial = bind.serial();
    let again = push(&p, &after_failover(), &PushOptions::default()).await;
    assert!(
        matches!(again.outcome, PushOutcome::Unchanged { .. }),
        "{again:?}"
    );
    assert_eq!(bind.serial(), serial);
    assert_eq!(
        serde_json::to_value(again.summary()).unwrap()["result"],
        "unchanged"
    );
}

#[tokio::test]
async fn names_are_created_and_emptied_and_other_names_left_alone() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let p = provider(&bind);
    let mut d = before_failover();
    d.set("c.svc.example.test", 15, ips(&["2001:db8:c::1"]))
        .unwrap();
    // Region A evacuated entirely: its name answers nothing.
    d.set("a.svc.example.test", 30, []).unwrap();

    let report = push(&p, &d, &PushOptions::default()).await;
    assert!(
        matches!(report.outcome, PushOutcome::Sent { .. }),
        "{report:?}"
    );
    assert_eq!(
        bind.dig("c.svc.example.test", "AAAA"),
        ["c.svc.example.test. 15 IN AAAA 2001:db8:c::1"]
    );
    assert!(bind.dig("a.svc.example.test", "A").is_empty());
    assert!(bind.dig("a.svc.example.test", "AAAA").is_empty());
    assert_eq!(bind.dig_short("b.svc.example.test", "A"), REGION_B);
    assert_eq!(bind.dig_short("www.example.test", "A"), ["203.0.113.80"]);
}

#[tokio::test]
async fn a_wrong_tsig_key_is_refused_by_bind_and_named_in_the_error() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let serial = bind.serial();
    let opts = PushOptions::default();

    // A key named does not know at all.
    let unknown = BindKey {
        name: "no-such-key.".into(),
        ..bind.update_key.clone()
    };
    let report = push(
        &provider_with(bind.addr, &unknown),
        &after_failover(),
        &opts,
    )
    .await;
    let err = report
        .error()
        .unwrap_or_else(|| panic!("{report:?}"))
        .clone();
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    let msg = err.to_string();
    for part in [
        "zone example.test.",
        &bind.addr.to_string(),
        "NOTAUTH/BADKEY",
        "`no-such-key.`",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    // Refusals are not retried.
    assert_eq!(report.calls, 1);

    // The right name with another secret.
    let forged = BindKey {
        secret: bind.other_key.secret.clone(),
        ..bind.update_key.clone()
    };
    let forged_provider = provider_with(bind.addr, &forged);
    let report = push(&forged_provider, &after_failover(), &opts).await;
    let msg = report
        .error()
        .unwrap_or_else(|| panic!("{report:?}"))
        .to_string();
    assert!(msg.contains("NOTAUTH/BADSIG"), "{msg}");
    assert!(msg.contains("`switchyard-test.`"), "{msg}");
    assert!(msg.contains("secret differs"), "{msg}");

    // The UPDATE itself, sent with the forged key, is refused the same way.
    let good = provider(&bind);
    let current = good
        .current(&after_failover().zone, &after_failover().names)
        .await
        .unwrap();
    let planned = diff(&after_failover(), &current);
    assert_eq!(planned.changes.len(), 1);
    let err = forged_provider.apply(&planned).await.unwrap_err();
    assert!(err.to_string().contains("NOTAUTH/BADSIG"), "{err}");

    // Named kept the old answer and did not bump the serial.
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_A);
    assert_eq!(bind.serial(), serial);
    assert!(update_lines(&bind).is_empty());
}

#[tokio::test]
async fn a_key_without_update_rights_is_refused() {
    let bind = Bind::start(ZONE, RECORDS).await;
    // named knows this key (so reading with it works) but the zone's
    // allow-update does not list it.
    let p = provider_with(bind.addr, &bind.other_key);
    let report = push(&p, &after_failover(), &PushOptions::default()).await;
    let PushOutcome::Failed {
        stage,
        planned,
        error,
    } = &report.outcome
    else {
        panic!("expected a refusal: {report:?}");
    };
    assert_eq!(
        serde_json::to_value(stage).unwrap(),
        serde_json::json!("apply")
    );
    assert_eq!(planned.len(), 1);
    let msg = error.to_string();
    assert!(msg.contains("(REFUSED)"), "{msg}");
    assert!(
        msg.contains("key `not-allowed.` may not update zone example.test."),
        "{msg}"
    );
    assert_eq!(report.calls, 2, "one read and one refused apply, no retry");
    let summary = serde_json::to_value(report.summary()).unwrap();
    assert_eq!(summary["result"], "failed");
    assert_eq!(summary["error_kind"], "rejected");
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_A);
}

#[tokio::test]
async fn a_change_made_after_the_read_is_not_overwritten_blindly() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let p = provider(&bind);
    let desired = after_failover();
    let current = p.current(&desired.zone, &desired.names).await.unwrap();
    let stale = diff(&desired, &current);

    // Someone else changes region A's set in between.
    let mut other = before_failover();
    other
        .set(
            "a.svc.example.test",
            30,
            ips(&["192.0.2.9", "2001:db8:a::1"]),
        )
        .unwrap();
    let r = push(&p, &other, &PushOptions::default()).await;
    assert!(matches!(r.outcome, PushOutcome::Sent { .. }), "{r:?}");

    // The stale UPDATE's prerequisite fails: named answers NXRRSET.
    let err = p.apply(&stale).await.unwrap_err();
    assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("(NXRRSET)"), "{err}");
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), ["192.0.2.9"]);

    // The driver reads again and converges.
    let r = push(&p, &desired, &PushOptions::default()).await;
    assert!(matches!(r.outcome, PushOutcome::Sent { .. }), "{r:?}");
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_B);
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let relay = front(bind.addr, 2, Meddle::Close).await;
    let p = provider_with(relay, &bind.update_key);
    let opts = PushOptions {
        initial_backoff: Duration::from_millis(50),
        ..PushOptions::default()
    };
    let report = push(&p, &after_failover(), &opts).await;
    assert!(
        matches!(report.outcome, PushOutcome::Sent { .. }),
        "{report:?}"
    );
    // Two dropped reads, the read that worked, the apply.
    assert_eq!(report.calls, 4);
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_B);

    // With one try only, the same path is an error naming the relay.
    let relay = front(bind.addr, 1, Meddle::Close).await;
    let p = provider_with(relay, &bind.update_key);
    let once = PushOptions {
        attempts: 1,
        ..opts
    };
    let report = push(&p, &before_failover(), &once).await;
    let err = report.error().unwrap_or_else(|| panic!("{report:?}"));
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&relay.to_string()), "{err}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    // Accepts connections and reads, but never writes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.flush().await;
            held.push(s);
        }
    });
    let key = TsigKey::new("k.", TsigAlg::HmacSha256, "c2VjcmV0").unwrap();
    let mut cfg = Rfc2136Config::new(addr, key);
    cfg.timeout = Duration::from_millis(200);
    let p = Rfc2136::new(cfg).unwrap();
    let opts = PushOptions {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
        ..PushOptions::default()
    };
    let report = push(&p, &after_failover(), &opts).await;
    let err = report.error().unwrap_or_else(|| panic!("{report:?}"));
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("no answer within 200ms"), "{err}");
    assert_eq!(report.calls, 2);
}

/// Reads one length-framed DNS message from `s`.
async fn read_frame(s: &mut tokio::net::TcpStream) -> Option<Message> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.ok()?;
    Message::from_vec(&buf).ok()
}

async fn write_frame(s: &mut tokio::net::TcpStream, m: &Message) {
    let bytes = m.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    let _ = s.write_all(&framed).await;
}

/// What a [`front`] does with each of its first connections.
#[derive(Clone, Copy)]
enum Meddle {
    /// Closes it without a word, as a restarting server or a flaky path does.
    Close,
    /// Answers every request on it with this, itself.
    Answer(fn(&Message) -> Message),
}

/// A TCP relay to `target` that meddles with its first `first` connections.
async fn front(target: SocketAddr, first: usize, meddle: Meddle) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seen = 0;
        while let Ok((mut client, _)) = listener.accept().await {
            seen += 1;
            if seen <= first {
                match meddle {
                    Meddle::Close => drop(client),
                    Meddle::Answer(answer) => {
                        tokio::spawn(async move {
                            while let Some(req) = read_frame(&mut client).await {
                                write_frame(&mut client, &answer(&req)).await;
                            }
                        });
                    }
                }
                continue;
            }
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

fn servfail(req: &Message) -> Message {
    Message::error_msg(
        req.metadata.id,
        req.metadata.op_code,
        ResponseCode::ServFail,
    )
}

/// What an off-path forger would send: a plausible authoritative answer,
/// unsigned.
fn forged_answer(req: &Message) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.authoritative = true;
    m.queries = req.queries.clone();
    if let Some(q) = req.queries.first() {
        if q.query_type() == RecordType::A {
            m.answers.push(Record::from_rdata(
                q.name().clone(),
                30,
                RData::A(A("203.0.113.66".parse().unwrap())),
            ));
        }
    }
    m
}

#[tokio::test]
async fn servfail_is_retried_and_then_pushed() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let addr = front(bind.addr, 1, Meddle::Answer(servfail)).await;
    let p = provider_with(addr, &bind.update_key);
    let opts = PushOptions {
        initial_backoff: Duration::from_millis(20),
        ..PushOptions::default()
    };
    let report = push(&p, &after_failover(), &opts).await;
    assert!(
        matches!(report.outcome, PushOutcome::Sent { .. }),
        "{report:?}"
    );
    assert_eq!(report.calls, 3, "a SERVFAILed read, a read, an apply");
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_B);

    // Always SERVFAIL: the tries run out and the error says so.
    let addr = front(bind.addr, usize::MAX, Meddle::Answer(servfail)).await;
    let p = provider_with(addr, &bind.update_key);
    let report = push(&p, &before_failover(), &opts).await;
    let err = report.error().unwrap_or_else(|| panic!("{report:?}"));
    assert!(
        matches!(err, ProviderError::ServerFailure { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("(SERVFAIL)"), "{err}");
    assert_eq!(report.calls, opts.attempts);
}

#[tokio::test]
async fn an_unsigned_answer_is_not_believed() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let addr = front(bind.addr, usize::MAX, Meddle::Answer(forged_answer)).await;
    let p = provider_with(addr, &bind.update_key);
    let report = push(&p, &after_failover(), &PushOptions::default()).await;
    let err = report.error().unwrap_or_else(|| panic!("{report:?}"));
    assert!(matches!(err, ProviderError::BadResponse { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("the answer is not signed with TSIG key `switchyard-test.`"),
        "{err}"
    );
    assert_eq!(report.calls, 1, "not retried");
}

#[tokio::test]
async fn two_hundred_names_in_one_update() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let p = provider(&bind);
    let serial = bind.serial();
    let mut d = before_failover();
    for i in 0..200u32 {
        let v4: IpAddr = format!("10.{}.{}.1", i / 256, i % 256).parse().unwrap();
        let v6: IpAddr = format!("2001:db8:{i:x}::1").parse().unwrap();
        d.set(&format!("n{i}.svc.example.test"), 30, [v4, v6])
            .unwrap();
    }
    let started = std::time::Instant::now();
    let report = push(&p, &d, &PushOptions::default()).await;
    let created = started.elapsed();
    let PushOutcome::Sent { changes, unchanged } = &report.outcome else {
        panic!("{report:?}");
    };
    assert_eq!((changes.len(), *unchanged), (400, 3));
    assert_eq!(bind.serial(), serial + 1, "one UPDATE");
    assert_eq!(
        bind.dig_short("n199.svc.example.test", "AAAA"),
        ["2001:db8:c7::1"]
    );

    let started = std::time::Instant::now();
    let again = push(&p, &d, &PushOptions::default()).await;
    let checked = started.elapsed();
    assert_eq!(again.outcome, PushOutcome::Unchanged { unchanged: 403 });
    println!(
        "202 names: created in {created:?} (read 404 sets + one UPDATE), \
         checked unchanged in {checked:?}"
    );
}

#[tokio::test]
async fn follow_pushes_each_decision_and_undoes_drift() {
    use switchyard_dns::provider::{follow, FollowOptions, PushSummary};
    use switchyard_testkit::eventually;
    use tokio::sync::{mpsc, watch};

    let bind = Bind::start(ZONE, RECORDS).await;
    let (decisions, rx) = watch::channel(None);
    let (report_tx, mut reports) = mpsc::channel(64);
    let opts = FollowOptions {
        resync: Duration::from_millis(300),
        ..FollowOptions::default()
    };
    let addr = bind.addr;
    let key = bind.update_key.clone();
    let task = tokio::spawn(async move {
        let p = provider_with(addr, &key);
        follow(&p, rx, opts, report_tx).await;
    });

    decisions.send_replace(Some(after_failover()));
    eventually(
        "the failover reaches BIND",
        Duration::from_secs(5),
        || async {
            let got = bind.dig_short("a.svc.example.test", "A");
            (got == REGION_B).then_some(()).ok_or(format!("{got:?}"))
        },
    )
    .await;

    // Someone edits the record at BIND by hand; the next resync restores it.
    let by_hand = provider(&bind);
    let mut edit = after_failover();
    edit.set(
        "a.svc.example.test",
        30,
        ips(&["192.0.2.99", "2001:db8:a::1"]),
    )
    .unwrap();
    let r = push(&by_hand, &edit, &PushOptions::default()).await;
    assert!(matches!(r.outcome, PushOutcome::Sent { .. }), "{r:?}");
    eventually(
        "drift at BIND is undone",
        Duration::from_secs(5),
        || async {
            let got = bind.dig_short("a.svc.example.test", "A");
            (got == REGION_B).then_some(()).ok_or(format!("{got:?}"))
        },
    )
    .await;

    // Failing back is one more decision.
    decisions.send_replace(Some(before_failover()));
    eventually(
        "the failback reaches BIND",
        Duration::from_secs(5),
        || async {
            let got = bind.dig_short("a.svc.example.test", "A");
            (got == REGION_A).then_some(()).ok_or(format!("{got:?}"))
        },
    )
    .await;

    // The loop ends when the decisions do; its reports tell the story.
    drop(decisions);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("follow ends when the sender is dropped")
        .unwrap();
    let mut summaries: Vec<PushSummary> = Vec::new();
    while let Ok(r) = reports.try_recv() {
        summaries.push(r.summary());
    }
    let sent: Vec<String> = summaries
        .iter()
        .filter(|s| s.result == switchyard_dns::provider::push::PushResult::Sent)
        .map(|s| {
            let c = &s.changes[0];
            let to: Vec<String> =
                c.to.as_ref()
                    .unwrap()
                    .addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
            format!("{} {}", c.key, to.join(","))
        })
        .collect();
    assert_eq!(
        sent,
        [
            "a.svc.example.test. A 198.51.100.1,198.51.100.2",
            "a.svc.example.test. A 198.51.100.1,198.51.100.2",
            "a.svc.example.test. A 192.0.2.1,192.0.2.2",
        ],
        "{summaries:#?}"
    );
    assert!(
        summaries.iter().all(|s| s.error.is_none()),
        "{summaries:#?}"
    );
}

#[tokio::test]
async fn a_cname_or_a_delegation_at_a_managed_name_is_reported_not_overwritten() {
    let mut records = RECORDS.to_vec();
    records.extend([
        "alias 30 IN CNAME www",
        "sub 300 IN NS ns.elsewhere.invalid.",
    ]);
    let bind = Bind::start(ZONE, &records).await;
    let p = provider(&bind);

    let mut d = Desired::new(ZONE).unwrap();
    d.set("alias.example.test", 30, ips(&REGION_B)).unwrap();
    let report = push(&p, &d, &PushOptions::default()).await;
    let err = report.error().unwrap_or_else(|| panic!("{report:?}"));
    assert!(matches!(err, ProviderError::Unmanageable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot manage `alias.example.test.`: it is a CNAME (to www.example.test.)"),
        "{err}"
    );

    let mut d = Desired::new(ZONE).unwrap();
    d.set("x.sub.example.test", 30, ips(&REGION_B)).unwrap();
    let report = push(&p, &d, &PushOptions::default()).await;
    let err = report.error().unwrap_or_else(|| panic!("{report:?}"));
    assert!(err.to_string().contains("delegated"), "{err}");

    assert_eq!(
        bind.dig("alias.example.test", "CNAME"),
        ["alias.example.test. 30 IN CNAME www.example.test."]
    );
    assert!(update_lines(&bind).is_empty());
}

/// One length-framed message, length included, as it was on the wire.
async fn read_raw(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize + 2];
    buf[..2].copy_from_slice(&len);
    s.read_exact(&mut buf[2..]).await.ok()?;
    Some(buf)
}

/// Relays to `target` message by message, but swallows named's answer to the
/// first UPDATE and closes the connection: the update was applied, the
/// client cannot know.
async fn lose_first_update_answer(target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let lost = lost.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                // Raw bytes: re-encoding would break the TSIG MACs.
                while let Some(req) = read_raw(&mut client).await {
                    let _ = upstream.write_all(&req).await;
                    let Some(resp) = read_raw(&mut upstream).await else {
                        return;
                    };
                    let is_update = Message::from_vec(&req[2..])
                        .is_ok_and(|m| m.metadata.op_code == hickory_proto::op::OpCode::Update);
                    if is_update && !lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let _ = client.write_all(&resp).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_lost_answer_to_an_update_is_retried_without_applying_twice() {
    let bind = Bind::start(ZONE, RECORDS).await;
    let serial = bind.serial();
    let relay = lose_first_update_answer(bind.addr).await;
    let p = provider_with(relay, &bind.update_key);
    let opts = PushOptions {
        initial_backoff: Duration::from_millis(20),
        ..PushOptions::default()
    };
    let report = push(&p, &after_failover(), &opts).await;
    let PushOutcome::Sent { changes, .. } = &report.outcome else {
        panic!("{report:?}");
    };
    assert_eq!(changes.len(), 1);
    // Read, apply (answer lost), apply again (its prerequisite fails:
    // NXRRSET), read again (already as desired).
    assert_eq!(report.calls, 4, "{report:?}");
    assert_eq!(bind.dig_short("a.svc.example.test", "A"), REGION_B);
    assert_eq!(bind.serial(), serial + 1, "applied once");
    let lines = update_lines(&bind);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("deleting rrset"))
            .count(),
        1,
        "{lines:#?}"
    );
}
