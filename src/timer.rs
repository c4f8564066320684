//! A oneshot job of this charm's binary on a systemd timer, outside any hook: the scheduled
//! snapshots (`backups`) and the alarm list the NRPE check reads (`nrpe`). Unit files are
//! rewritten, reloaded and restarted only when they change.

use std::path::Path;

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

/// The job's timer is installed, enabled and running; a timer whose files changed is
/// restarted, which starts an interval again from now.
pub fn ensure(job: &Job) -> Result<(), String> {
    let service = service_unit(job);
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
        changed |= crate::pki::update_file(Path::new(&file), &body, 0o644)
            .map_err(|e| format!("writing {file}: {e}"))?;
    }
    let timer = format!("{unit}.timer");
    if changed {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", &timer])?;
        systemctl(&["restart", &timer])?;
    } else if systemctl(&["is-active", "--quiet", &timer]).is_err() {
        systemctl(&["enable", "--now", &timer])?;
    }
    Ok(())
}

/// The job's service: a oneshot with a deadline, so a run that hangs (a snapshot stream
/// that stalls) is ended and the next one can start (a oneshot still starting blocks its
/// timer's next runs). Pure.
pub fn service_unit(job: &Job) -> String {
    format!(
        "[Unit]\nDescription={} (etcd charm)\nAfter=etcd.service\n\n\
         [Service]\nType=oneshot\nExecStart={}\nTimeoutStartSec={JOB_DEADLINE}\n",
        job.description, job.exec
    )
}

/// How long one run of a job may take.
pub const JOB_DEADLINE: &str = "1h";

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

/// `systemctl ARGS`, its failure as the message this module's callers report.
pub fn systemctl(args: &[&str]) -> Result<(), String> {
    crate::etcd::service::systemctl(args).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_that_hangs_is_ended_by_its_deadline() {
        let job = Job {
            unit: "etcd-charm-snapshot",
            description: "d",
            exec: "/bin/true".into(),
            when: String::new(),
        };
        let u = service_unit(&job);
        assert!(
            u.contains("Type=oneshot\n") && u.contains("TimeoutStartSec=1h\n"),
            "{u}"
        );
    }
}
