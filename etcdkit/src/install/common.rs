//! What the deliveries share: their error, the delivery kinds, where they install, and running their tools.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The operator's input is wrong: the unit blocks with this message.
    #[error("{0}")]
    Bad(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, InstallError>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Archive,
    Deb,
    Snap,
}

impl Delivery {
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Archive => "archive",
            Delivery::Deb => "deb",
            Delivery::Snap => "snap",
        }
    }
}

pub const OPT_DIR: &str = "/opt/etcd";

pub const STATE_FILE: &str = "/var/lib/etcd-charm/install.json";

pub(crate) const MAX_FILE: u64 = 512 << 20;

pub(crate) const MAX_TOTAL: u64 = 1 << 30;

pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| InstallError::Failed(format!("cannot run {cmd}: {e}")))?;
    if !out.status.success() {
        return Err(InstallError::Failed(format!(
            "{cmd} {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with a deadline; past it the command is killed and this is an error.
pub(crate) fn run_bounded(cmd: &str, args: &[&str], limit: std::time::Duration) -> Result<String> {
    use std::process::Stdio;
    let mut child = Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| InstallError::Failed(format!("cannot run {cmd}: {e}")))?;
    // Drain the pipes on threads so a chatty command cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = vec![];
            // The output only goes into messages: a read error leaves what was read.
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    use wait_timeout::ChildExt;
    let status = match child.wait_timeout(limit) {
        Ok(Some(st)) => st,
        Ok(None) => {
            // Past its deadline: the error below is the result; a kill that fails means it
            // has just exited, and wait only reaps it.
            let _ = child.kill();
            let _ = child.wait();
            return Err(InstallError::Failed(format!(
                "{cmd} {} did not finish within {} s",
                args.join(" "),
                limit.as_secs()
            )));
        }
        Err(e) => return Err(InstallError::Failed(format!("waiting for {cmd}: {e}"))),
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(InstallError::Failed(format!(
            "{cmd} {} failed: {}",
            args.join(" "),
            stderr.trim()
        )));
    }
    Ok(stdout)
}

/// The Debian version of the installed etcd-server package.
pub fn installed_package_version() -> Result<String> {
    let v = run("dpkg-query", &["-W", "-f", "${Version}", "etcd-server"])?;
    let v = v.trim().to_string();
    valid_package_version(&v).map_err(|e| {
        InstallError::Failed(format!("dpkg-query names the installed etcd-server {e}"))
    })?;
    Ok(v)
}

/// Checks a Debian package version given from outside (the `upgrade-package` action, the
/// leader's `package-target`): it names files and goes to apt as `etcd-server=<version>`.
pub fn valid_package_version(v: &str) -> std::result::Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a Debian package version (like 3.5.16-4, as `apt-cache policy etcd-server` lists them)"
        ))
    }
}
