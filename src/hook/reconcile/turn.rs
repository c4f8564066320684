//! This unit's rolling turn (phase 5): the restart as a transaction (`ops::roll::turn`) over the live member, the verdict published, a config etcd refused held back.

use super::epoch::relocate_data;
use super::state::*;
use crate::juju::{self};
use crate::ops::roll::lock::{manage_restart_lock, RollCtx};
use crate::ops::roll::turn::Restarted;
use crate::ops::txn::{Op, Step, Txn};
use crate::pki;
use crate::unit::peers::{Key, PeerBag};
use crate::unit::rejected::{Rejected, REJECTED};
use crate::unit::status::Level;
use crate::unit::{endpoint, retry};
use anyhow::{anyhow, bail, Result};
use etcdkit::client::{Client, Member};
use etcdkit::install::{self, Installed};
use etcdkit::service::{self, Service};
use std::path::Path;
use std::time::Duration;

/// This unit's etcd as `restart` drives it: the install record (the switch and its way
/// back), the service, and etcd's health at the endpoint it serves after the restart.
pub(super) struct LiveMember<'m> {
    pub(super) inst: &'m mut Installed,
    pub(super) svc: &'m Service,
    pub(super) client: &'m Client,
    /// where the member answers before the restart
    pub(super) ep: &'m str,
    pub(super) name: &'m str,
    pub(super) peer_url: &'m str,
    pub(super) running_peer_url: Option<&'m str>,
    pub(super) data: &'m str,
    pub(super) rendered: &'m str,
    /// where it answers after
    pub(super) after: String,
    /// the member's ID and the other members' client URLs, when this turn registered a new
    /// peer URL (a roll back registers the old one again through them)
    pub(super) moved_peer: Option<(u64, Vec<String>)>,
}

impl crate::ops::roll::turn::Member for LiveMember<'_> {
    /// Keeps the config etcd runs with (when the new one differs and the data stays where
    /// it is: a config from before a data move would point etcd at the tree moved aside),
    /// then switches staged binaries in; each recorded first in the unit's transaction.
    fn switch(&mut self) -> Result<()> {
        let mut txn = match turn_txn()? {
            Some(t) => t,
            None => Txn::begin(Op::Turn)?,
        };
        if !txn.has(|s| matches!(s, Step::File { .. })) {
            if let Ok(running) = std::fs::read_to_string(service::CONFIG_FILE) {
                let same_dir = crate::ops::relocate::data_dir_in(&running)
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some(self.data);
                if !etcdkit::render::same_config(&running, self.rendered) && same_dir {
                    txn.record(Step::File {
                        path: service::CONFIG_FILE.into(),
                        before: running,
                    })?;
                }
            }
        }
        if self.inst.staged.is_some() && !txn.has(|s| matches!(s, Step::Switched)) {
            txn.record(Step::Switched)?;
        }
        Ok(install::switch_staged(self.inst)?)
    }
    fn pending(&self) -> bool {
        turn_pending(self.inst)
    }
    fn binaries_switched(&self) -> bool {
        self.inst.previous.is_some()
    }
    /// A new peer URL is registered first, and raft leadership handed over (a raft leader
    /// that restarts costs the cluster an election).
    fn restart(&mut self) -> Result<()> {
        if self.running_peer_url.is_some_and(|u| u != self.peer_url) {
            let members = self.client.member_list(self.ep)?;
            if let Some(me) = members.iter().find(|m| m.name == self.name) {
                juju::log(
                    "INFO",
                    &format!("updating this member's peer URL to {}", self.peer_url),
                );
                self.client
                    .member_update(self.ep, me.id, &[self.peer_url.to_string()])?;
                let others = members
                    .iter()
                    .filter(|m| m.id != me.id)
                    .filter_map(Member::client_url)
                    .collect();
                self.moved_peer = Some((me.id, others));
            }
        }
        if let Ok(members) = self.client.member_list(self.ep) {
            if let Some(me) = members.iter().find(|m| m.name == self.name) {
                crate::ops::membership::apply::hand_over_logged(
                    self.client,
                    self.ep,
                    me.id,
                    &members,
                    "restarting",
                );
            }
        }
        relocate_data(self.data, self.svc)?;
        write_config(self.rendered)?;
        juju::log("INFO", "restarting etcd with the new config");
        self.svc.restart()?;
        Ok(())
    }
    fn healthy(&mut self) -> std::result::Result<(), String> {
        retry(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || match self.client.health(&self.after) {
                Ok(true) => Ok(()),
                Ok(false) => Err("etcd answers that it is not healthy".to_string()),
                Err(e) => Err(e.to_string()),
            },
        )
    }
    fn commit(&mut self) -> Result<()> {
        if self.inst.previous.is_some() {
            install::commit(self.inst)?;
        }
        match turn_txn()? {
            Some(t) => t.commit(),
            None => Ok(()),
        }
    }
    /// A config-only turn that failed is recorded first (the config is then held, never
    /// tried again by a later hook until the charm renders another one), then what ran
    /// before goes back.
    fn roll_back(&mut self) -> Result<()> {
        let txn = turn_txn()?;
        let kept = txn
            .as_ref()
            .and_then(|t| t.kept_file(Path::new(service::CONFIG_FILE)))
            .map(String::from);
        if let (Some(kept), false) = (&kept, self.inst.previous.is_some()) {
            let r = Rejected {
                hash: pki::sha256_hex(self.rendered.as_bytes()),
                why: String::new(),
                changed: changed_settings(kept, self.rendered),
            };
            crate::unit::write_json(REJECTED, &r)?;
        }
        match txn {
            Some(t) => {
                t.roll_back()?;
                // The undo rolled the install record back on disk.
                *self.inst = Installed::load()
                    .ok_or_else(|| anyhow!("the install record is gone after a roll back"))?;
            }
            None if self.inst.previous.is_some() => install::roll_back(self.inst)?,
            None => {}
        }
        // The peer URL this turn registered goes back too, through the members that answer
        // (this one is down): the others would look for it at the new one.
        if let (Some((id, others)), Some(old)) = (&self.moved_peer, self.running_peer_url) {
            let back = others.iter().any(|ep| {
                self.client
                    .member_update(ep, *id, &[old.to_string()])
                    .is_ok()
            });
            if !back {
                juju::log(
                    "WARNING",
                    &format!(
                        "cannot register this member's peer URL {old} again; the next hook tries"
                    ),
                );
            }
        }
        self.svc.restart()?;
        Ok(())
    }
    fn version(&self) -> String {
        self.inst.version.clone()
    }
}

/// The transaction of a rolling turn under way, if any; another operation's is an error
/// (every hook undoes that one first).
fn turn_txn() -> Result<Option<Txn>> {
    match Txn::load()? {
        Some(t) if t.op != Op::Turn => bail!("{} is unfinished on this unit", t.op.name()),
        t => Ok(t),
    }
}

/// Whether a turn is between its switch and its verdict (a way back exists). A record
/// that cannot be read counts as pending: finishing the turn then fails with its error.
pub(super) fn turn_pending(inst: &Installed) -> bool {
    inst.previous.is_some() || turn_txn().map_or(true, |t| t.is_some())
}

/// The rejected config record when `rendered` is the config it holds; a record of another
/// config is stale (the charm's config changed since) and goes.
pub(super) fn config_held(rendered: &str) -> Result<Option<Rejected>> {
    let Some(r) = crate::unit::read_json::<Rejected>(REJECTED)? else {
        return Ok(None);
    };
    if r.hash == pki::sha256_hex(rendered.as_bytes()) {
        return Ok(Some(r));
    }
    crate::unit::remove_if_present(Path::new(REJECTED))?;
    Ok(None)
}

/// etcd's top-level settings whose values differ between two rendered configs.
pub(super) fn changed_settings(before: &str, after: &str) -> Vec<String> {
    let parse = |t: &str| -> std::collections::BTreeMap<String, serde_yaml::Value> {
        serde_yaml::from_str(t).unwrap_or_default()
    };
    let (b, a) = (parse(before), parse(after));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

pub(super) fn write_config(rendered: &str) -> pki::Result<()> {
    pki::write_file(Path::new(service::CONFIG_FILE), rendered.as_bytes(), 0o644)
}

impl<'a> Reconcile<'a> {
    /// The leader's rolling-restart lock (`rolling`): what its status says about the roll.
    pub(super) fn manage_roll(&mut self, client: &Client, ep: &str) -> Option<String> {
        let rc = RollCtx {
            pause_mode: self.cfg.pause_after_unit_upgrade,
            client,
            ep,
            inst: &self.inst,
            data: &self.data,
        };
        manage_restart_lock(&mut self.peers, &rc)
    }

    /// A running member applies a new config, a new CA bundle (etcd reads its trusted CAs
    /// only when it starts) or new binaries in its turn: one unit at a time, each healthy
    /// again before the next, so quorum is never at risk.
    pub(super) fn restart_in_turn(
        &mut self,
        client: &Client,
        ep: &str,
        rendered: &str,
    ) -> Result<Option<String>> {
        let want = self.restart_hash(rendered);
        self.set(Key::RestartWanted, &want);
        let mut roll_msg = None;
        if self.leader {
            roll_msg = self.manage_roll(client, ep);
        }
        let unit = self.ctx.unit.clone();
        // An upgrade turn that came while this member leads raft, with others still
        // waiting, goes back to the leader: the raft leader upgrades last (leadership can
        // move after the turn was granted). Handed back once per turn hash: the unit then
        // waits for the end of the queue, and takes its turn when it comes again.
        let rejected_by = crate::ops::roll::plan::config_rejected(&self.peers.units);
        let view = crate::hook::plan::TurnView {
            alone: self.peers.units.len() == 1,
            // The storage goes when this hook ends: the data leaves it now, not in a turn.
            detaching: crate::unit::data_detaching(self.ctx),
            granted: self.peers.app_get(Key::RestartGrant)
                == Some(format!("{unit}:{want}").as_str()),
            upgrading: self.inst.staged.is_some(),
            declined_before: self.mine.peer(Key::TurnDeclined).map(String::as_str)
                == Some(want.as_str()),
            others_waiting: crate::ops::roll::plan::queue(&self.peers.units, None)
                .iter()
                .any(|u| *u != unit),
            rolled_back: crate::ops::roll::plan::rolled_back(&self.peers.units),
            paused_after: self.peers.app_get(Key::UpgradePaused),
            config_rejected: rejected_by.as_deref(),
        };
        // A detaching storage takes no turn (its hook must finish for the volume to go), so
        // two removed at once could stop two members together: the move waits (the hook
        // fails and Juju retries it) while another member does not answer healthy.
        if view.detaching && !view.alone {
            if let Some(down) = crate::ops::health::other_member_down(client, ep, &self.name) {
                anyhow::bail!(
                    "member {down} does not answer healthy: moving this member's data off its \
                     volume now would stop a second member and could cost the cluster its \
                     quorum; Juju retries this hook, and the move goes on once {down} is back"
                );
            }
        }
        let turn = crate::hook::plan::turn(&view, || {
            client
                .leader_member(ep)
                .ok()
                .flatten()
                .is_some_and(|m| m.name == self.name)
        });
        use crate::hook::plan::Turn;
        match turn {
            Turn::HandBack => {
                juju::log(
                    "INFO",
                    "this member leads raft and others still wait: handing the upgrade turn back (it goes last)",
                );
                self.set(Key::TurnDeclined, &want);
                if self.leader {
                    roll_msg = self.manage_roll(client, ep);
                }
            }
            Turn::Take => {
                self.take_turn(
                    client,
                    ep,
                    rendered,
                    &want,
                    (view.alone, view.detaching),
                    &mut roll_msg,
                )?;
            }
            waiting => self.report_waiting(waiting),
        }
        Ok(roll_msg)
    }

    /// What this unit's restart is for: the rendered config, the version and binaries
    /// staged, the CA bundles on disk (a digest: the same turn is asked for once).
    fn restart_hash(&self, rendered: &str) -> String {
        let staged = self.inst.staged.as_deref().unwrap_or("");
        let trust = self.trust_on_disk.as_deref().unwrap_or("");
        let peer_trust = self.peer_trust_on_disk.as_deref().unwrap_or("");
        pki::sha256_hex(
            format!(
                "{rendered}\n{}{staged}\n{trust}{peer_trust}",
                self.inst.version
            )
            .as_bytes(),
        )[..16]
            .to_string()
    }

    /// This unit's turn, taken: the member-down lock (unless `alone`), the restart as a
    /// transaction, its verdict published; the leader grants the next turn.
    fn take_turn(
        &mut self,
        client: &Client,
        ep: &str,
        rendered: &str,
        want: &str,
        (alone, detaching): (bool, bool),
        roll_msg: &mut Option<String>,
    ) -> Result<()> {
        // One member down at a time across the roll, actions and storage detaches:
        // the member-down lock, held until this restart is over.
        let _lock = if alone {
            None
        } else {
            match crate::ops::member_lock::take(client, ep, &self.ctx.unit.clone(), "restart") {
                Err(e) => {
                    // This member cannot be asked (the restart may be what mends it):
                    // the health gates of the roll still hold.
                    juju::log("WARNING", &format!("cannot take the member-down lock here ({e:#}); restarting in this unit's turn without it"));
                    None
                }
                Ok(Ok(mut held)) => {
                    held.also(&endpoint(&self.address, self.cfg.port));
                    Some(held)
                }
                Ok(Err(holder)) if detaching => anyhow::bail!(
                    "{holder} has its member down now (the member-down lock): moving \
                     this member's data off its volume now would stop a second member; \
                     Juju retries this hook"
                ),
                Ok(Err(holder)) => {
                    self.board.report(
                        Level::Maintenance,
                        format!("Waiting for {holder} to finish before restarting (the member-down lock)"),
                    );
                    return Ok(());
                }
            }
        };
        let r = crate::ops::roll::turn::take(&mut self.live_member(client, ep, rendered))?;
        self.restarted(&r, want);
        if self.leader {
            *roll_msg = self.manage_roll(client, ep);
        }
        Ok(())
    }

    /// Says why this unit's restart waits (or stopped).
    fn report_waiting(&mut self, turn: crate::hook::plan::Turn) {
        use crate::hook::plan::Turn;
        match turn {
            Turn::Stopped { unit, version } => self.board.report(
                Level::Blocked,
                format!(
                    "Upgrade stopped: etcd {version} failed on {unit} and was rolled back \
             there; this unit keeps its version: {}",
                    self.inst.retry_hint()
                ),
            ),
            Turn::ConfigStopped { unit } => self.board.report(
                Level::Blocked,
                format!(
                    "Config change stopped: etcd on {unit} did not come up healthy with the \
             new config and runs its previous one (see its status); this unit keeps \
             its config until the config changes again"
                ),
            ),
            Turn::Paused { after } => self.board.report(
                Level::Maintenance,
                format!(
                    "Upgrade paused after {after}: run the resume-upgrade action on the \
             leader to go on"
                ),
            ),
            Turn::Wait => self.board.report(
                Level::Maintenance,
                "Waiting for this unit's turn to restart with the new config",
            ),
            Turn::HandBack | Turn::Take => {}
        }
    }

    /// This unit's etcd for `restart`: `ep` is where it answers before the restart.
    pub(super) fn live_member<'m>(
        &'m mut self,
        client: &'m Client,
        ep: &'m str,
        rendered: &'m str,
    ) -> LiveMember<'m> {
        LiveMember {
            inst: &mut self.inst,
            svc: &self.svc,
            client,
            ep,
            name: &self.name,
            peer_url: &self.peer_url,
            running_peer_url: self.st.running_peer_url.as_deref(),
            data: &self.data,
            rendered,
            after: endpoint(&self.address, self.cfg.port),
            moved_peer: None,
        }
    }

    /// What a finished restart (`wanted`: the turn's hash) leaves in the unit's state and
    /// tells the peers: the URLs and version etcd now runs with, and a version that failed.
    pub(super) fn restarted(&mut self, r: &Restarted, wanted: &str) {
        match r {
            Restarted::Healthy => {}
            Restarted::Unhealthy { why } => juju::log(
                "WARNING",
                &format!("etcd does not answer healthy after its restart: {why}"),
            ),
            Restarted::RolledBack {
                failed: Some(failed),
                why,
            } => {
                juju::log(
                    "WARNING",
                    &format!(
                        "etcd {failed} did not become healthy ({why}); rolled back to {}",
                        self.inst.version
                    ),
                );
                // Published before the leader's lock can grant the next turn.
                self.set(Key::RolledBack, failed);
            }
            Restarted::RolledBack { failed: None, why } => {
                let said = self.svc.last_error();
                let why = match said {
                    Some(e) => format!("{why}; etcd said: {e}"),
                    None => why.clone(),
                };
                juju::log(
                    "WARNING",
                    &format!("etcd did not become healthy with the new config ({why}); its previous config runs again"),
                );
                // The record roll_back wrote gets the reason; the key stops the roll before
                // the leader's lock can grant the next turn.
                if let Ok(Some(mut r)) = crate::unit::read_json::<Rejected>(REJECTED) {
                    r.why = juju::bounded(&why, 400).into_owned();
                    if let Err(e) = crate::unit::write_json(REJECTED, &r) {
                        juju::log(
                            "WARNING",
                            &format!("cannot record why the config failed: {e:#}"),
                        );
                    }
                    self.set(Key::ConfigRejected, &r.hash[..16]);
                    self.board.report(Level::Blocked, r.message());
                }
            }
        }
        // etcd reads the CA bundles on disk whenever it starts, a rolled-back start too.
        self.started_with_trust_on_disk();
        self.st.running_version = Some(self.inst.version.clone());
        self.set(Key::Restarted, wanted);
        self.set(Key::EtcdVersion, &self.inst.version.clone());
        if matches!(r, Restarted::RolledBack { failed: None, .. }) {
            // The config (and with it the ports and URLs) that ran before runs again.
            return;
        }
        self.st.client_port = Some(self.cfg.port);
        self.st.running_peer_url = Some(self.peer_url.clone());
        self.set(Key::PeerUrl, &self.peer_url.clone());
        self.set(Key::ClientUrl, &self.client_url.clone());
    }
}
