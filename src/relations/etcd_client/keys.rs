//! The names `etcd-client` keeps in the peer data and Juju secrets, and the record of a grant.

use serde::{Deserialize, Serialize};

pub const ENDPOINT: &str = "etcd-client";
pub(super) const PEER: &str = "cluster";
pub(super) const ROOT_LABEL: &str = "etcd-root-auth";
/// peer application data: the root password's secret, auth on, the grants made
pub(super) const ROOT_SECRET: &str = "root-auth-secret";
/// what authentication was last made sure of (cluster, password, root users), digested
pub(super) const AUTH_ON: &str = "auth-enabled";
pub(super) const GRANTS: &str = "etcd-client-grants";
/// peer unit data: the digest of the root password this unit has on disk
pub(super) const READY: &str = "root-auth-ready";
/// peer unit data: the Common Name of the unit's server certificate (a root user)
pub(super) const SERVER_CN: &str = "server-cn";

/// What the leader granted one relation (kept in the peer data, to undo when it goes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub app: String,
    pub user: String,
    pub role: String,
    /// the key range, as etcd's gateway writes keys (base64)
    pub key: String,
    pub range_end: String,
    #[serde(default)]
    pub user_secret: String,
    #[serde(default)]
    pub tls_secret: String,
    /// what was last granted and published, digested (`serve`)
    #[serde(default)]
    pub served: String,
}

pub(super) fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
