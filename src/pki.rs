//! The etcd charm's certificate files: the shared PKI code (charmkit::pki) plus where this
//! charm keeps its keys and certificates.

pub use charmkit::pki::*;
use rcgen::KeyPair;
use std::path::{Path, PathBuf};

pub const PKI_DIR: &str = "/etc/etcd/pki";

pub fn path(name: &str) -> PathBuf {
    Path::new(PKI_DIR).join(name)
}

/// This unit's private key for a profile (the key of its CSRs to the built-in CA), made
/// once and kept 0600. `<profile>.key` is the key etcd serves with, which may be another
/// CA's; units from before the `certificates` relation kept this key there (moved on the
/// first hook of this version, before any other CA's key can be written).
pub fn unit_key(profile: Profile) -> Result<KeyPair> {
    let p = path(&format!("csr-{}.key", profile.name()));
    let old = path(&format!("{}.key", profile.name()));
    if !p.exists() && old.exists() {
        let pem = std::fs::read(&old).map_err(|e| PkiError::Io {
            path: old.display().to_string(),
            source: e,
        })?;
        write_file(&p, &pem, 0o600)?;
    }
    if let Ok(pem) = std::fs::read_to_string(&p) {
        if let Ok(k) = KeyPair::from_pem(&pem) {
            return Ok(k);
        }
    }
    let k = KeyPair::generate()?;
    write_file(&p, k.serialize_pem().as_bytes(), 0o600)?;
    Ok(k)
}

/// The user `juju scp` and `juju ssh` log in as (Juju's default, cloud images' default user).
pub const OPERATOR_USER: &str = "ubuntu";

/// The operator user's uid and gid, or None on a machine without that user.
fn operator_ids() -> std::io::Result<Option<(u32, u32)>> {
    Ok(nix::unistd::User::from_name(OPERATOR_USER)
        .map_err(std::io::Error::from)?
        .map(|u| (u.uid.as_raw(), u.gid.as_raw())))
}

/// Creates (or truncates) a file meant for the operator to fetch with `juju scp`: 0600 from
/// its creation and owned by the `ubuntu` user when the machine has one (real `juju scp`
/// reads as that user, never as root), so no other user can read it, even for a moment.
/// A chown that fails is an error: the operator could not fetch the file.
pub fn create_operator_file(p: &Path) -> std::io::Result<std::fs::File> {
    let f = create_private(p)?;
    if let Some((uid, gid)) = operator_ids()? {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    Ok(f)
}

/// Gives a directory made for the operator (a snapshot target the charm created) to the
/// `ubuntu` user, so `juju scp` can reach what is in it. Nothing when there is no such user.
pub fn give_to_operator(p: &Path) -> std::io::Result<()> {
    if let Some((uid, gid)) = operator_ids()? {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
    }
    Ok(())
}
