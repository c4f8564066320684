//! The install record (`install.json`) and what it says of the binaries: their version, their digest.

use super::common::*;
use crate::version::{check_step, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// What is installed, recorded after a verified install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installed {
    pub delivery: Delivery,
    pub version: String,
    pub bin_dir: String,
    /// sha256 of the tarball an archive install came from
    #[serde(default)]
    pub source_sha256: Option<String>,
    /// path, size and mtime of that tarball: unchanged means already verified and installed
    #[serde(default)]
    pub source_stamp: Option<String>,
    /// verified binaries of `version`, unpacked but not yet switched in: the running member
    /// switches to them in its own rolling turn
    #[serde(default)]
    pub staged: Option<String>,
    /// a version that failed its health check on this unit and was rolled back (for the
    /// Debian package, the package version)
    #[serde(default)]
    pub rolled_back: Option<String>,
    /// the Debian version of the installed etcd-server package (the `deb` delivery)
    #[serde(default)]
    pub package: Option<String>,
    /// What ran before binaries were switched in whose health check has not passed yet (the
    /// directory, or the kept packages): recorded before the switch, cleared by `commit` or
    /// `roll_back`. A hook killed in between leaves it for the next one to finish.
    #[serde(default)]
    pub previous: Option<String>,
}

impl Installed {
    /// What is installed. A corrupt record reads as nothing here; every hook and action
    /// checks the file first (`ops::check_local_files`) and stops with its name instead.
    pub fn load() -> Option<Installed> {
        serde_json::from_slice(&std::fs::read(STATE_FILE).ok()?).ok()
    }
    pub fn save(&self) -> Result<()> {
        let p = Path::new(STATE_FILE);
        std::fs::create_dir_all(p.parent().unwrap()).map_err(io("creating /var/lib/etcd-charm"))?;
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())
            .map_err(io(STATE_FILE))?;
        std::fs::rename(&tmp, p).map_err(io(STATE_FILE))
    }
    /// The version this record names (what its binaries run and its config follows).
    pub fn version(&self) -> anyhow::Result<Version> {
        Version::parse(&self.version).ok_or_else(|| {
            anyhow::anyhow!(
                "the install record names no etcd version ({:?})",
                self.version
            )
        })
    }

    pub fn etcd(&self) -> String {
        format!("{}/etcd", self.bin_dir)
    }
    pub fn etcdctl(&self) -> String {
        format!("{}/etcdctl", self.bin_dir)
    }
    /// The Debian version of the installed etcd-server package: as recorded, or asked of
    /// dpkg for a record written before the charm kept it.
    pub fn package_version(&self) -> Result<String> {
        match &self.package {
            Some(p) => Ok(p.clone()),
            None => installed_package_version(),
        }
    }
    /// What an operator does after a version failed here and was rolled back.
    pub fn retry_hint(&self) -> &'static str {
        match self.delivery {
            Delivery::Deb => "publish a working package and run upgrade-package again",
            _ => "attach a working etcd resource",
        }
    }
    /// `etcdutl` (3.5+) or None (3.4 has only etcdctl for offline work).
    pub fn etcdutl(&self) -> Option<String> {
        let p = format!("{}/etcdutl", self.bin_dir);
        Path::new(&p).exists().then_some(p)
    }
}

/// Identifies a file cheaply (path, size, modification time) so every hook need not rehash it.
pub(crate) fn stamp(p: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some(format!(
        "{}|{}|{}.{}",
        p.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

pub fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hostkit::fs::hex(&h.finalize()))
}

/// `etcd --version` → "3.5.1".
pub fn binary_version(etcd: &Path) -> Result<String> {
    let out = Command::new(etcd)
        .arg("--version")
        .output()
        .map_err(|e| InstallError::Bad(format!("{} does not run: {e}", etcd.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("etcd Version:")
                .map(|v| v.trim().to_string())
        })
        .ok_or_else(|| {
            InstallError::Bad(format!(
                "{} is not an etcd binary (no version in `etcd --version`)",
                etcd.display()
            ))
        })?;
    check_version_text(&v).map_err(|e| InstallError::Bad(format!("{}: {e}", etcd.display())))?;
    Ok(v)
}

/// The version an etcd binary prints names a directory under /opt/etcd and is compared as a
/// version: it must be one (`3.5.16`, `3.6.0-rc.1`), never a path (`../x`, `/etc`).
pub fn check_version_text(v: &str) -> std::result::Result<(), String> {
    let plain = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
        && !v.starts_with(['.', '-']);
    if !plain || crate::version::Version::parse(v).is_none() {
        return Err(format!(
            "its `etcd --version` says {:?}, which is not an etcd version",
            hostkit::text::bounded(v, 80)
        ));
    }
    Ok(())
}

/// Refuses a version step etcd does not support (a downgrade, a skipped minor, a minor
/// from too early a patch release) from what the binary at `running_bin` runs to
/// `version` (`label` names the new delivery in the refusal).
pub(crate) fn refuse_bad_step(running_bin: &Path, version: &str, label: &str) -> Result<()> {
    if !running_bin.exists() {
        return Ok(());
    }
    let running = binary_version(running_bin)?;
    let (Some(from), Some(to)) = (Version::parse(&running), Version::parse(version)) else {
        return Err(InstallError::Bad(format!(
            "{label}: cannot compare etcd versions {running:?} and {version:?}"
        )));
    };
    check_step(from, to).map_err(|why| InstallError::Bad(format!("{label} refused: {why}")))
}
