//! This unit's own things: its local state file, names, data dir, TLS client, and the test
//! crash points. Everything above (the hook's reconcile, actions, restore, migrate, recover)
//! builds on these; this module depends only on `juju`, `pki` and `etcd`.

pub mod peers;
pub mod rejected;
pub mod status;
pub mod volume;

use crate::juju;
use anyhow::{anyhow, Context as _, Result};
use etcdkit::install::{Delivery, Installed};
use serde::{Deserialize, Serialize};
use std::path::Path;

// The machine-level helpers the charm's modules take from here.
pub use hostkit::clock::now;
pub use hostkit::crash::crash_point;
pub use hostkit::fs::{ensure_room, entries_named, read_json, remove_if_present, write_json};
pub use hostkit::poll::retry;

pub const PEER: &str = "cluster";
pub const LOCAL_STATE: &str = "/var/lib/etcd-charm/state.json";
/// This unit's own small state, kept across hooks.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LocalState {
    /// the unit left the cluster (removal in progress): never start etcd again
    #[serde(default)]
    pub left: bool,
    /// the snapd refresh.timer last applied from `snapd_refresh`
    #[serde(default)]
    pub snapd_refresh: Option<String>,
    /// how this member was first started (kept so a re-render never changes it)
    #[serde(default)]
    pub initial_cluster: Option<String>,
    #[serde(default)]
    pub initial_state: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub epoch: Option<String>,
    /// when the leader first waited for peers before bootstrap (unix seconds)
    #[serde(default)]
    pub bootstrap_wait_since: Option<u64>,
    /// names this unit's CSRs were made for
    #[serde(default)]
    pub csr_names: Vec<String>,
    /// names this unit's CSR to a tls-certificates v4 provider was made for
    #[serde(default)]
    pub provider_csr_names: Vec<String>,
    /// Digest of the CA bundle etcd last (re)started with (authority::sha16): a new bundle
    /// rolls the members, as a new config does.
    #[serde(default)]
    pub running_trust: Option<String>,
    /// The same for the peer port's bundle (`peer-ca.crt`); absent in a unit from before
    /// the peer CA, whose peer port trusts what `running_trust` names.
    #[serde(default)]
    pub running_peer_trust: Option<String>,
    /// profile → sha256 of the certificate a renewal CSR was made for
    #[serde(default)]
    pub renewed_for: std::collections::BTreeMap<String, String>,
    /// the client port and peer URL etcd runs with now (a config change applies them only
    /// when this unit's rolling-restart turn comes)
    #[serde(default)]
    pub client_port: Option<u16>,
    #[serde(default)]
    pub running_peer_url: Option<String>,
    /// why the NRPE checks could not be set up (or removed) the last time it was tried
    #[serde(default)]
    pub nrpe_error: Option<String>,
    /// why this unit's side of `cos-agent` could not be put in place, until a later try does
    #[serde(default)]
    pub cos_error: Option<String>,
    /// the leader's last `etcd-client` pass left nothing waiting, refused or failed: an
    /// update-status has nothing to do for it (every change comes with a hook of its own)
    #[serde(default)]
    pub etcd_client_settled: bool,
    /// the etcd version the running process was started from
    #[serde(default)]
    pub running_version: Option<String>,
    /// what this unit last told Juju (hook tools not called again for the same answer):
    /// the application version, and the TCP port it opened
    #[serde(default)]
    pub told_version: Option<String>,
    #[serde(default)]
    pub opened_port: Option<u16>,
    /// The `etcd` resource and the data directory as the last hook that asked found them:
    /// update-status takes these answers instead of asking again (each hook tool is a
    /// process; see `reconcile::remembered`).
    #[serde(default)]
    pub etcd_resource: Option<SeenResource>,
    #[serde(default)]
    pub data_dir: Option<SeenDataDir>,
}

/// Where the data directory was (the `data` storage's location, or the delivery's default)
/// for that delivery. Juju runs data-storage-attached and -detaching around every storage
/// change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenDataDir {
    pub delivery: Delivery,
    pub dir: String,
}

/// What `resource-get etcd` answered: the file, or none attached. Juju runs upgrade-charm
/// after every attach.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SeenResource {
    pub path: Option<String>,
}

/// This unit's address on the peer binding (what its member advertises).
pub fn peer_address() -> Result<String> {
    juju::network_ingress(PEER)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("this unit has no address yet"))
}

impl LocalState {
    pub fn load() -> Result<LocalState> {
        Ok(read_json(LOCAL_STATE)?.unwrap_or_default())
    }
    pub fn save(&self) -> Result<()> {
        write_json(LOCAL_STATE, self)
    }
}

/// A member's https URL on `port` of `address` (an IPv6 literal in brackets, RFC 3986).
pub fn endpoint(address: &str, port: u16) -> String {
    format!("https://{}:{port}", etcdkit::render::url_host(address))
}

pub fn member_name(unit: &str) -> String {
    unit.replace('/', "")
}

/// Whether this hook is the `data` storage's detaching (the storage goes when it ends, so
/// the data must leave it now).
pub fn data_detaching(ctx: &juju::Context) -> bool {
    ctx.hook_is(|h| h.is_storage("data", juju::StorageEvent::Detaching))
}

/// Where etcd keeps its data: on the `data` storage's volume when attached (mounted first,
/// see `volume`), else /var/lib/etcd, or for
/// the snap delivery a directory under /var/snap/etcd/common (not under the revision's own
/// /var/snap/etcd/current, which snapd copies on every refresh).
///
/// While `data-storage-detaching` runs the volume is still mounted, but the data must
/// leave it: the default directory is the one to use (and the volume is released after).
pub fn data_dir(detaching: bool) -> Result<String> {
    let storage = if detaching {
        None
    } else {
        juju::storage_location("data").context("asking Juju where the data storage is")?
    };
    if let Some(dev) = storage {
        return volume::data_dir_on(&dev);
    }
    Ok(
        if Installed::load().is_some_and(|i| i.delivery == Delivery::Snap) {
            etcdkit::SNAP_DATA_DIR.to_string()
        } else {
            etcdkit::DATA_DIR.to_string()
        },
    )
}

pub fn has_member_data(dir: &str) -> bool {
    Path::new(dir).join("member").join("wal").exists()
        || Path::new(dir).join("member").join("snap").exists()
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn an_ipv6_address_is_bracketed_in_a_url() {
        assert_eq!(endpoint("10.0.0.5", 2379), "https://10.0.0.5:2379");
        assert_eq!(endpoint("fd42::5", 2380), "https://[fd42::5]:2380");
        assert_eq!(endpoint("[fd42::5]", 2380), "https://[fd42::5]:2380");
    }
}
