//! Phase 7, `report`: scheduled snapshots, automatic defrag, this unit's and the application's status.

use super::state::*;
use crate::juju::{self};
use crate::ops::membership::plan::UnitInfo;
use crate::pki::authority;
use crate::unit::peers::{Key, PeerBag};
use crate::unit::status::mark;
use crate::unit::status::Level;
use anyhow::Result;
use etcdkit::client::{Alarm, Member};

/// What an active alarm means and what the operator does about it.
pub(super) fn alarm_message(alarms: &[Alarm], members: &[Member], quota: u64) -> String {
    let on = |id: u64| {
        members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("{id:x}"))
    };
    let mut parts: Vec<String> = alarms
        .iter()
        .map(|a| format!("{} on {}", a.alarm, on(a.member_id)))
        .collect();
    parts.dedup();
    let hint = if alarms.iter().any(|a| a.alarm == "NOSPACE") {
        let quota = if quota == 0 {
            "the backend quota".to_string()
        } else {
            format!("quota_backend_bytes ({quota})")
        };
        format!(
            ": the database reached {quota}; writes are refused until you run the compact \
             action, defrag on every unit, then alarm-disarm (or raise quota_backend_bytes)"
        )
    } else {
        ": run alarm-list for details and alarm-disarm once the cause is fixed".to_string()
    };
    format!("Alarm {}{hint}", parts.join(", "))
}

impl<'a> Reconcile<'a> {
    /// Phase 7: scheduled snapshots, automatic defrag, then this unit's status and (leader)
    /// the application's.
    pub(super) fn report(&mut self, r: Report) -> Result<()> {
        let rolling = r.roll_msg.is_some();
        if let Some(msg) = &r.roll_msg {
            self.board.report(Level::Maintenance, msg.clone());
        }
        mark("membership");
        let status = r.status;
        let has_leader = status.as_ref().map(|s| s.leader != 0).unwrap_or(false);
        let healthy = has_leader && r.client.health(r.ep).unwrap_or(false);
        if healthy {
            // This hook's connections are new ones, so etcd answered with the certificates on
            // disk: the CA moves may go on to the next unit.
            for side in [authority::Side::CLIENT, authority::Side::PEER] {
                let in_use = self
                    .mine
                    .peer(side.issuer_in_use)
                    .cloned()
                    .unwrap_or_default();
                self.set(side.verified, &in_use);
            }
        }
        let voters = r.members.iter().filter(|m| m.is_voter()).count();
        let raft_leader = status.as_ref().ok().map(|s| s.leader).filter(|l| *l != 0);
        let backups = self.scheduled_snapshots(r.members, raft_leader, r.ep);
        if self.leader && healthy {
            self.defrag_if_due(rolling, &r, raft_leader);
        }
        let backups_note = match backups {
            Ok(Some(note)) => format!("; {note}"),
            Ok(None) => String::new(),
            Err(msg) => {
                self.board.report(Level::Blocked, msg);
                String::new()
            }
        };
        use crate::hook::plan::Health;
        let health = crate::hook::plan::health(status.as_ref().ok(), healthy, r.was_started);
        // The membership etcd knows; when it does not answer, the cluster it formed with.
        let known_members = r.members.len().max(
            self.st
                .initial_cluster
                .as_deref()
                .map(|c| c.split(',').filter(|m| !m.is_empty()).count())
                .unwrap_or(0),
        );
        let gone = crate::hook::plan::majority_gone_for_good(self.peers.units.len(), known_members);
        let (level, msg) = crate::hook::plan::member_status(&health, voters, r.was_started, gone);
        match health {
            Health::Healthy => self
                .board
                .report(level, format!("{msg}{}{backups_note}", self.migration_hint)),
            Health::Unhealthy => match r.client.alarms(r.ep) {
                Ok(alarms) if !alarms.is_empty() => self.board.report(
                    Level::Blocked,
                    alarm_message(&alarms, r.members, self.cfg.quota_backend_bytes),
                ),
                _ => self.board.report(level, msg),
            },
            Health::Silent => {
                if let Err(e) = status {
                    juju::log("WARNING", &format!("etcd does not answer: {e}"));
                }
                self.board.report(level, msg)
            }
            Health::Learner | Health::NoLeader => self.board.report(level, msg),
        }
        if self.leader {
            self.application_status(voters, r.membership_wait)?;
        }
        Ok(())
    }

    /// The leader's automatic defragmentation (config `defrag_threshold`), never while a
    /// roll or an upgrade turn runs.
    fn defrag_if_due(&self, rolling: bool, r: &Report, raft_leader: Option<u64>) {
        if let Some(th) = &self.cfg.defrag_threshold {
            let rolling = rolling
                || self.peers.app_get(Key::RestartGrant).is_some()
                || self.peers.app_get(Key::UpgradeTurn).is_some();
            let outcome = crate::ops::defrag::automatic(
                th,
                rolling,
                r.client,
                r.ep,
                r.members,
                raft_leader,
                &mut |l, m| juju::log(l, m),
            );
            // The record only feeds the charm's metrics: failing to keep it is logged, and
            // the defragmentation itself stands.
            if let Err(e) = crate::monitoring::cos::record_defrag(outcome) {
                juju::log(
                    "WARNING",
                    &format!("keeping the defragmentation record: {e:#}"),
                );
            }
        }
    }

    /// The leader's application status (`plan::app_status`) from every unit's view.
    pub(super) fn application_status(
        &mut self,
        voters: usize,
        membership_wait: Option<String>,
    ) -> Result<()> {
        let all: Vec<UnitInfo> = self.peers.infos();
        // The scheduled snapshots, as the unit that takes them last reported.
        let backups = self.peers.app_get(Key::SnapshotTaker).and_then(|t| {
            let published = self.peers.units.get(t)?.peer(Key::SnapshotSummary)?;
            let note = match serde_json::from_str::<crate::jobs::snapshots::Summary>(published) {
                Ok(summary) => crate::jobs::snapshots::note(&summary, crate::unit::now() as i64).1,
                Err(e) => format!("scheduled snapshots: unreadable summary ({e})"),
            };
            Some(format!("{note} ({t})"))
        });
        let (unit_level, unit_msg) = self.board.winner();
        let (level, msg) = crate::hook::plan::app_status(&crate::hook::plan::AppView {
            unit_level,
            unit_msg: &unit_msg,
            voters,
            started: all.iter().filter(|u| u.started).count(),
            units: all.len(),
            mixed_versions: crate::ops::roll::plan::mixed_versions(&self.peers.units),
            backups,
            membership_wait,
        });
        crate::unit::status::set(level, &msg, true)?;
        Ok(())
    }

    /// Scheduled snapshots: the leader names the unit that takes them
    /// (`backups::choose_taker`, kept in `snapshot-taker`); that unit keeps the timer, every
    /// other one has none. Returns what the taker's status adds (the last run's age or a
    /// warning; what it is made of is published as `snapshot-summary` for the leader's
    /// application status); Err is a blocked message (a calendar expression systemd
    /// refuses, a target that cannot be written, no systemd).
    pub(super) fn scheduled_snapshots(
        &mut self,
        members: &[Member],
        raft_leader: Option<u64>,
        ep: &str,
    ) -> std::result::Result<Option<String>, String> {
        use crate::jobs::snapshots as backups;
        if self.leader {
            match &self.cfg.snapshot_schedule {
                None => self.peers.app_set(Key::SnapshotTaker, ""),
                // Without an answer from etcd (no quorum) the taker stays who it was.
                Some(_) if members.is_empty() => {}
                Some(_) => {
                    let units: Vec<(String, String)> = self
                        .peers
                        .infos()
                        .into_iter()
                        .map(|u| (u.unit, u.name))
                        .collect();
                    let taker = backups::choose_taker(
                        self.peers.app_get(Key::SnapshotTaker),
                        &units,
                        members,
                        raft_leader,
                    );
                    if let Some(t) = taker {
                        if self.peers.app_get(Key::SnapshotTaker) != Some(t.as_str()) {
                            juju::log("INFO", &format!("scheduled snapshots: {t} takes them"));
                        }
                        self.peers.app_set(Key::SnapshotTaker, &t);
                    }
                }
            }
        }
        let taker = self.peers.app_get(Key::SnapshotTaker) == Some(self.ctx.unit.as_str());
        let schedule = self.cfg.snapshot_schedule.as_ref().filter(|_| taker);
        if self.leader
            && self
                .ctx
                .hook_is(|h| h.of_relation(crate::relations::s3::ENDPOINT))
        {
            crate::relations::s3::request(&self.ctx.app).map_err(|e| format!("{e:#}"))?;
        }
        let (retention, unit) = (self.cfg.s3_retention, self.ctx.unit.clone());
        let recipients = self.cfg.backup_age_recipients.clone();
        let kept = backups::reconcile_unit(
            schedule,
            &self.cfg.snapshot_target,
            self.cfg.snapshot_retention,
            ep,
            &self.data,
            || crate::jobs::offsite::reconcile(retention, &unit, &recipients),
        )?;
        let Some((summary, note)) = kept else {
            self.set(Key::SnapshotSummary, "");
            return Ok(None);
        };
        let published = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
        self.set(Key::SnapshotSummary, &published);
        Ok(Some(note))
    }
}
