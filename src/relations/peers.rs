//! What a hook sees of the peer relation `cluster`, with the leader's writes of this hook
//! merged in, and what is derived from it for the client relations.
//!
//! Must not: run hook tools (the reconcile reads the relation and writes what changed).

use crate::juju::Bag;
use crate::ops::membership::plan::{self as cluster, Join, UnitInfo};
use anyhow::Result;
use etcdkit::client::Member;

/// What a hook sees of the peer relation, with the leader's writes of this hook merged in.
pub(crate) struct Peers {
    pub(crate) rel: String,
    pub(crate) app: Bag,
    pub(crate) app_writes: Bag,
    /// unit → databag, this unit included (with its pending writes)
    pub(crate) units: std::collections::BTreeMap<String, Bag>,
    /// The client certificate and key the leader created in this hook: its secret can be
    /// read only once the hook has committed.
    pub(crate) new_client: Option<(String, String)>,
}

impl Peers {
    pub(crate) fn app_get(&self, k: &str) -> Option<&str> {
        match self.app_writes.get(k) {
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v),
            None => self
                .app
                .get(k)
                .map(String::as_str)
                .filter(|v| !v.is_empty()),
        }
    }
    pub(crate) fn app_set(&mut self, k: &str, v: &str) {
        if self.app_get(k) != Some(v) && !(v.is_empty() && self.app_get(k).is_none()) {
            self.app_writes.insert(k.to_string(), v.to_string());
        }
    }
    pub(crate) fn infos(&self) -> Vec<UnitInfo> {
        self.units
            .iter()
            .filter_map(|(u, b)| {
                Some(UnitInfo {
                    unit: u.clone(),
                    name: b.get("member-name")?.clone(),
                    peer_url: b.get("peer-url")?.clone(),
                    client_url: b.get("client-url").cloned().unwrap_or_default(),
                    ready: matches!(
                        b.get("phase").map(String::as_str),
                        Some("ready") | Some("started")
                    ),
                    started: b.get("phase").map(String::as_str) == Some("started"),
                })
            })
            .collect()
    }
    /// The units whose member has started, with their databags.
    pub(crate) fn started(&self) -> impl Iterator<Item = (&String, &Bag)> {
        self.units
            .iter()
            .filter(|(_, b)| b.get("phase").map(String::as_str) == Some("started"))
    }
    pub(crate) fn join(&self) -> Option<Join> {
        self.app_get("join")
            .and_then(|j| serde_json::from_str(j).ok())
    }
}

impl crate::ops::membership::apply::PeerApp for Peers {
    fn infos(&self) -> Vec<UnitInfo> {
        Peers::infos(self)
    }
    fn join(&self) -> Option<Join> {
        Peers::join(self)
    }
    fn set_join(&mut self, join: Option<&Join>) -> Result<()> {
        let v = match join {
            Some(j) => serde_json::to_string(j)?,
            None => String::new(),
        };
        self.app_set("join", &v);
        Ok(())
    }
}

pub(crate) fn publish_members(peers: &mut Peers, members: &[Member]) {
    let mut urls: Vec<String> = members
        .iter()
        .filter(|m| m.started())
        .flat_map(|m| {
            m.client_urls
                .iter()
                .filter(|u| !u.contains("127.0.0.1"))
                .take(1)
                .cloned()
        })
        .collect();
    urls.sort();
    let entries: Vec<(String, String)> = members
        .iter()
        .filter(|m| m.started())
        .map(|m| {
            (
                m.name.clone(),
                m.peer_urls.first().cloned().unwrap_or_default(),
            )
        })
        .collect();
    peers.app_set("members", &urls.join(","));
    peers.app_set("cluster", &cluster::initial_cluster(&entries));
}

/// Sets `k` in a databag, written only when it changes; an empty value is no key (Juju
/// deletes a key set to ""), so clearing an absent key writes nothing and a cleared key
/// leaves the bag as Juju will hold it.
pub(crate) fn set_key(bag: &mut Bag, writes: &mut Bag, k: &str, v: &str) {
    if bag.get(k).map(String::as_str).unwrap_or("") != v {
        writes.insert(k.into(), v.into());
        if v.is_empty() {
            bag.remove(k);
        } else {
            bag.insert(k.into(), v.into());
        }
    }
}

pub(crate) fn peers_view(p: &Peers) -> crate::relations::clients::ClusterView {
    crate::relations::clients::ClusterView {
        members: p.app_get("members").unwrap_or("").to_string(),
        cluster: p.app_get("cluster").unwrap_or("").to_string(),
        ca: p.app_get("trust").or(p.app_get("ca")).map(String::from),
    }
}
