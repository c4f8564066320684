//! What a hook sees of the peer relation `cluster`, with the leader's writes of this hook
//! merged in; the peer data the units publish (`UnitInfo`) and the leader's join (`Join`).
//!
//! Must not: run hook tools (the reconcile reads the relation and writes what changed).

use crate::juju::Bag;

/// The `phase` a unit publishes while its machine runs the classic charm's member, not
/// taken over yet (hook::takeover).
pub(crate) const CLASSIC_PHASE: &str = "classic";

/// A key of the peer relation's data (a unit's bag or the application's), named once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Phase,
    SnapshotTaker,
    RestartGrant,
    Epoch,
    UpgradeTurn,
    UpgradePaused,
    RestartWanted,
    Bootstrap,
    SnapshotSummary,
    EtcdVersion,
    ConfigRejected,
    ClientUrl,
    WantsVersion,
    UpgradeSnapshot,
    TurnDeclined,
    Trust,
    Token,
    RolledBack,
    PeerUrl,
    Members,
    Join,
    InitialCluster,
    Cluster,
    Restarted,
    PeerCaMove,
    PackageTarget,
    MemberName,
    CaMove,
    Ca,
    IssuerCa,
    TrustRunning,
    IssuerInUse,
    IssuerVerified,
    PeerTrust,
    PeerIssuerCa,
    PeerTrustRunning,
    PeerIssuerInUse,
    PeerIssuerVerified,
    DbIngressAddress,
    CsrServer,
    CsrPeer,
    ClientCertSha,
    ProviderClientCsr,
    PeerCa,
    TakeoverTurn,
}

impl Key {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Key::Phase => "phase",
            Key::SnapshotTaker => "snapshot-taker",
            Key::RestartGrant => "restart-grant",
            Key::Epoch => "epoch",
            Key::UpgradeTurn => "upgrade-turn",
            Key::UpgradePaused => "upgrade-paused",
            Key::RestartWanted => "restart-wanted",
            Key::Bootstrap => "bootstrap",
            Key::SnapshotSummary => "snapshot-summary",
            Key::EtcdVersion => "etcd-version",
            Key::ConfigRejected => "config-rejected",
            Key::ClientUrl => "client-url",
            Key::WantsVersion => "wants-version",
            Key::UpgradeSnapshot => "upgrade-snapshot",
            Key::TurnDeclined => "turn-declined",
            Key::Trust => "trust",
            Key::Token => "token",
            Key::RolledBack => "rolled-back",
            Key::PeerUrl => "peer-url",
            Key::Members => "members",
            Key::Join => "join",
            Key::InitialCluster => "initial-cluster",
            Key::Cluster => "cluster",
            Key::Restarted => "restarted",
            Key::PeerCaMove => "peer-ca-move",
            Key::PackageTarget => "package-target",
            Key::MemberName => "member-name",
            Key::CaMove => "ca-move",
            Key::IssuerCa => "issuer-ca",
            Key::TrustRunning => "trust-running",
            Key::IssuerInUse => "issuer-in-use",
            Key::IssuerVerified => "issuer-verified",
            Key::PeerTrust => "peer-trust",
            Key::PeerIssuerCa => "peer-issuer-ca",
            Key::PeerTrustRunning => "peer-trust-running",
            Key::PeerIssuerInUse => "peer-issuer-in-use",
            Key::PeerIssuerVerified => "peer-issuer-verified",
            Key::DbIngressAddress => "db-ingress-address",
            Key::CsrServer => "csr-server",
            Key::CsrPeer => "csr-peer",
            Key::PeerCa => "peer-ca",
            Key::ClientCertSha => "client-cert-sha",
            Key::ProviderClientCsr => "provider-client-csr",
            Key::Ca => "ca",
            Key::TakeoverTurn => "takeover-turn",
        }
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.as_str().to_string()
    }
}

/// A key of the application's data the leader makes per member and profile (what it
/// signed for it, and the digest of the request it signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberKey(pub(crate) String);

/// What names a key of the peer relation's data: a fixed `Key` or a `MemberKey`.
pub(crate) trait AsKey {
    fn as_key(&self) -> &str;
}

impl AsKey for Key {
    fn as_key(&self) -> &str {
        self.as_str()
    }
}

impl AsKey for MemberKey {
    fn as_key(&self) -> &str {
        &self.0
    }
}

impl<T: AsKey> AsKey for &T {
    fn as_key(&self) -> &str {
        (*self).as_key()
    }
}

/// A peer databag read by key.
pub(crate) trait PeerBag {
    fn peer(&self, k: Key) -> Option<&String>;
}

impl PeerBag for Bag {
    fn peer(&self, k: Key) -> Option<&String> {
        self.get(k.as_str())
    }
}

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
    pub(crate) fn app_get(&self, k: impl AsKey) -> Option<&str> {
        let k = k.as_key();
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
    pub(crate) fn app_set(&mut self, k: impl AsKey, v: &str) {
        if self.app_get(&k) != Some(v) && !(v.is_empty() && self.app_get(&k).is_none()) {
            self.app_writes
                .insert(k.as_key().to_string(), v.to_string());
        }
    }
    pub(crate) fn infos(&self) -> Vec<UnitInfo> {
        self.units
            .iter()
            .filter_map(|(u, b)| {
                Some(UnitInfo {
                    unit: u.clone(),
                    name: b.peer(Key::MemberName)?.clone(),
                    peer_url: b.peer(Key::PeerUrl)?.clone(),
                    client_url: b.peer(Key::ClientUrl).cloned().unwrap_or_default(),
                    ready: matches!(
                        b.peer(Key::Phase).map(String::as_str),
                        Some("ready") | Some("started")
                    ),
                    started: b.peer(Key::Phase).map(String::as_str) == Some("started"),
                })
            })
            .collect()
    }
    /// The units whose member has started, with their databags.
    pub(crate) fn started(&self) -> impl Iterator<Item = (&String, &Bag)> {
        self.units
            .iter()
            .filter(|(_, b)| b.peer(Key::Phase).map(String::as_str) == Some("started"))
    }
    pub(crate) fn join(&self) -> Option<Join> {
        self.app_get(Key::Join)
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
