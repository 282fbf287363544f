//! A real headless Chromium driven over WebDriver: Debian's `chromedriver`
//! (package chromium-driver) started as a child process on a free loopback
//! port, a session with a 1280×800 window, and both killed on drop. The
//! console's end-to-end tests look at the page a person would see, so a
//! script error, a blocked inline style or a missing element fails them the
//! way it would fail a person.
//!
//! Tests never skip when Chromium is missing (scripts/test installs it): a
//! skipped browser test would hide that the console went untested.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::etcd::free_port;

/// How long chromedriver may take to answer its `/status`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 800;

pub struct Browser {
    /// The WebDriver session; every command goes through it.
    pub client: Client,
    driver: Child,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

fn find(name: &str) -> PathBuf {
    crate::process::system_binary(
        name,
        &[],
        "install Debian's chromium and chromium-driver (scripts/test does)",
    )
}

impl Browser {
    /// Starts chromedriver (its log in `dir/chromedriver.log`) and opens a
    /// headless session with a 1280×800 window.
    pub async fn start(dir: &Path) -> Browser {
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let out = std::fs::File::create(&log).expect("chromedriver log");
        let mut cmd = Command::new(find("chromedriver"));
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out);
        let driver = cmd.spawn().expect("spawn chromedriver");
        let profile = tempfile::tempdir().expect("a browser profile dir");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + START_TIMEOUT;
        let mut args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            "--hide-scrollbars".into(),
            "--force-device-scale-factor=1".into(),
            format!("--window-size={WIDTH},{HEIGHT}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        // Chromium refuses to run as root with its sandbox on.
        if rustix::process::geteuid().is_root() {
            args.push("--no-sandbox".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": find("chromium"), "args": args }),
        );
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!(
                    "no WebDriver session from chromedriver on {url}: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let b = Browser {
            client,
            driver,
            log,
            _profile: profile,
        };
        // Headless windows ignore --window-size on some versions: the
        // viewport is what screenshots show, so it is set and checked.
        b.set_viewport(WIDTH, HEIGHT).await;
        b
    }

    /// Makes the page's viewport `w`×`h` CSS pixels (the window is sized so
    /// that its inner size is that).
    pub async fn set_viewport(&self, w: u32, h: u32) {
        self.client
            .set_window_size(w, h)
            .await
            .expect("set window size");
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("read the viewport");
        let (iw, ih) = (
            inner[0].as_u64().unwrap_or(0) as u32,
            inner[1].as_u64().unwrap_or(0) as u32,
        );
        if (iw, ih) != (w, h) {
            self.client
                .set_window_size(w + (w - iw.min(w)), h + (h - ih.min(h)))
                .await
                .expect("set window size");
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("go to {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .to_string()
    }

    /// The element a CSS selector finds now.
    pub async fn find(&self, css: &str) -> Result<fantoccini::elements::Element, String> {
        self.client
            .find(Locator::Css(css))
            .await
            .map_err(|e| format!("{css}: {e}"))
    }

    /// The visible text of the element a CSS selector finds now (found
    /// again when the page replaced it meanwhile, as for [`Browser::click`]).
    pub async fn text(&self, css: &str) -> Result<String, String> {
        let mut last = String::new();
        for _ in 0..5 {
            match self.find(css).await?.text().await {
                Ok(t) => return Ok(t),
                Err(e) => last = format!("{css}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    /// How many elements a CSS selector finds now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Clicks the element a CSS selector finds. A page that redraws
    /// itself (the console's overview does, every second) may replace the
    /// element between finding and clicking: it is found again, a few times.
    pub async fn click(&self, css: &str) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..5 {
            match self.find(css).await?.click().await {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("click {css}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    /// Chooses the option of that value in the `<select>` a CSS selector
    /// finds (a change event follows, as when a person picks it).
    pub async fn select(&self, css: &str, value: &str) -> Result<(), String> {
        self.find(css)
            .await?
            .select_by_value(value)
            .await
            .map_err(|e| format!("select {value:?} in {css}: {e}"))
    }

    /// Replaces the value of the input a CSS selector finds with `text`.
    pub async fn fill(&self, css: &str, text: &str) -> Result<(), String> {
        let e = self.find(css).await?;
        e.clear().await.map_err(|e| format!("clear {css}: {e}"))?;
        e.send_keys(text)
            .await
            .map_err(|e| format!("type into {css}: {e}"))
    }

    /// Runs `script` in the page (`return …` for a value).
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// A `fetch` from the page, with the page's cookies: `[status, body]`.
    pub async fn fetch(
        &self,
        method: &str,
        path: &str,
        headers: serde_json::Value,
        body: &str,
    ) -> (u16, String) {
        let r = self
            .client
            .execute_async(
                "const [m, p, h, b, done] = arguments;\
                 fetch(p, {method: m, headers: h, body: b || undefined, credentials: 'same-origin'})\
                   .then(async r => done([r.status, await r.text()]))\
                   .catch(e => done([0, String(e)]));",
                vec![method.into(), path.into(), headers, body.into()],
            )
            .await
            .unwrap_or_else(|e| panic!("fetch {method} {path}: {e}"));
        (
            r[0].as_u64().unwrap_or(0) as u16,
            r[1].as_str().unwrap_or("").to_string(),
        )
    }

    /// A PNG of the viewport, written to `path` (its folder made).
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("screenshot folder");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// What chromedriver logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The processes below `pid` (children first found, then theirs), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|x| x.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(q) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == q && !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium and its helpers first (by their own pids, found under
        // chromedriver), then chromedriver, so none outlives the test even
        // when the session was never closed.
        let below = descendants(self.driver.id());
        if !below.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(below.iter().map(|p| p.to_string()))
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
