//! systemd on this machine: whether it runs, `systemctl`, and oneshot jobs of the charm's
//! binary on timers, outside any hook (the scheduled snapshots and the alarm list the NRPE
//! check reads). Unit files are rewritten, reloaded and restarted only when they change.

use std::path::Path;

const SYSTEMD_DIR: &str = "/etc/systemd/system";

/// Whether systemd runs this machine (PID 1 here; its timers run the jobs).
pub fn systemd_present() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Runs `systemctl ARGS`; a failure is an error that carries systemctl's own words.
pub fn systemctl(args: &[&str]) -> std::io::Result<()> {
    let out = std::process::Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| std::io::Error::other(format!("cannot run systemctl: {e}")))?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
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
    let unit = job.unit;
    let service = (format!("{unit}.service"), service_unit(job));
    activated(&format!("{unit}.timer"), timer_unit(job), service)
}

/// One unit that activates another (a timer, a socket) is installed with the one it
/// activates, enabled and active; restarted when either file changed.
fn activated(
    activator: &str,
    activator_body: String,
    (activated, activated_body): (String, String),
) -> Result<(), String> {
    let mut changed = false;
    for (file, body) in [
        (activator, activator_body),
        (activated.as_str(), activated_body),
    ] {
        changed |=
            crate::fs::update_file(Path::new(&format!("{SYSTEMD_DIR}/{file}")), &body, 0o644)
                .map_err(|e| format!("writing {e}"))?;
    }
    if changed {
        ctl(&["daemon-reload"])?;
        ctl(&["enable", activator])?;
        ctl(&["restart", activator])?;
    } else if ctl(&["is-active", "--quiet", activator]).is_err() {
        ctl(&["enable", "--now", activator])?;
    }
    Ok(())
}

/// The activator and the unit it activates are gone (nothing to do when not installed).
fn deactivated(activator: &str, activated: &str) -> Result<(), String> {
    let path = format!("{SYSTEMD_DIR}/{activator}");
    if !Path::new(&path).exists() {
        return Ok(());
    }
    ctl(&["disable", "--now", activator])?;
    for f in [path, format!("{SYSTEMD_DIR}/{activated}")] {
        crate::fs::remove_if_present(Path::new(&f)).map_err(|e| format!("{e:#}"))?;
    }
    ctl(&["daemon-reload"])
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

/// The job's timer: when it runs (`job.when`), to the second. Pure.
pub fn timer_unit(job: &Job) -> String {
    format!(
        "[Unit]\nDescription={}\n\n[Timer]\n{}AccuracySec=1s\n\n\
         [Install]\nWantedBy=timers.target\n",
        job.description, job.when
    )
}

/// What systemd says it would ignore or refuse in the unit files at `paths`
/// (`systemd-analyze verify`): its lines naming one of them; empty when it reads them
/// cleanly. Err when systemd-analyze cannot be run.
pub fn verify(paths: &[&Path]) -> Result<Vec<String>, String> {
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(paths)
        .output()
        .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Ok(said
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .map(String::from)
        .collect())
}

/// How long one run of a job may take.
pub const JOB_DEADLINE: &str = "1h";

/// The job's timer and service are gone (nothing to do when they are not installed).
pub fn remove(unit: &str) -> Result<(), String> {
    deactivated(&format!("{unit}.timer"), &format!("{unit}.service"))
}

/// A socket-activated service, inetd-style (`Accept=yes`): systemd listens on `listen` and
/// runs `exec` once per connection with the connection as its stdin and stdout. Nothing
/// runs between requests.
pub struct Listener<'a> {
    /// the unit name without suffix: `<unit>.socket` and the template `<unit>@.service`
    pub unit: &'a str,
    pub description: &'a str,
    /// `ListenStream=` (e.g. `127.0.0.1:2382`)
    pub listen: String,
    /// the command for each connection (no secrets: unit files are world-readable)
    pub exec: String,
}

/// The listener's socket unit. Pure.
pub fn socket_unit(l: &Listener) -> String {
    format!(
        "[Unit]\nDescription={} (etcd charm)\n\n[Socket]\nListenStream={}\nAccept=yes\n\
         MaxConnections=8\n\n[Install]\nWantedBy=sockets.target\n",
        l.description, l.listen
    )
}

/// The service each connection runs: short-lived, no new privileges. Pure.
pub fn connection_unit(l: &Listener) -> String {
    format!(
        "[Unit]\nDescription={} connection (etcd charm)\n\n[Service]\nExecStart={}\n\
         StandardInput=socket\nStandardOutput=socket\nStandardError=journal\n\
         NoNewPrivileges=yes\nRuntimeMaxSec=10\n",
        l.description, l.exec
    )
}

/// The listener's socket is installed, enabled and listening (restarted when its files
/// changed).
pub fn ensure_listener(l: &Listener) -> Result<(), String> {
    let unit = l.unit;
    let connection = (format!("{unit}@.service"), connection_unit(l));
    activated(&format!("{unit}.socket"), socket_unit(l), connection)
}

/// The listener is gone (nothing to do when it is not installed).
pub fn remove_listener(unit: &str) -> Result<(), String> {
    deactivated(&format!("{unit}.socket"), &format!("{unit}@.service"))
}

/// `systemctl ARGS`, its failure as the message the timer functions' callers report.
fn ctl(args: &[&str]) -> Result<(), String> {
    systemctl(args).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    /// systemd-analyze's complaints about these unit files, written under their names.
    fn complaints(units: &[(&str, String)]) -> Vec<String> {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<std::path::PathBuf> = units
            .iter()
            .map(|(name, body)| {
                let p = d.path().join(name);
                std::fs::write(&p, body).unwrap();
                p
            })
            .collect();
        let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
        super::verify(&refs).unwrap()
    }

    /// systemd itself reads the job's service and timer and finds nothing it would ignore
    /// (an unknown key, a key in the wrong section).
    #[test]
    fn systemd_reads_the_jobs_units_without_a_warning() {
        let job = super::Job {
            unit: "etcd-charm-test-job",
            description: "a test job",
            exec: "/bin/true".into(),
            when: "OnUnitActiveSec=60s\nOnBootSec=60s\n".into(),
        };
        let said = complaints(&[
            ("etcd-charm-test-job.service", super::service_unit(&job)),
            ("etcd-charm-test-job.timer", super::timer_unit(&job)),
        ]);
        assert!(said.is_empty(), "{said:?}");
    }

    /// The same for a socket-activated listener and its per-connection template.
    #[test]
    fn systemd_reads_the_listeners_units_without_a_warning() {
        let l = super::Listener {
            unit: "etcd-charm-test-listener",
            description: "a test listener",
            listen: "127.0.0.1:2382".into(),
            exec: "/bin/cat".into(),
        };
        let said = complaints(&[
            ("etcd-charm-test-listener.socket", super::socket_unit(&l)),
            (
                "etcd-charm-test-listener@.service",
                super::connection_unit(&l),
            ),
        ]);
        assert!(said.is_empty(), "{said:?}");
    }

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
