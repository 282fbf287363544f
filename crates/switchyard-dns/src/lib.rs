//! `switchyard dns`: an authoritative DNS server that answers for each
//! service's public name with the addresses of the edges that should get
//! that client, decided by the steering library the edges use
//! (`switchyard-steer`), from the controls the control plane publishes and
//! the server's own probes of the edges.
//!
//! - [`answers`]: per service and client region, the weighted regions and
//!   their usable edges (the table a provider pushing records elsewhere
//!   reads too);
//! - [`view`]: the zones and names, built whole and swapped in;
//! - [`packet`]: one packet in, one out, without I/O;
//! - [`server`]: the UDP and TCP loops, with their per-client limits;
//!   [`rrl`]: response rate limiting over UDP; [`probe`]: edge health;
//!   [`admin`]: `/health`, `/metrics`, `/status`;
//! - [`provider`]: the same decisions pushed to a DNS service people
//!   already run (RFC 2136 dynamic updates signed with TSIG).
#![forbid(unsafe_code)]

pub mod admin;
pub mod answers;
pub mod configs;
pub mod metrics;
pub mod packet;
pub mod probe;
pub mod provider;
pub mod pushing;
pub mod rrl;
pub mod server;
pub mod state;
pub mod view;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use state::Dns;

/// One query, as the query log writes it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryLine {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    pub client: String,
    pub transport: &'static str,
    pub name: String,
    pub qtype: String,
    pub rcode: &'static str,
    pub ecs: Option<String>,
    pub client_region: Option<String>,
    pub service: Option<String>,
    pub region: Option<String>,
    pub truncated: bool,
    pub fail_open: bool,
}

/// A path from the config, relative to the config file's folder.
pub fn resolve(config_path: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Reads the config file again and proposes it; a file that does not read
/// or validate is refused with every reason, and the running config stays.
pub fn reload(dns: &Dns) -> Result<(), String> {
    let r = configs::from_file(dns);
    if let Err(e) = &r {
        if e.starts_with("cannot read") {
            dns.metrics.update("config", false);
            tracing::warn!(error = %e, "config refused; keeping the running one");
        }
    }
    r
}

/// Reloads when the config file changes (polled every 500 ms) and on SIGHUP.
async fn watch_config(dns: Arc<Dns>) {
    use tokio::signal::unix::{signal, SignalKind};
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    let mut seen = stamp(&dns.config_path);
    // A file rewritten with the same text is no change: it must not take
    // the server off the config the control plane gave it.
    let version = |dns: &Dns| {
        std::fs::read_to_string(&dns.config_path)
            .ok()
            .map(|t| switchyard_model::config_version(&t))
    };
    let mut seen_version = version(&dns);
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        let by_signal = match hup.as_mut() {
            Some(h) => tokio::select! {
                _ = tick.tick() => false,
                got = h.recv() => {
                    if got.is_none() {
                        hup = None;
                    }
                    got.is_some()
                }
            },
            None => {
                tick.tick().await;
                false
            }
        };
        let now = stamp(&dns.config_path);
        if by_signal || (now.is_some() && now != seen) {
            seen = now;
            let v = version(&dns);
            if by_signal || v != seen_version {
                seen_version = v;
                let _ = reload(&dns);
            }
        }
    }
}

/// Whether this server is the one that runs `[[dns.push]]`.
fn dns_pusher(dns: &Dns) -> bool {
    dns.config().dns.as_ref().and_then(|d| d.pusher.as_deref()) == Some(dns.name.as_str())
}

pub struct DnsOptions {
    pub config_path: PathBuf,
    /// The `[[dns.server]]` to run; may be left out when there is one.
    pub name: Option<String>,
    /// Listen here instead of the server's `listen` addresses.
    pub listen: Vec<SocketAddr>,
    /// Serve the admin API here instead of the server's `admin`.
    pub admin: Option<SocketAddr>,
}

/// Reads and validates the config, then serves until the process ends.
pub async fn run(opts: DnsOptions) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&opts.config_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", opts.config_path.display()))?;
    let config = switchyard_model::Config::from_toml(&text, |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
    let dns_cfg = config
        .dns
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the config has no [dns] section"))?;
    let name = match opts.name {
        Some(n) => n,
        None => match dns_cfg.servers.as_slice() {
            [one] => one.name.clone(),
            many => anyhow::bail!(
                "the config has {} [[dns.server]] entries; choose one with --name ({})",
                many.len(),
                many.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    // The file named the server; the config last taken from the control
    // plane, when kept, runs if it still has that server.
    let start = switchyard_api::configs::start(
        &opts.config_path,
        |c| configs::lkg_path(c, &name),
        |c| c.dns.as_ref().and_then(|d| d.server(&name)).is_some(),
    )
    .map_err(|e| match e {
        switchyard_api::configs::StartError::Invalid { error, .. } => {
            anyhow::anyhow!("invalid config:\n{error}")
        }
        e => anyhow::anyhow!(e),
    })?;
    let dns = Dns::new(start.config, start.running, opts.config_path.clone(), &name)?;
    let me = dns
        .config()
        .dns
        .as_ref()
        .and_then(|d| d.server(&name))
        .expect("checked in Dns::new")
        .clone();
    let listen = if opts.listen.is_empty() {
        me.listen.clone()
    } else {
        opts.listen
    };
    let admin_addr = opts.admin.unwrap_or(me.admin);
    let mut tasks = tokio::task::JoinSet::new();
    // One count for every listen address: the limits are the server's.
    let tcp_slots = server::TcpSlots::new(server::MAX_TCP);
    for addr in &listen {
        let udp = Arc::new(
            tokio::net::UdpSocket::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on udp {addr}: {e}"))?,
        );
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on tcp {addr}: {e}"))?;
        server::spawn_udp(&mut tasks, dns.clone(), udp);
        tasks.spawn(server::serve_tcp(dns.clone(), tcp, tcp_slots.clone()));
    }
    let admin = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on admin {admin_addr}: {e}"))?;
    tasks.spawn(admin::serve(dns.clone(), admin));
    {
        let d = dns.clone();
        tasks.spawn(async move { switchyard_api::watch::follow(&*d).await });
    }
    tasks.spawn(probe::run(dns.clone()));
    if dns_pusher(&dns) {
        let dir = opts.config_path.parent().unwrap_or(Path::new("."));
        let targets = provider::config::from_config(&dns.config(), dir, |k| std::env::var(k).ok())
            .map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
        tracing::info!(zones = ?targets.iter().map(|t| t.zone.to_string()).collect::<Vec<_>>(), "pushing to outside zones");
        tasks.spawn(pushing::run(dns.clone(), targets));
    }
    tasks.spawn(watch_config(dns.clone()));
    tracing::info!(server = %name, ?listen, admin = %admin_addr, "dns server up");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Answers are single packets: nothing to drain, so a signal ends at once.
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        _ = tasks.join_next() => anyhow::bail!("a server task ended"),
    }
}
