//! A real BIND 9 (`named` from Debian's bind9 package) serving one primary
//! zone on a free loopback port, accepting RFC 2136 updates signed with a
//! TSIG key, killed on drop. Queries go through `dig` (bind9-dnsutils), a
//! client that shares no code with Switchyard's. Tests never skip when named
//! is missing: that would hide that the RFC 2136 provider went untested.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore;

use crate::etcd::free_port;

/// A TSIG key named knows.
#[derive(Clone, Debug)]
pub struct BindKey {
    pub name: String,
    /// BIND's spelling, e.g. `hmac-sha256`.
    pub algorithm: String,
    /// Base64, as in a `key` statement.
    pub secret: String,
}

impl BindKey {
    fn random(name: &str) -> BindKey {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        BindKey {
            name: name.into(),
            algorithm: "hmac-sha256".into(),
            secret: base64::engine::general_purpose::STANDARD.encode(secret),
        }
    }
}

pub struct Bind {
    child: Child,
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    /// The zone it is primary for, absolute (`example.test.`).
    pub zone: String,
    /// In `allow-update` for the zone.
    pub update_key: BindKey,
    /// Known to named (it verifies signatures made with it) but not allowed
    /// to update: updates signed with it are REFUSED.
    pub other_key: BindKey,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn named_binary() -> PathBuf {
    crate::process::system_binary(
        "named",
        &["/usr/sbin", "/sbin"],
        "the RFC 2136 tests need BIND's `named` (also looked for in /usr/sbin); \
         install Debian's bind9 and bind9-dnsutils (`apt-get install bind9 \
         bind9-dnsutils`), or run scripts/test, which installs them",
    )
}

impl Bind {
    /// Starts named as primary for `zone` holding an SOA (serial 1), an NS
    /// and `records` (zone-file lines, names relative to the zone).
    pub async fn start(zone: &str, records: &[&str]) -> Bind {
        let binary = named_binary();
        for attempt in 1.. {
            let mut bind = Bind::spawn(&binary, zone, records);
            match bind.wait_ready().await {
                Ok(()) => return bind,
                // Something took the port between our probe and named's bind.
                Err(e) if attempt < 3 && e.contains("address in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    fn spawn(binary: &Path, zone: &str, records: &[&str]) -> Bind {
        let dir = tempfile::tempdir().expect("temp dir");
        let zone = format!("{}.", zone.trim_end_matches('.'));
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let update_key = BindKey::random("switchyard-test.");
        let other_key = BindKey::random("not-allowed.");
        let d = dir.path().display();
        let zone_file = dir.path().join("zone.db");
        let mut zone_text = format!(
            "$ORIGIN {zone}\n$TTL 300\n\
             @ IN SOA ns1 hostmaster 1 3600 600 86400 30\n\
             @ IN NS ns1\n\
             ns1 IN A 127.0.0.1\n"
        );
        for r in records {
            zone_text.push_str(r);
            zone_text.push('\n');
        }
        std::fs::write(&zone_file, zone_text).expect("write zone file");
        let key_stmt = |k: &BindKey| {
            format!(
                "key \"{}\" {{ algorithm {}; secret \"{}\"; }};\n",
                k.name, k.algorithm, k.secret
            )
        };
        let conf = format!(
            "options {{\n\
             \tdirectory \"{d}\";\n\
             \tpid-file \"{d}/named.pid\";\n\
             \tsession-keyfile \"{d}/session.key\";\n\
             \tmanaged-keys-directory \"{d}\";\n\
             \tlisten-on port {port} {{ 127.0.0.1; }};\n\
             \tlisten-on-v6 {{ none; }};\n\
             \trecursion no;\n\
             \tallow-query {{ any; }};\n\
             \tdnssec-validation no;\n\
             \tnotify no;\n\
             }};\n\
             controls {{ }};\n\
             {}{}\
             zone \"{zone}\" {{\n\
             \ttype primary;\n\
             \tfile \"{}\";\n\
             \tallow-update {{ key \"{}\"; }};\n\
             }};\n",
            key_stmt(&update_key),
            key_stmt(&other_key),
            zone_file.display(),
            update_key.name,
        );
        let conf_path = dir.path().join("named.conf");
        std::fs::write(&conf_path, conf).expect("write named.conf");
        let log = dir.path().join("named.log");
        let log_file = std::fs::File::create(&log).expect("named log");
        let child = Command::new(binary)
            // -g: foreground, every log line to stderr; -4: no IPv6 sockets;
            // -n 1: one worker, the machine is shared.
            .args(["-g", "-4", "-n", "1", "-c"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Bind {
            child,
            addr,
            zone,
            update_key,
            other_key,
            log,
            _dir: dir,
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!(
                    "named for {} exited ({status}) before serving:\n{}",
                    self.zone,
                    self.log_tail()
                ));
            }
            let log = self.log();
            // Not `contains("running")`: the first line is "running as: named …".
            if log.lines().any(|l| l.ends_with(" running")) {
                if !log.contains(&format!(
                    "zone {}/IN: loaded serial",
                    self.zone.trim_end_matches('.')
                )) {
                    return Err(format!(
                        "named did not load zone {}:\n{}",
                        self.zone,
                        self.log_tail()
                    ));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "named did not start within 20s:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `dig` against this server and returns the answer section lines
    /// (`name ttl class type data`), sorted. Panics when dig fails to get
    /// an answer at all.
    pub fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = Command::new("dig")
            .args([
                &format!("@{}", self.addr.ip()),
                "-p",
                &self.addr.port().to_string(),
                "+noall",
                "+answer",
                "+norecurse",
                "+tries=1",
                "+time=2",
                name,
                rtype,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run dig (install Debian's bind9-dnsutils): {e}"));
        assert!(
            out.status.success(),
            "dig {name} {rtype} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        lines
    }

    /// Just the data of `dig`'s answer (addresses for A/AAAA), sorted.
    pub fn dig_short(&self, name: &str, rtype: &str) -> Vec<String> {
        let mut data: Vec<String> = self
            .dig(name, rtype)
            .iter()
            .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
            .collect();
        data.sort();
        data
    }

    /// The zone's SOA serial; named bumps it once per accepted UPDATE that
    /// changed something.
    pub fn serial(&self) -> u32 {
        let soa = self.dig(&self.zone, "SOA");
        let line = soa
            .first()
            .unwrap_or_else(|| panic!("no SOA for {}", self.zone));
        line.split(' ')
            .nth(6)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the serial in `{line}`"))
    }

    /// named's whole log so far (`-g` sends everything to it, the `update`
    /// category's "adding an RR" / "deleting rrset" lines included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
