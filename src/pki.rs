//! The etcd charm's certificate files: the shared PKI code (charmkit::pki) plus where this
//! charm keeps its keys and certificates.

pub use charmkit::pki::*;
use rcgen::KeyPair;
use std::path::{Path, PathBuf};

pub const PKI_DIR: &str = "/etc/etcd/pki";

pub fn path(name: &str) -> PathBuf {
    Path::new(PKI_DIR).join(name)
}

/// This unit's private key for a profile, made once and kept 0600.
pub fn unit_key(profile: Profile) -> Result<KeyPair> {
    let p = path(&format!("{}.key", profile.name()));
    if let Ok(pem) = std::fs::read_to_string(&p) {
        if let Ok(k) = KeyPair::from_pem(&pem) {
            return Ok(k);
        }
    }
    let k = KeyPair::generate()?;
    write_file(&p, k.serialize_pem().as_bytes(), 0o600)?;
    Ok(k)
}
