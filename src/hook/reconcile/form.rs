//! Phase 4, `form`: the leader's bootstrap set, and how this member starts (data, bootstrap or join); `run` drives phases 4 to 7.

use super::state::*;
use crate::juju::{self};
use crate::ops::membership::plan::{self as cluster};
use crate::pki::tls_client;
use crate::unit::peers::Key;
use crate::unit::status::Level;
use crate::unit::{endpoint, has_member_data, now};
use anyhow::Result;
use std::time::Duration;

impl<'a> Reconcile<'a> {
    /// Phases 4 to 7; a phase that must wait reports why and ends the pass.
    pub(super) fn run(&mut self) -> Result<()> {
        let was_started = self.phase() == Some("started");
        if !self.form(was_started)? {
            return Ok(());
        }
        let client = tls_client()?;
        let Ran::Running { roll_msg } = self.run_member(&client)? else {
            return Ok(());
        };
        // Where it answers now (a restart may have moved its client port).
        let ep = endpoint(&self.address, self.st.client_port.unwrap_or(self.cfg.port));
        let status = self.wait_for_member(&client, &ep, was_started);
        let (members, membership_wait) = self.membership(&client, &ep, &status);
        self.report(Report {
            client: &client,
            ep: &ep,
            status: &status,
            members: &members,
            membership_wait,
            roll_msg,
            was_started,
        })
    }

    /// Phase 4: the leader's bootstrap set and how this member starts. False: waiting.
    pub(super) fn form(&mut self, was_started: bool) -> Result<bool> {
        if !self.certified {
            self.set(Key::Phase, "installed");
            self.board
                .report(Level::Waiting, "Waiting for certificates from the leader");
            return Ok(false);
        }
        if !was_started {
            self.set(Key::Phase, "ready");
        }
        if self.leader && self.peers.app_get(Key::Bootstrap).is_none() && !self.bootstrap()? {
            return Ok(false);
        }
        if self.st.initial_cluster.is_none() {
            use crate::hook::plan::Start;
            let bootstrap: Vec<String> = self
                .peers
                .app_get(Key::Bootstrap)
                .map(|b| b.split(',').map(String::from).collect())
                .unwrap_or_default();
            match crate::hook::plan::start(
                &self.ctx.unit,
                &self.name,
                self.peers.join(),
                &bootstrap,
                self.peers.app_get(Key::InitialCluster),
                has_member_data(&self.data),
            ) {
                Start::Join { initial_cluster } => {
                    self.st.initial_cluster = Some(initial_cluster);
                    self.st.initial_state = Some("existing".into());
                }
                Start::Bootstrap { initial_cluster } => {
                    self.st.initial_cluster = initial_cluster;
                    self.st.initial_state = Some("new".into());
                }
                Start::FromData => self.st.initial_state = Some("existing".into()),
                Start::Wait => {
                    self.board
                        .report(Level::Waiting, "Waiting to join the cluster");
                    return Ok(false);
                }
            }
            self.st.token = self.peers.app_get(Key::Token).map(String::from);
            self.st.epoch = self.peers.app_get(Key::Epoch).map(String::from);
        }
        // The epoch this member runs in, in its unit data: a member that rejoined after a
        // restore and started again within one hook otherwise publishes exactly what it had
        // before ("started"), no relation-changed reaches the leader, and its learner waits
        // for a promotion that only the next update-status would bring.
        if let Some(e) = self.st.epoch.clone() {
            self.set(Key::Epoch, &e);
        }
        Ok(true)
    }

    /// The leader forms the cluster from the units that are ready. False: waiting for more.
    pub(super) fn bootstrap(&mut self) -> Result<bool> {
        let planned = juju::goal_state_units().unwrap_or_default();
        let since = *self.st.bootstrap_wait_since.get_or_insert(now());
        let waited = Duration::from_secs(now().saturating_sub(since));
        let infos = self.peers.infos();
        let Some(set) = cluster::bootstrap_set(
            &self.ctx.unit,
            &planned,
            &infos,
            waited,
            cluster::BOOTSTRAP_PATIENCE,
        ) else {
            let ready = infos.iter().filter(|u| u.ready).count();
            self.board.report(
                Level::Waiting,
                format!(
                    "Waiting for peers to be ready to bootstrap ({ready} of {} ready)",
                    planned.len().max(1)
                ),
            );
            return Ok(false);
        };
        use rand::Rng;
        let token: String = format!("etcd-{:016x}", rand::thread_rng().gen::<u64>());
        let entries: Vec<(String, String)> = set
            .iter()
            .map(|u| (u.name.clone(), u.peer_url.clone()))
            .collect();
        let units: Vec<&str> = set.iter().map(|u| u.unit.as_str()).collect();
        juju::log(
            "INFO",
            &format!("bootstrapping the cluster with {}", units.join(", ")),
        );
        let names: Vec<&str> = set.iter().map(|u| u.name.as_str()).collect();
        self.peers.app_set(Key::Token, &token);
        self.peers.app_set(Key::Epoch, "1");
        self.peers
            .app_set(Key::InitialCluster, &cluster::initial_cluster(&entries));
        self.peers.app_set(Key::Bootstrap, &names.join(","));
        Ok(true)
    }
}
