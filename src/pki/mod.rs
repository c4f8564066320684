//! The etcd charm's certificate files: the shared PKI code (charmkit::pki) plus where this
//! charm keeps its keys and certificates.

pub mod authority;
pub mod certs;
pub mod exchange;
pub mod provider;

use anyhow::Context as _;
pub use charmkit::pki::*;
use etcdkit::client::{Client, Tls};
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

pub use hostkit::operator::{create_operator_file, give_to_operator};

/// An etcd client with this unit's certificates, whose requests may take 3 s.
pub fn tls_client() -> anyhow::Result<Client> {
    tls_client_waiting(std::time::Duration::from_secs(3))
}

/// A client whose requests may take up to `timeout` (a defragmentation's answer). Once this
/// unit holds root's etcd password (`relations::etcd_client`: authentication is or is about
/// to be on) its `/v3` requests go over gRPC as root: the gateway refuses certificates with
/// a Common Name while authentication is on.
pub fn tls_client_waiting(timeout: std::time::Duration) -> anyhow::Result<Client> {
    let tls = Tls::from_dir(PKI_DIR, "server.crt", "server.key")
        .context("reading this unit's certificates")?;
    let client = Client::new(&tls, timeout)?;
    Ok(match root_credentials()? {
        Some(c) => client.with_rpc(Some(c), timeout),
        None => client,
    })
}

/// This unit's copy of root's etcd password (0600), written from the application secret.
pub const PASSWORD_FILE: &str = "root.password";

/// root's etcd credentials, from this unit's copy (None before there is one; a file that
/// cannot be read is an error).
pub fn root_credentials() -> anyhow::Result<Option<etcdkit::rpc::Credentials>> {
    let p = path(PASSWORD_FILE);
    match hostkit::fs::read_if_present(&p)? {
        Some(pw) if pw.trim().is_empty() => anyhow::bail!("{} is empty", p.display()),
        Some(pw) => Ok(Some(etcdkit::rpc::Credentials {
            user: "root".into(),
            password: pw.trim().to_string(),
        })),
        None => Ok(None),
    }
}
