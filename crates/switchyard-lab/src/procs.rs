//! The lab's child processes. Each is started with `--exit-on-stdin-eof` and
//! a pipe on its stdin that only this supervisor holds: when the supervisor
//! exits for any reason, kill -9 included, the pipe closes and every child
//! exits with it. Dropping the supervisor also kills and reaps them.
//!
//! A paused child (SIGSTOP) cannot see its stdin close, so each child leads
//! a process group of its own: when the supervisor dies, that group is
//! orphaned and the kernel sends a stopped member SIGHUP and SIGCONT, and it
//! ends like the others. (In the supervisor's own group, the group would
//! stay un-orphaned as long as whoever started the supervisor lives.) Its
//! own group also keeps a terminal's Ctrl-C for the supervisor, which stops
//! the children in order.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    name: String,
    args: Vec<String>,
    child: Option<Child>,
}

pub struct Supervisor {
    bin: PathBuf,
    logs: PathBuf,
    procs: Vec<Proc>,
}

impl Supervisor {
    pub fn new(bin: &Path, logs: &Path) -> anyhow::Result<Supervisor> {
        std::fs::create_dir_all(logs)?;
        Ok(Supervisor {
            bin: bin.into(),
            logs: logs.into(),
            procs: Vec::new(),
        })
    }

    fn spawn(&self, name: &str, args: &[String]) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))?;
        Command::new(&self.bin)
            .arg("--exit-on-stdin-eof")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))
    }

    pub fn start(&mut self, name: &str, args: Vec<String>) -> anyhow::Result<()> {
        let child = self.spawn(name, &args)?;
        self.procs.push(Proc {
            name: name.into(),
            args,
            child: Some(child),
        });
        Ok(())
    }

    /// SIGKILL and reap; the process stays known so it can be restarted.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow::anyhow!("no lab process named {name:?}"))?;
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGSTOP: the process keeps its sockets, so the kernel still accepts
    /// connections on them, but nothing answers — a long GC pause or a frozen
    /// VM, which a closed port would not imitate. Should the supervisor die
    /// while a child is stopped, the kernel wakes it (see the module's
    /// notes), so it still ends with the rest.
    pub fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, rustix::process::Signal::STOP)
    }

    /// SIGCONT: a paused process carries on where it stopped; requests
    /// that waited in its backlog are served late, if their callers are
    /// still there.
    pub fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, rustix::process::Signal::CONT)
    }

    fn signal(&mut self, name: &str, sig: rustix::process::Signal) -> anyhow::Result<()> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow::anyhow!("no lab process named {name:?}"))?;
        let Some(child) = p.child.as_mut() else {
            anyhow::bail!("lab process {name:?} is not running");
        };
        if !matches!(child.try_wait(), Ok(None)) {
            anyhow::bail!("lab process {name:?} has exited");
        }
        rustix::process::kill_process(rustix::process::Pid::from_child(child), sig)
            .map_err(|e| anyhow::anyhow!("cannot signal {name}: {e}"))
    }

    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill(name)?;
        let args = self
            .procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.args.clone())
            .unwrap_or_default();
        let child = self.spawn(name, &args)?;
        if let Some(p) = self.procs.iter_mut().find(|p| p.name == name) {
            p.child = Some(child);
        }
        Ok(())
    }

    pub fn is_running(&mut self, name: &str) -> bool {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .and_then(|p| p.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Names of processes that were started and have exited on their own.
    pub fn exited(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|p| match p.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) => Some(p.name.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs
            .iter()
            .filter_map(|p| p.child.as_ref().map(|c| c.id()))
            .collect()
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    pub fn stop_all(&mut self) {
        for p in &mut self.procs {
            if let Some(c) = p.child.as_mut() {
                let _ = c.kill();
            }
        }
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
