//! etcd's offline snapshot tools (`etcdutl`, or `etcdctl` before 3.5): restore a snapshot
//! into a new data dir, and read the revision a snapshot holds.

use crate::install::Installed;
use std::path::Path;
use std::process::Command;

/// The offline tool of the installed etcd.
fn tool(inst: &Installed) -> Command {
    match inst.etcdutl() {
        Some(u) => Command::new(u),
        None => {
            let mut c = Command::new(inst.etcdctl());
            c.env("ETCDCTL_API", "3");
            c
        }
    }
}

/// A restore of a snapshot into a data dir of its own: the member it makes.
pub struct Restore<'a> {
    pub db: &'a Path,
    pub name: &'a str,
    pub peer_url: &'a str,
    pub token: &'a str,
    pub out: &'a Path,
    /// the snapshot has no digest, or it was verified already: etcd's own check is skipped
    pub skip_hash_check: bool,
}

/// Why an offline restore failed.
#[derive(Debug)]
pub enum RestoreError {
    /// the tool could not be run
    Run(std::io::Error),
    /// etcd refused the snapshot; its own last line says why (e.g. "expected sha256 …")
    Refused(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            RestoreError::Run(e) => write!(f, "running the offline snapshot restore: {e}"),
            RestoreError::Refused(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for RestoreError {}

/// Runs the offline restore (`snapshot restore`) of the installed etcd.
pub fn restore(inst: &Installed, r: &Restore) -> Result<(), RestoreError> {
    let cluster = format!("{}={}", r.name, r.peer_url);
    let mut cmd = tool(inst);
    cmd.arg("snapshot")
        .arg("restore")
        .arg(r.db)
        .args([
            "--name",
            r.name,
            "--initial-cluster",
            &cluster,
            "--initial-advertise-peer-urls",
            r.peer_url,
            "--initial-cluster-token",
            r.token,
            "--data-dir",
        ])
        .arg(r.out);
    if r.skip_hash_check {
        cmd.arg("--skip-hash-check");
    }
    let o = cmd.output().map_err(RestoreError::Run)?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        return Err(RestoreError::Refused(crate::last_line(&err).to_string()));
    }
    Ok(())
}

/// The revision a snapshot holds (offline `snapshot status`, a full read); None when the
/// tool does not say.
pub fn revision(inst: &Installed, db: &Path) -> Option<u64> {
    let o = tool(inst)
        .arg("snapshot")
        .arg("status")
        .arg(db)
        .args(["-w", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v.get("revision").and_then(serde_json::Value::as_u64)
}
