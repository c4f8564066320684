//! Running etcd: a systemd unit where systemd is PID 1, otherwise the built-in supervisor
//! (`etcd-charm supervise`): etcd as its child, restarted on failure with back-off (like
//! `Restart=on-failure`), left down after a clean exit (a removed member exits 0), SIGTERM
//! forwarded, a pidfile, and a log file.

use hostkit::process::{alive, read_pid};
use hostkit::systemd::{systemctl, systemd_present};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const RUN_DIR: &str = "/run/etcd-charm";
pub const SUPERVISOR_PID: &str = "/run/etcd-charm/supervisor.pid";
pub const ETCD_PID: &str = "/run/etcd-charm/etcd.pid";
pub const LOG_FILE: &str = "/var/log/etcd/etcd.log";
pub const CONFIG_FILE: &str = "/etc/etcd/etcd.conf.yml";
pub const UNIT_FILE: &str = "/etc/systemd/system/etcd.service";

pub use super::render::STOP_GRACE;
/// The sha256 of the unit file systemd last loaded (in /run: a reboot reloads everything).
const UNIT_LOADED: &str = "/run/etcd-charm/unit-loaded.sha256";
/// The link `systemctl enable` makes (WantedBy=multi-user.target).
const UNIT_ENABLED: &str = "/etc/systemd/system/multi-user.target.wants/etcd.service";

/// The program whose `supervise` command runs etcd where systemd does not: this process's
/// own binary (the charm's), unless `set_supervisor` named another (whole-hook tests, whose
/// process is a test binary, name the charm's).
static SUPERVISOR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Names the program that runs `supervise` (once, before a service starts).
pub fn set_supervisor(program: std::path::PathBuf) {
    // Named once per process: a second name is ignored, the first stays in force.
    let _ = SUPERVISOR.set(program);
}

/// Is this etcd process the child of our supervisor?
pub fn is_ours(pid: u32) -> bool {
    read_pid(ETCD_PID) == Some(pid)
}

pub struct Service {
    pub etcd_binary: String,
}

impl Service {
    /// Whether etcd runs (or systemd is starting it). An error when that cannot be told
    /// (systemctl cannot be run): never taken for "not running", which would start or
    /// move data under a running member.
    pub fn running(&self) -> std::io::Result<bool> {
        if systemd_present() {
            // The service's cgroup holds its processes while it runs or starts: one file
            // read, where `systemctl is-active` is a process of its own (most of an
            // update-status hook's cost). Where the cgroup cannot be read, systemctl.
            if let Some(procs) = service_cgroup_procs() {
                return Ok(procs);
            }
            // "activating" covers a notify service still joining and systemd's own restart
            // after a failure: either way systemd is on it. (is-active exits non-zero for
            // every other state; its word on stdout is the answer.)
            let o = Command::new("systemctl")
                .args(["is-active", "etcd.service"])
                .output()
                .map_err(|e| {
                    std::io::Error::other(format!(
                        "cannot tell whether etcd runs: systemctl is-active: {e}"
                    ))
                })?;
            return Ok(matches!(
                String::from_utf8_lossy(&o.stdout).trim(),
                "active" | "activating" | "reloading"
            ));
        }
        Ok(read_pid(SUPERVISOR_PID).map(alive).unwrap_or(false)
            && read_pid(ETCD_PID).map(alive).unwrap_or(false))
    }

    /// etcd's own last error, from its journal (systemd) or the supervisor's log: the
    /// last line that says error, fatal or panic, as etcd's structured log gives it ("msg:
    /// error"), bounded. None when nothing says so or the log cannot be read.
    pub fn last_error(&self) -> Option<String> {
        let text = if systemd_present() {
            let o = Command::new("journalctl")
                .args(["-u", "etcd.service", "-n", "60", "-o", "cat", "--no-pager"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&o.stdout).into_owned()
        } else {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(LOG_FILE).ok()?;
            let len = f.metadata().ok()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)))
                .ok()?;
            let mut buf = vec![];
            f.read_to_end(&mut buf).ok()?;
            String::from_utf8_lossy(&buf).into_owned()
        };
        last_error_in(&text)
    }

    pub fn supervisor_alive(&self) -> bool {
        read_pid(SUPERVISOR_PID).map(alive).unwrap_or(false)
    }

    /// Starts etcd (no-op when it already runs).
    pub fn start(&self) -> std::io::Result<()> {
        if systemd_present() {
            // systemd reads the unit again only when it changed since the last reload
            // (recorded after the reload succeeded, so a crash between the two reloads
            // next time), and `enable` runs only without its link: two systemctl
            // processes saved on every restart of a roll and on a restore.
            let unit = super::render::systemd_unit(&self.etcd_binary, CONFIG_FILE);
            let digest = hostkit::fs::sha256_hex(unit.as_bytes());
            let loaded = std::fs::read_to_string(UNIT_LOADED).unwrap_or_default();
            let on_disk = std::fs::read_to_string(UNIT_FILE).ok();
            if loaded.trim() != digest || on_disk.as_deref() != Some(unit.as_str()) {
                hostkit::fs::write_file(Path::new(UNIT_FILE), unit.as_bytes(), 0o644)
                    .map_err(std::io::Error::other)?;
                systemctl(&["daemon-reload"])?;
                std::fs::create_dir_all(RUN_DIR)?;
                std::fs::write(UNIT_LOADED, &digest)?;
            }
            if !Path::new(UNIT_ENABLED).exists() {
                systemctl(&["enable", "etcd.service"])?;
            }
            // Without --no-block a notify service's start waits for etcd to join, which
            // may need a peer whose own hook has not run yet; the charm checks health itself.
            return systemctl(&["start", "--no-block", "etcd.service"]);
        }
        if self.supervisor_alive() {
            return Ok(());
        }
        // An etcd left behind by a supervisor that was killed would hold the ports.
        if let Some(pid) = read_pid(ETCD_PID).filter(|p| alive(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::fs::create_dir_all(RUN_DIR)?;
        std::fs::create_dir_all(Path::new(LOG_FILE).parent().unwrap())?;
        let exe = match SUPERVISOR.get() {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let mut cmd = Command::new(exe);
        cmd.args([
            "supervise",
            "--etcd",
            &self.etcd_binary,
            "--config",
            CONFIG_FILE,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        use std::os::unix::process::CommandExt;
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // The supervisor writes its pidfile first thing; wait for that, briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while read_pid(SUPERVISOR_PID) != Some(child.id()) {
            if Instant::now() > deadline || child.try_wait()?.is_some() {
                return Err(std::io::Error::other("the etcd supervisor did not start"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops etcd and waits until it is gone.
    pub fn stop(&self) -> std::io::Result<()> {
        if systemd_present() {
            // Never written: nothing of ours to stop (the package's own instance is stopped
            // by the install).
            if !Path::new(UNIT_FILE).exists() {
                return Ok(());
            }
            return systemctl(&["stop", "etcd.service"]);
        }
        let sup = read_pid(SUPERVISOR_PID);
        let child = read_pid(ETCD_PID);
        if let Some(pid) = sup.filter(|p| alive(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGTERM,
            );
        } else if let Some(pid) = child.filter(|p| alive(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGTERM,
            );
        }
        // The supervisor kills etcd past the grace; this kills both a little later.
        let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(5);
        while [sup, child].iter().flatten().any(|p| alive(*p)) {
            if Instant::now() > deadline {
                for p in [sup, child].into_iter().flatten() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p as i32),
                        nix::sys::signal::SIGKILL,
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops etcd for good: a member that left the cluster must not come back at boot.
    pub fn stop_and_disable(&self) -> std::io::Result<()> {
        self.stop()?;
        if systemd_present() && Path::new(UNIT_FILE).exists() {
            systemctl(&["disable", "etcd.service"])?;
        }
        Ok(())
    }

    pub fn restart(&self) -> std::io::Result<()> {
        self.stop()?;
        self.start()
    }
}

/// Whether etcd.service's cgroup has processes (cgroup v2, or v1's systemd hierarchy);
/// None when neither hierarchy can be read. A service that is not running has no cgroup
/// directory (systemd removes it), which reads as "no processes" once its slice exists.
fn service_cgroup_procs() -> Option<bool> {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/systemd"] {
        let slice = Path::new(root).join("system.slice");
        if !slice.is_dir() {
            continue;
        }
        return match std::fs::read_to_string(slice.join("etcd.service/cgroup.procs")) {
            Ok(procs) => Some(!procs.trim().is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
        };
    }
    None
}

/// The built-in supervisor's etcd log is kept below this size: past it, the log is copied
/// to `<log>.1` (the one before goes) and emptied in place, as logrotate's copytruncate does
/// (etcd keeps its descriptor and appends at the new end; lines written during the copy can
/// be lost, never the member's data).
pub const LOG_MAX: u64 = 64 << 20;

/// Rotates `log` when it is larger than `max`: true when it did.
pub fn rotate_if_big(log: &std::path::Path, max: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max {
        return Ok(false);
    }
    let old = log.with_extension("log.1");
    std::fs::copy(log, &old)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

fn log_line(msg: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG_FILE)
    {
        let _ = writeln!(f, "etcd-charm supervise: {msg}");
    }
}

/// `etcd-charm supervise --etcd BIN --config FILE`: the built-in supervisor's main loop.
pub fn supervise(etcd: &str, config: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(RUN_DIR)?;
    std::fs::write(SUPERVISOR_PID, std::process::id().to_string())?;
    // SIGTERM or SIGINT (systemd's stop, `Service::stop`) only sets a flag the loops watch.
    let term = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&term))?;
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        rotate_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG_FILE)?;
        let mut child = Command::new(etcd)
            .args(["--config-file", config])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        std::fs::write(ETCD_PID, child.id().to_string())?;
        let started = Instant::now();
        let Some(status) = watch_child(&mut child, &term)? else {
            log_line("stopped on request");
            supervisor_gone();
            return Ok(());
        };
        if status.success() {
            // A removed member exits 0 and must stay down (etcd-notes §0.6).
            log_line("etcd exited cleanly; leaving it down");
            supervisor_gone();
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_secs(1);
        }
        log_line(&format!(
            "etcd failed ({status}); restarting in {}s",
            backoff.as_secs()
        ));
        let until = Instant::now() + backoff;
        while Instant::now() < until && !term.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// The supervisor's log rotated when it grew past `LOG_MAX` (a failure is logged).
fn rotate_log() {
    if let Err(e) = rotate_if_big(std::path::Path::new(LOG_FILE), LOG_MAX) {
        log_line(&format!("cannot rotate {LOG_FILE}: {e}"));
    }
}

/// The pidfiles go with the supervisor (best effort: a stale one names a dead process,
/// which `alive` tells).
fn supervisor_gone() {
    let _ = std::fs::remove_file(ETCD_PID);
    let _ = std::fs::remove_file(SUPERVISOR_PID);
}

/// Waits for etcd to exit (its status), rotating the log as it runs; on a stop request,
/// stops it (SIGTERM, then SIGKILL after 25 s) and returns None.
fn watch_child(
    child: &mut std::process::Child,
    term: &AtomicBool,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let mut checked = Instant::now();
    loop {
        if term.load(Ordering::SeqCst) {
            // It may have exited already; the wait below tells.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + STOP_GRACE;
            while child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Already gone, or killed now: either way it is down.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if checked.elapsed() > Duration::from_secs(10) {
            rotate_log();
            checked = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last line of etcd's log that reports an error (see `Service::last_error`).
pub fn last_error_in(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("error") || l.contains("fatal") || l.contains("panic")
    })?;
    let said = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v.is_object() => {
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            match (field("msg"), field("error")) {
                (m, e) if !e.is_empty() => format!("{m}: {e}"),
                (m, _) => m,
            }
        }
        _ => line.trim().to_string(),
    };
    Some(hostkit::text::bounded(&said, 300).into_owned())
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn the_supervisor_log_is_rotated_past_its_size_with_one_copy_kept() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("etcd.log");
        let mut w = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        w.write_all(&[b'x'; 100]).unwrap();
        assert!(!rotate_if_big(&log, 100).unwrap());
        w.write_all(b"last\n").unwrap();
        assert!(rotate_if_big(&log, 100).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert!(std::fs::read_to_string(d.path().join("etcd.log.1"))
            .unwrap()
            .ends_with("last\n"));
        // The writer keeps its descriptor and appends at the new end.
        w.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "after\n");
        assert!(!rotate_if_big(&d.path().join("absent.log"), 1).unwrap());
    }
}

#[cfg(test)]
mod last_error_tests {
    #[test]
    fn etcds_structured_and_plain_errors() {
        let log = concat!(
            "{\"level\":\"info\",\"msg\":\"starting\"}\n",
            "{\"level\":\"fatal\",\"msg\":\"listener failed\",\"error\":\"listen tcp 10.0.0.1:2380: bind: address already in use\"}\n",
            "{\"level\":\"info\",\"msg\":\"bye\"}\n"
        );
        assert_eq!(
            super::last_error_in(log).unwrap(),
            "listener failed: listen tcp 10.0.0.1:2380: bind: address already in use"
        );
        assert_eq!(
            super::last_error_in("etcd: error parsing CompactionRetention\n").unwrap(),
            "etcd: error parsing CompactionRetention"
        );
        assert_eq!(super::last_error_in("all well\n"), None);
    }
}
