//! The state one reconcile carries: what the hook observed and what it will write back, and the small helpers every phase uses.

use crate::config::Config;
use crate::juju::{Bag, Context};
use crate::pki::authority;
use crate::unit::peers::{set_key, Peers};
use crate::unit::peers::{Key, PeerBag};
use crate::unit::status::StatusBoard;
use crate::unit::{endpoint, LocalState};
use anyhow::Result;
use etcdkit::client::{Client, EtcdError, Member, Status};
use etcdkit::install::Installed;
use etcdkit::service::Service;

/// One reconcile: what the hook observed, and this unit's and (leader) the application's
/// relation writes, committed at the end.
pub(super) struct Reconcile<'a> {
    pub(super) ctx: &'a Context,
    pub(super) st: &'a mut LocalState,
    pub(super) board: &'a mut StatusBoard,
    pub(super) cfg: Config,
    pub(super) leader: bool,
    pub(super) inst: Installed,
    /// what the healthy status adds for a Debian-package unit with a resource attached
    pub(super) migration_hint: &'static str,
    /// the address of this unit its peers know (the first ingress address)
    pub(super) address: String,
    /// the names its certificates carry
    pub(super) names: Vec<String>,
    pub(super) name: String,
    pub(super) peer_url: String,
    pub(super) client_url: String,
    pub(super) csrs: (String, String),
    pub(super) peers: Peers,
    /// this unit's databag as it will be once `my_writes` are committed
    pub(super) mine: Bag,
    pub(super) my_writes: Bag,
    pub(super) svc: Service,
    pub(super) data: String,
    /// the CA on the `certificates` relation, when one answered
    pub(super) provided: Option<authority::Provided>,
    /// this unit's certificates are in place
    pub(super) certified: bool,
    /// the sha of the CA bundles on disk (what etcd trusts once it restarts), for the
    /// client port (`ca.crt`) and the peer port (`peer-ca.crt`)
    pub(super) trust_on_disk: Option<String>,
    pub(super) peer_trust_on_disk: Option<String>,
}

/// `ask`'s answer, kept in `seen`; in update-status the kept one (when it `fits`) serves
/// instead of asking: what update-status would ask (the attached resource, the storage)
/// only changes with a hook of its own, which asks again.
pub(super) fn remembered<T: Clone>(
    seen: &mut Option<T>,
    update_status: bool,
    fits: impl Fn(&T) -> bool,
    ask: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if let Some(kept) = seen.as_ref().filter(|s| update_status && fits(s)) {
        return Ok(kept.clone());
    }
    let answer = ask()?;
    *seen = Some(answer.clone());
    Ok(answer)
}

/// How phase 5 ended.
pub(super) enum Ran {
    /// An update-status found etcd down, said so and started it: the pass ends (the next
    /// update-status sees the restart).
    Reported,
    /// etcd runs (or was started or restarted); what the leader's roll reports, if anything.
    Running { roll_msg: Option<String> },
}

/// What phase 7 reports from.
pub(super) struct Report<'r> {
    pub(super) client: &'r Client,
    pub(super) ep: &'r str,
    pub(super) status: &'r std::result::Result<Status, EtcdError>,
    pub(super) members: &'r [Member],
    pub(super) membership_wait: Option<String>,
    pub(super) roll_msg: Option<String>,
    pub(super) was_started: bool,
}

impl<'a> Reconcile<'a> {
    /// What this unit tells its peers about itself at every hook.
    pub(super) fn publish_self(&mut self) {
        // A version that failed here stops the roll everywhere (the leader grants no more
        // turns).
        let rolled_back = self.inst.rolled_back.clone().unwrap_or_default();
        self.set(Key::RolledBack, &rolled_back);
        // The roll's view of this unit: the version it runs and the one it will run.
        self.set(Key::WantsVersion, &self.inst.version.clone());
        if let Some(v) = self.st.running_version.clone() {
            self.set(Key::EtcdVersion, &v);
        }
        // Peers see the URLs etcd runs with now; new ones once this unit has restarted.
        let port = self.st.client_port.unwrap_or(self.cfg.port);
        let published = [
            (Key::DbIngressAddress, self.address.clone()),
            (Key::MemberName, self.name.clone()),
            (
                Key::PeerUrl,
                self.st
                    .running_peer_url
                    .clone()
                    .unwrap_or(self.peer_url.clone()),
            ),
            (Key::ClientUrl, endpoint(&self.address, port)),
            (Key::CsrServer, self.csrs.0.clone()),
            (Key::CsrPeer, self.csrs.1.clone()),
        ];
        for (k, v) in published {
            self.set(k, &v);
        }
    }

    /// Sets a key of this unit's databag (written when the hook commits); the peers' view
    /// (`peers.units`) sees it at once, as hook tools show a unit its own writes.
    pub(super) fn set(&mut self, key: Key, value: &str) {
        set_key(&mut self.mine, &mut self.my_writes, key.as_str(), value);
        self.peers
            .units
            .insert(self.ctx.unit.clone(), self.mine.clone());
    }

    pub(super) fn phase(&self) -> Option<&str> {
        self.mine.peer(Key::Phase).map(String::as_str)
    }

    /// etcd started (or restarted) now: it runs with the CA bundles on disk.
    pub(super) fn started_with_trust_on_disk(&mut self) {
        self.st.running_trust = self.trust_on_disk.clone();
        self.st.running_peer_trust = self.peer_trust_on_disk.clone();
        self.publish_running_trust();
    }

    /// Tells the leader's CA moves which bundles this unit's etcd runs with.
    pub(super) fn publish_running_trust(&mut self) {
        if let Some(t) = self.st.running_trust.clone() {
            self.set(authority::Side::CLIENT.trust_running, &t);
        }
        if let Some(t) = self.st.running_peer_trust.clone() {
            self.set(authority::Side::PEER.trust_running, &t);
        }
    }

    /// What a CA move waits for from this unit, on each side: the CA it serves with (and
    /// answered healthy with), the bundle it runs.
    pub(super) fn tls_keys(&self) -> Vec<Option<String>> {
        [authority::Side::CLIENT, authority::Side::PEER]
            .iter()
            .flat_map(|s| [s.trust_running, s.issuer_in_use, s.verified])
            .map(|k| self.mine.peer(k).cloned())
            .collect()
    }
}
