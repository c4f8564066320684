//! Phase 5, `run_member`: etcd's config rendered, etcd started, or restarted in this unit's rolling turn.

use super::epoch::relocate_data;
use super::state::*;
use super::turn::{config_held, turn_pending, write_config};
use crate::juju::Hook;
use crate::juju::{self};
use crate::pki;
use crate::unit::peers::{Key, PeerBag};
use crate::unit::rejected::Rejected;
use crate::unit::status::mark;
use crate::unit::status::Level;
use crate::unit::{endpoint, retry};
use anyhow::{Context as _, Result};
use etcdkit::client::{Client, EtcdError, Status};
use etcdkit::install::{self};
use etcdkit::render::{self, ClusterState};
use etcdkit::service::{self};
use std::path::Path;
use std::time::Duration;

impl<'a> Reconcile<'a> {
    /// Phase 5: etcd's config rendered, etcd started, or restarted in this unit's turn.
    pub(super) fn run_member(&mut self, client: &Client) -> Result<Ran> {
        let member = self.member_config()?;
        let (rendered, held, changed, ep) = self.rendered_config(client, &member)?;
        std::fs::create_dir_all(&self.data)?;
        use std::os::unix::fs::PermissionsExt;
        // etcd's data (keys included) is for root alone.
        std::fs::set_permissions(&self.data, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", self.data))?;
        mark("rendered");
        self.finish_killed_turn(client, &ep, &rendered)?;
        let mut roll_msg = None;
        use crate::hook::plan::MemberAction;
        let action = crate::hook::plan::member_action(&crate::hook::plan::MemberView {
            running: self.svc.running()?,
            config_changed: changed,
            trust_running: self.st.running_trust.as_deref(),
            trust_on_disk: self.trust_on_disk.as_deref(),
            peer_trust_running: self.st.running_peer_trust.as_deref(),
            peer_trust_on_disk: self.peer_trust_on_disk.as_deref(),
            staged: self.inst.staged.is_some(),
            running_version: self.st.running_version.as_deref(),
            installed_version: &self.inst.version,
        });
        // A restart no longer wanted (the config went back before this unit's turn, or is
        // held) leaves the roll's queue: a turn granted for it would wait for ever.
        if action != MemberAction::RestartInTurn
            && self
                .mine
                .peer(Key::RestartWanted)
                .is_some_and(|w| !w.is_empty())
        {
            self.set(Key::RestartWanted, "");
        }
        if action == MemberAction::Start {
            return self.start_member(&rendered, changed, held.is_none());
        } else if action == MemberAction::RestartInTurn {
            roll_msg = self.restart_in_turn(client, &ep, &rendered)?;
        } else if self.leader {
            roll_msg = self.manage_roll(client, &ep);
        }
        Ok(Ran::Running { roll_msg })
    }

    /// What this member's etcd config says of it besides the operator's settings.
    fn member_config(&self) -> Result<render::Member> {
        Ok(render::Member {
            name: self.name.clone(),
            address: self.address.clone(),
            data_dir: self.data.clone(),
            initial_cluster: self
                .st
                .initial_cluster
                .clone()
                .unwrap_or_else(|| format!("{}={}", self.name, self.peer_url)),
            state: if self.st.initial_state.as_deref() == Some("new") {
                ClusterState::New
            } else {
                ClusterState::Existing
            },
            token: self
                .st
                .token
                .clone()
                .unwrap_or_else(|| "etcd-cluster".into()),
            pki_dir: pki::PKI_DIR.into(),
            version: self.inst.version()?,
        })
    }

    /// The config rendered for `member`, the rejected record that holds it back (if any),
    /// whether it differs from the one on disk and may be applied, and the endpoint where
    /// the member answers now.
    fn rendered_config(
        &mut self,
        client: &Client,
        member: &render::Member,
    ) -> Result<(String, Option<Rejected>, bool, String)> {
        let cfg = &self.cfg;
        if cfg.enable_v2 && !member.version.has_v2_api() {
            self.board.report(
                Level::Blocked,
                format!(
                    "enable_v2 is not applied: etcd {} has no v2 API; set enable_v2=false",
                    member.version
                ),
            );
        }
        let settings = crate::monitoring::cos::etcd_settings(cfg, self.ctx.hook.as_ref())?;
        let rendered = render::etcd_config(&member, &settings);
        // A config that failed its turn here and was rolled back is held, not tried again,
        // until the charm's config renders another one.
        let held = config_held(&rendered)?;
        match &held {
            Some(r) => {
                self.set(Key::ConfigRejected, &r.hash[..16]);
                self.board.report(Level::Blocked, r.message());
            }
            None => self.set(Key::ConfigRejected, ""),
        }
        // Compared as YAML values: a config another charm revision wrote in other words
        // restarts nothing.
        let mut changed = held.is_none()
            && !std::fs::read_to_string(service::CONFIG_FILE)
                .is_ok_and(|running| render::same_config(&running, &rendered));
        let ep = endpoint(&self.address, self.st.client_port.unwrap_or(self.cfg.port));
        // A quota below the database this member holds is not applied: checked against what
        // the running member says (a member that does not answer is not asked).
        if changed {
            if let Some(why) = client.status(&ep).ok().and_then(|s| {
                crate::hook::plan::quota_short(self.cfg.quota_backend_bytes, s.db_size)
            }) {
                self.board.report(Level::Blocked, why);
                changed = false;
            }
        }
        Ok((rendered, held, changed, ep))
    }

    /// A turn a killed hook left between its switch and its verdict is finished before
    /// anything else is decided from what runs here.
    fn finish_killed_turn(&mut self, client: &Client, ep: &str, rendered: &str) -> Result<()> {
        if turn_pending(&self.inst) {
            juju::log(
                "INFO",
                "finishing the restart a killed hook left between its switch and its health check",
            );
            let r = crate::ops::roll::turn::resume(&mut self.live_member(client, ep, rendered))?;
            // The killed turn held the member-down lock: the turn is over, so it goes.
            // (Asked where the member answers now: the turn may have moved its client port.)
            for here in [ep.to_string(), endpoint(&self.address, self.cfg.port)] {
                if crate::ops::member_lock::release_own(client, &here, &self.ctx.unit) {
                    break;
                }
            }
            if let Some(r) = r {
                let wanted = self
                    .mine
                    .peer(Key::RestartWanted)
                    .cloned()
                    .unwrap_or_default();
                self.restarted(&r, &wanted);
            }
        }
        Ok(())
    }

    /// Starts etcd (not running, nothing else to do first): with the new config when it
    /// changed, and the running port, peer URL and version recorded (`applied`: the config
    /// started is the rendered one, not a held one).
    fn start_member(&mut self, rendered: &str, changed: bool, applied: bool) -> Result<Ran> {
        relocate_data(&self.data, &self.svc)?;
        if changed {
            write_config(rendered)?;
        }
        if self.ctx.is(Hook::UpdateStatus) {
            // Report the fault now; the restart is seen by the next update-status.
            self.board.report(
                Level::Blocked,
                format!(
                    "UnHealthy with {} known peers: etcd was not running; restarting it",
                    self.peers.units.len()
                ),
            );
            self.svc.start()?;
            self.started_with_trust_on_disk();
            return Ok(Ran::Reported);
        }
        self.svc.start()?;
        self.started_with_trust_on_disk();
        // A held config is not what starts: the file on disk (the config that ran
        // before) keeps its ports and URLs.
        if applied {
            self.st.client_port = Some(self.cfg.port);
            self.st.running_peer_url = Some(self.peer_url.clone());
        }
        // With binaries staged for a rolling upgrade, what started is what `current`
        // still points at; the new ones wait for this unit's turn.
        self.st.running_version = Some(if self.inst.staged.is_some() {
            install::binary_version(Path::new(&self.inst.etcd()))?
        } else {
            self.inst.version.clone()
        });
        Ok(Ran::Running { roll_msg: None })
    }

    /// Waits for this member to answer (as long as this hook can usefully wait) and returns
    /// its status; the started phase and the client port follow from the answer.
    pub(super) fn wait_for_member(
        &mut self,
        client: &Client,
        ep: &str,
        was_started: bool,
    ) -> std::result::Result<Status, EtcdError> {
        let bootstrap_size = self
            .peers
            .app_get(Key::Bootstrap)
            .map(|b| b.split(',').count())
            .unwrap_or(0);
        let patience = crate::hook::plan::patience(
            self.ctx.is(Hook::UpdateStatus),
            was_started,
            self.st.initial_state.as_deref() == Some("new")
                && bootstrap_size > 1
                && self.peers.app_writes.contains_key(Key::Bootstrap.as_str()),
        );
        // Waiting only: the status is asked again just below and that answer is what counts.
        let _ = retry(patience, Duration::from_millis(100), || client.status(ep));
        mark("started");
        let status = client.status(ep);
        if status.is_ok() {
            self.set(Key::Phase, "started");
            let port = self.cfg.port;
            if self.st.opened_port != Some(port) {
                match juju::open_only(port) {
                    Ok(()) => self.st.opened_port = Some(port),
                    // etcd serves either way; only `juju expose` waits for the next hook.
                    Err(e) => juju::log("WARNING", &format!("cannot open port {port}: {e}")),
                }
            }
        }
        status
    }
}
