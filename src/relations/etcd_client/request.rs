//! A requirer's request checked where it enters (pure: no hook tools, no etcd).

use crate::juju::Bag;
use std::collections::BTreeSet;

const MAX_CERT: usize = 16 * 1024;
const MAX_PREFIX: usize = 512;

/// A requirer's request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    pub user: String,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// Why a relation is not served (yet).
#[derive(Debug, Clone, PartialEq)]
pub enum NotServed {
    /// the requirer has not said everything yet
    Waiting(String),
    /// refused: the unit is blocked with this reason
    Refused(String),
}

pub use etcdkit::api::prefix_end;

/// etcd releases whose access control is known to leak (GHSA-xg4h-6gfc-h4m8, fixed in
/// 3.5.33, 3.6.14 and 3.7.1; every earlier release has it or worse). Unparsable: leaky.
pub fn leaky(version: &str) -> bool {
    let mut p = version
        .trim()
        .trim_start_matches('v')
        .split(['.', '-', '+']);
    let mut n = || p.next().and_then(|s| s.parse::<u32>().ok());
    let (Some(major), Some(minor), Some(patch)) = (n(), n(), n()) else {
        return true;
    };
    match (major, minor) {
        (3, 5) => patch < 33,
        (3, 6) => patch < 14,
        (3, 7) => patch < 1,
        (3, m) if m > 7 => false,
        (m, _) if m > 3 => false,
        _ => true,
    }
}

/// Checks one requirer's request where it enters: the databag, its certificate (from
/// `secret-mtls`), against what this cluster trusts and the names already taken.
#[allow(clippy::too_many_arguments)]
pub fn read_request(
    app: &str,
    bag: &Bag,
    cert: Option<&str>,
    trusted: &BTreeSet<String>,
    reserved: &BTreeSet<String>,
    full_access: bool,
    now: i64,
) -> Result<Want, NotServed> {
    let refuse = |why: String| NotServed::Refused(format!("etcd-client {app}: {why}"));
    if let Some(r) = bag.get("requested-secrets") {
        let asked: Vec<String> = serde_json::from_str(r).map_err(|_| {
            refuse(format!(
                "requested-secrets is not a JSON list of names ({:?})",
                hostkit::text::bounded(r, 100)
            ))
        })?;
        for need in ["username", "tls-ca"] {
            if !asked.iter().any(|a| a == need) {
                return Err(refuse(format!(
                    "requested-secrets lacks {need:?} (etcd_client/v0 asks for username and tls-ca)"
                )));
            }
        }
    }
    let prefix = bag.get("prefix").map(String::as_str).unwrap_or("");
    if prefix.is_empty() && !full_access {
        return Err(NotServed::Waiting(format!("waiting for {app}'s prefix")));
    }
    if prefix.len() > MAX_PREFIX || prefix.chars().any(char::is_control) {
        return Err(refuse(format!(
            "prefix {:?} is not a key prefix (at most {MAX_PREFIX} bytes, no control characters)",
            hostkit::text::bounded(prefix, 100)
        )));
    }
    let Some(cert) = cert else {
        return Err(NotServed::Waiting(format!(
            "waiting for {app}'s certificate (secret-mtls)"
        )));
    };
    let user = client_user(app, cert, trusted, reserved, now)?;
    let (key, range_end) = if full_access {
        (vec![0], vec![0])
    } else {
        (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()))
    };
    Ok(Want {
        user,
        key,
        range_end,
    })
}

/// The etcd user a requirer's certificate names (its Common Name), if etcd can take the
/// certificate without a restart and the name is free.
fn client_user(
    app: &str,
    cert: &str,
    trusted: &BTreeSet<String>,
    reserved: &BTreeSet<String>,
    now: i64,
) -> Result<String, NotServed> {
    let refuse = |why: String| NotServed::Refused(format!("etcd-client {app}: {why}"));
    if cert.len() > MAX_CERT {
        return Err(refuse(format!("mtls-cert is larger than {MAX_CERT} bytes")));
    }
    let leaf =
        first_pem(cert).ok_or_else(|| refuse("mtls-cert holds no PEM certificate".into()))?;
    let user = charmkit::pki::common_name(&leaf)
        .map_err(|e| refuse(format!("mtls-cert cannot be read ({e})")))?;
    if user.is_empty()
        || user.len() > 128
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@/".contains(c))
    {
        return Err(refuse(format!(
            "mtls-cert's common name {:?} cannot name an etcd user (1-128 of A-Z a-z 0-9 - _ . : @ /)",
            hostkit::text::bounded(&user, 100)
        )));
    }
    if reserved.contains(&user) {
        return Err(refuse(format!(
            "mtls-cert's common name {user:?} is taken (root, this cluster's own certificates or another client): give {app} a certificate with a name of its own"
        )));
    }
    charmkit::pki::check_client(&leaf, now).map_err(|why| refuse(format!("mtls-cert {why}")))?;
    let trusted_by = trusted
        .iter()
        .any(|ca| charmkit::pki::issued_by(&leaf, ca).unwrap_or(false));
    if !trusted_by {
        return Err(refuse(format!(
            "its certificate (CN {user}) is not issued by a CA this cluster trusts; relate {app} to the same certificates provider as this application (trusting a new CA would restart every member)"
        )));
    }
    Ok(user)
}

fn first_pem(text: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text.find(BEGIN)?;
    let end = text[start..].find(END)? + start + END.len();
    Some(format!("{}\n", &text[start..end]))
}
