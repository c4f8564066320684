//! What a hook sees of the peer relation `cluster`, with the leader's writes of this hook
//! merged in; the peer data the units publish (`UnitInfo`) and the leader's join (`Join`).
//!
//! Must not: run hook tools (the reconcile reads the relation and writes what changed).

use crate::juju::Bag;

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

/// What the leader knows of one unit from its peer databag.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitInfo {
    pub unit: String,
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
    /// installed, certified and waiting to be told how to start
    pub ready: bool,
    /// running as a member
    pub started: bool,
}

/// The one join in flight, published by the leader in the peer app databag.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Join {
    pub unit: String,
    pub name: String,
    pub peer_url: String,
    pub initial_cluster: String,
}
