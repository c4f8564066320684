//! A oneshot job of this charm's binary on a systemd timer, outside any hook: the scheduled
//! snapshots (`backups`) and the alarm list the NRPE check reads (`nrpe`). Unit files are
//! rewritten, reloaded and restarted only when they change.

use std::path::Path;
use std::process::Command;

const SYSTEMD_DIR: &str = "/etc/systemd/system";

/// Whether systemd runs this machine (its timers run the jobs).
pub fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// One timer and the service it starts.
pub struct Job<'a> {
    /// The unit name without suffix (`etcd-charm-snapshot`).
    pub unit: &'a str,
    pub description: &'a str,
    /// The service's `ExecStart=` command line (no secrets: unit files are world-readable).
    pub exec: String,
    /// The `[Timer]` lines saying when it runs (`OnUnitActiveSec=60s\n`).
    pub when: String,
}

/// The job's timer is installed, enabled and running. Returns whether its files changed (a
/// changed timer was restarted, which starts an interval again from now).
pub fn ensure(job: &Job) -> Result<bool, String> {
    let service = format!(
        "[Unit]\nDescription={} (etcd charm)\nAfter=etcd.service\n\n\
         [Service]\nType=oneshot\nExecStart={}\n",
        job.description, job.exec
    );
    let timer = format!(
        "[Unit]\nDescription={}\n\n[Timer]\n{}AccuracySec=1s\n\n\
         [Install]\nWantedBy=timers.target\n",
        job.description, job.when
    );
    let unit = job.unit;
    let mut changed = false;
    for (file, body) in [
        (format!("{SYSTEMD_DIR}/{unit}.service"), service),
        (format!("{SYSTEMD_DIR}/{unit}.timer"), timer),
    ] {
        let current = match std::fs::read_to_string(&file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("reading {file}: {e}")),
        };
        if current.as_deref() != Some(body.as_str()) {
            std::fs::write(&file, body).map_err(|e| format!("writing {file}: {e}"))?;
            changed = true;
        }
    }
    let timer = format!("{unit}.timer");
    if changed {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", &timer])?;
        systemctl(&["restart", &timer])?;
    } else if systemctl(&["is-active", "--quiet", &timer]).is_err() {
        systemctl(&["enable", "--now", &timer])?;
    }
    Ok(changed)
}

/// The job's timer and service are gone (nothing to do when they are not installed).
pub fn remove(unit: &str) -> Result<(), String> {
    let timer = format!("{SYSTEMD_DIR}/{unit}.timer");
    if !Path::new(&timer).exists() {
        return Ok(());
    }
    systemctl(&["disable", "--now", &format!("{unit}.timer")])?;
    for f in [timer, format!("{SYSTEMD_DIR}/{unit}.service")] {
        crate::unit::remove_if_present(Path::new(&f)).map_err(|e| format!("{e:#}"))?;
    }
    systemctl(&["daemon-reload"])
}

pub fn systemctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl {} failed: {}",
            args.join(" "),
            crate::etcd::last_line(&String::from_utf8_lossy(&out.stderr))
        ))
    }
}
