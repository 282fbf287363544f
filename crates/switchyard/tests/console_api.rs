//! The console's server side as a browser meets it, over real sockets: a
//! login that puts the token in an HttpOnly cookie, the API taking that
//! cookie only with its CSRF header, scopes enforced on the session as on
//! a bearer token, and the live view following a change within a second.
//! (The pages themselves are driven in a real Chromium by `console.rs`.)

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::{Method, StatusCode};
use switchyard_api::OpRequest;
use switchyard_model::Op;
use switchyard_testkit::{eventually, Req, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The cookies a login answer sets, as a `Cookie` header sends them back,
/// and the raw `Set-Cookie` lines.
fn cookies(r: &switchyard_testkit::Reply) -> (String, Vec<String>) {
    let set: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let jar = set
        .iter()
        .map(|c| c.split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    (jar, set)
}

fn csrf_of(jar: &str) -> String {
    jar.split("; ")
        .find_map(|kv| kv.strip_prefix("switchyard_csrf="))
        .expect("a CSRF cookie")
        .to_string()
}

async fn login(addr: std::net::SocketAddr, token: &str) -> switchyard_testkit::Reply {
    Req::post(addr, "/ui/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
}

/// `POST /v1/ops` as the page sends it: the session's cookies, and its
/// CSRF header when given.
async fn post_op(
    addr: std::net::SocketAddr,
    jar: &str,
    csrf: Option<&str>,
    body: String,
) -> switchyard_testkit::Reply {
    let mut r = Req::post(addr, "/v1/ops")
        .header("cookie", jar)
        .header("content-type", "application/json");
    if let Some(c) = csrf {
        r = r.header("x-csrf-token", c);
    }
    r.body(body).send().await.unwrap()
}

fn shift(zone: &str) -> String {
    serde_json::to_string(&OpRequest::new(
        Op::Shift {
            service: "svc".into(),
            zone: zone.into(),
            for_: Duration::from_secs(600),
        },
        "console test",
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_console_session_acts_only_with_its_csrf_token_and_within_its_scope() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let addr = cp.addr;

    // No session: the page sends people to the login form.
    let r = Req::get(addr, "/ui/").send().await.unwrap();
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location").as_deref(), Some("/ui/login"));

    let r = login(addr, "not-a-token").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body.contains("unknown token"), "{}", r.body);
    assert!(r.headers.get("set-cookie").is_none());

    let r = login(addr, "operate-token").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/ui/"));
    let (jar, set) = cookies(&r);
    let session = set
        .iter()
        .find(|c| c.starts_with("switchyard_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let csrf = csrf_of(&jar);

    let r = Req::get(addr, "/ui/")
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let who = Req::get(addr, "/ui/session")
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap()
        .json();
    assert_eq!(who["token"], "operate-user");
    assert_eq!(who["scope"], "operate");

    // The cookie alone is what a cross-site form would carry: refused,
    // and nothing changes.
    let before = cp.api(None).status().await.unwrap().version;
    let r = post_op(addr, &jar, None, shift("a")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.json()["error"], "csrf");
    let r = post_op(addr, &jar, Some("0".repeat(64).as_str()), shift("a")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(cp.api(None).status().await.unwrap().version, before);

    // With it, the session acts as its token.
    let r = post_op(addr, &jar, Some(csrf.as_str()), shift("a")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let h = cp.api(None).history(5).await.unwrap();
    let last = h.entries.last().unwrap();
    assert!(
        format!("{:?}", last.actor).contains("operate-user"),
        "{last:?}"
    );

    // The audit log filtered as the console's history view asks for it.
    let api = cp.api(None);
    let mine = api
        .history_where(
            10,
            &switchyard_api::HistoryFilter {
                service: Some("svc".into()),
                actor: Some("operate-user".into()),
                kind: Some("change".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(mine.entries.len(), 1, "{mine:?}");
    assert_eq!(mine.entries[0].reason, "console test");
    let none = api
        .history_where(
            10,
            &switchyard_api::HistoryFilter {
                actor: Some("playbook".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(none.entries.is_empty(), "{none:?}");
    let bad = api
        .history_where(
            10,
            &switchyard_api::HistoryFilter {
                kind: Some("gossip".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400));
    assert!(
        bad.body().unwrap().reasons[0].starts_with("kind: \"gossip\""),
        "{bad:?}"
    );

    // A read session sees, and cannot act, whatever it sends.
    let r = login(addr, "read-token").await;
    let (read_jar, _) = cookies(&r);
    let read_csrf = csrf_of(&read_jar);
    assert_ne!(read_csrf, csrf);
    let r = post_op(addr, &read_jar, Some(read_csrf.as_str()), shift("b")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.json()["error"], "forbidden");
    // One session's CSRF token does not open another's.
    let r = post_op(addr, &read_jar, Some(csrf.as_str()), shift("b")).await;
    assert_eq!(r.json()["error"], "csrf", "{}", r.body);

    let m = cp.api(None).metrics().await.unwrap();
    assert!(
        m.contains("switchyard_control_console_logins_total{result=\"refused\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("switchyard_control_console_logins_total{result=\"ok\"} 2"),
        "{m}"
    );

    // Logging out ends the cookie.
    let r = Req::post(addr, "/ui/logout")
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let (cleared, set) = cookies(&r);
    assert!(set.iter().all(|c| c.contains("Max-Age=0")), "{set:?}");
    assert!(cleared.contains("switchyard_session=;"), "{cleared}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_shows_traffic_per_zone_and_a_change_within_a_second() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let edges = lab.start_edges(&["a", "b", "c"]).await;
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let traffic =
        switchyard_testkit::Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);

    let api = cp.api(None);
    let frames = api.live(Duration::from_secs(60)).await.unwrap();
    let mut frames = std::pin::pin!(frames);
    let m = api.metrics().await.unwrap();
    assert!(m.contains("switchyard_control_live_viewers 1"), "{m}");
    // Zone a serves; the plane has heard from both edges.
    let deadline = Instant::now() + Duration::from_secs(15);
    let seen = loop {
        assert!(Instant::now() < deadline, "no traffic in the live view");
        let f = frames.next().await.unwrap().unwrap();
        let a = f
            .traffic
            .iter()
            .find(|t| t.service == "svc" && t.zone == "a")
            .unwrap()
            .clone();
        let up = f
            .edges
            .iter()
            .filter(|e| e.health == switchyard_api::live::EdgeHealth::Up)
            .count();
        if a.recent.as_ref().is_some_and(|r| r.requests > 0) && up == 3 {
            break f;
        }
    };
    let a = seen.traffic.iter().find(|t| t.zone == "a").unwrap();
    let recent = a.recent.as_ref().unwrap();
    assert!(recent.rps > 0.0 && recent.error_ratio == 0.0, "{recent:?}");
    assert!(!a.points.is_empty());
    assert!(
        seen.edges.iter().all(|e| e.config_version.is_some()),
        "{:?}",
        seen.edges
    );

    // A shift shows in the next frames within a second.
    let applied = Instant::now();
    cp.api(Some("operate-token"))
        .apply(&OpRequest::new(
            Op::Shift {
                service: "svc".into(),
                zone: "a".into(),
                for_: Duration::from_secs(600),
            },
            "live test",
        ))
        .await
        .unwrap();
    loop {
        let f = frames.next().await.unwrap().unwrap();
        let weight = f.status.services[0].regions[0]
            .zones
            .iter()
            .find(|z| z.zone == "a")
            .unwrap()
            .weight;
        if weight == 0.0 {
            break;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(1),
            "the shift was not in a frame within 1 s"
        );
    }
    let took = applied.elapsed();
    eprintln!("shift to live frame: {took:?}");

    // And zone a stops serving: its traffic goes, the frame says unknown.
    eventually(
        "zone a shows no recent traffic",
        Duration::from_secs(10),
        || {
            let api = cp.api(None);
            async move {
                let f = api
                    .live(Duration::from_secs(5))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut f = std::pin::pin!(f);
                let f = f
                    .next()
                    .await
                    .ok_or("no frame")?
                    .map_err(|e| e.to_string())?;
                let a = f.traffic.iter().find(|t| t.zone == "a").unwrap();
                a.recent
                    .is_none()
                    .then_some(())
                    .ok_or(format!("{:?}", a.recent))
            }
        },
    )
    .await;
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_and_postmortems_are_rendered_without_running_what_people_wrote() {
    let reports = tempfile::tempdir().unwrap();
    let d = reports.path().join("zone-gray");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("report.md"),
        "# Drill zone-gray\n\nA note <script>alert(1)</script>\n\n![entry](entry.png)\n",
    )
    .unwrap();
    std::fs::write(d.join("entry.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(reports.path().join("secret.txt"), "no").unwrap();
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .control_toml(&format!(
            "[control.console]\nreports_dir = {:?}",
            reports.path().display().to_string()
        ));
    let cp = lab.start_control().await;
    let addr = cp.addr;
    let (jar, _) = cookies(&login(addr, "read-token").await);
    let csrf = csrf_of(&jar);
    let get = |path: &str| {
        Req::get(addr, path)
            .header("cookie", &jar)
            .header("x-csrf-token", &csrf)
    };

    let list = get("/ui/drills").send().await.unwrap().json();
    assert_eq!(list[0]["name"], "zone-gray");
    assert_eq!(list[0]["title"], "Drill zone-gray");
    let page = get("/ui/drills/zone-gray").send().await.unwrap();
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("&lt;script&gt;"), "{}", page.body);
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert!(
        page.body.contains("src=\"/ui/drills/zone-gray/entry.png\""),
        "{}",
        page.body
    );
    // As an <img> loads it: the cookie, no CSRF header (a read).
    let png = Req::get(addr, "/ui/drills/zone-gray/entry.png")
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(png.status, StatusCode::OK, "{}", png.body);
    assert_eq!(png.header("content-type").as_deref(), Some("image/png"));
    // Nothing but plots, and nothing outside the reports.
    for path in [
        "/ui/drills/zone-gray/report.md",
        "/ui/drills/..%2Fsecret.txt",
        "/ui/drills/zone-gray/..%2F..%2Fsecret.txt",
        "/ui/drills/..",
    ] {
        let r = get(path).send().await.unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
    }
    // Without a session, nothing.
    let r = Req::get(addr, "/ui/drills").send().await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // A person's note in an incident reaches its postmortem as text.
    let ops = cp.api(Some("operate-token"));
    let opened = ops
        .open_incident(&switchyard_api::OpenIncident {
            service: "svc".into(),
            title: "checkout <b>slow</b>".into(),
            severity: None,
        })
        .await
        .unwrap();
    ops.note(&opened.id, "<img src=x onerror=alert(1)>")
        .await
        .unwrap();
    let pm = get(&format!("/ui/incidents/{}/postmortem", opened.id))
        .send()
        .await
        .unwrap();
    assert_eq!(pm.status, StatusCode::OK, "{}", pm.body);
    assert!(pm.body.contains("<h1>"), "{}", pm.body);
    assert!(!pm.body.contains("<img src=x"), "{}", pm.body);
    assert!(!pm.body.contains("<b>slow"), "{}", pm.body);
    let r = get("/ui/incidents/nope/postmortem").send().await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
