//! The hook handler: every hook but stop/remove runs the same `reconcile` (its phases are
//! in `reconcile/`, one file per phase), then the Nagios checks, then sets the status once (`status`). A unit
//! that goes leaves the cluster first (`leave`).
//!
//! Peer relation `cluster` keys. Unit databag: `db-ingress-address` (classic), `member-name`,
//! `peer-url`, `client-url`, `csr-server`, `csr-peer`, `phase` (installed|ready|started).
//! App databag (leader): `ca` (the built-in CA), `cert-server.<member>`,
//! `csr-sha-server.<member>`, `peer-ca` (the peer port's CA), `peer-cert.<member>`,
//! `peer-csr-sha.<member>`, each side's CA move (`trust`, `issuer-ca`, `ca-move`;
//! `peer-trust`, `peer-issuer-ca`, `peer-ca-move`: authority.rs), `token`, `bootstrap`, `initial-cluster`, `join`, `members` (client URLs), `cluster`
//! (name=peerURL of started members), `epoch`.

pub mod delivery;
pub mod plan;
pub mod reconcile;
pub mod takeover;

use crate::config::Config;
use crate::hook::reconcile::{reconcile, Pass};
use crate::juju::{self, Context, Hook, RelationEvent};
use crate::ops::membership::leave::Left;
use crate::pki::{tls_client, tls_client_waiting};
use crate::unit::status::Level;
use crate::unit::status::{log_slow_hook, mark, StatusBoard};
use crate::unit::{endpoint, member_name, LocalState, PEER};
use anyhow::Result;
use std::time::Duration;

/// Leaves the cluster when this unit is removed (`leave`): hand raft leadership over, remove
/// this member, then stop and disable etcd and remove what the unit ran for the cluster
/// (its snapshot timer, its Nagios checks). Safe to run again.
pub fn leave(st: &mut LocalState, unit: &str) -> Result<()> {
    if st.left {
        return Ok(());
    }
    let svc = crate::ops::standdown::service();
    if svc.running()? {
        // The member is found where it runs now (the port and peer URL it started with), not
        // from the charm's config: a config value the operator got wrong (blocked, never
        // applied) or a network-get that fails must not skip the removal and stop a member
        // that stays in the cluster.
        let cfg = Config::parse(&juju::config()?).ok();
        let address = || {
            juju::network_ingress(PEER)
                .ok()
                .and_then(|a| a.first().cloned())
        };
        let port = st.client_port.or(cfg.as_ref().map(|c| c.port));
        let peer_url = st
            .running_peer_url
            .clone()
            .or_else(|| Some(endpoint(&address()?, cfg.as_ref()?.management_port)));
        let (Some(port), Some(peer_url)) = (port, peer_url) else {
            anyhow::bail!(
                "cannot tell this member's client port or peer URL (the config does not parse \
                 and the unit's state does not say): it is not stopped before it leaves the \
                 cluster; fix the config, and Juju retries this hook"
            );
        };
        // Every member serves clients on loopback too (or on every interface).
        let ep = endpoint("127.0.0.1", port);
        let client = tls_client()?;
        // Membership changes may wait for an election: a longer timeout.
        let slow = tls_client_waiting(Duration::from_secs(10))?;
        let live = crate::ops::membership::leave::Live {
            client: &client,
            slow: &slow,
            ep: &ep,
        };
        match crate::ops::membership::leave::leave(&live, &member_name(unit), &peer_url) {
            Left::Removed => juju::log("INFO", "removed this member from the cluster"),
            Left::NotAMember => {}
            // Stopping a member etcd will not let go of would take the cluster below quorum
            // (the remaining members that answer are no quorum of them, or etcd's strict
            // reconfig refuses): the member
            // keeps running and the hook fails. Juju retries a failed hook with a growing
            // delay (5 s up to 5 min, internal/worker/uniter), so the removal finishes by
            // itself once the missing members answer again.
            Left::Refused(e) => {
                anyhow::bail!(
                    "this member cannot leave the cluster yet ({}); it keeps running so the cluster \
                     keeps its quorum, and Juju retries this hook until the removal succeeds: \
                     bring back the members that do not answer",
                    juju::bounded(&e, 512)
                )
            }
        }
    }
    crate::ops::standdown::stand_down(&svc, "")?;
    st.left = true;
    st.save()
}

/// Whether this hook may touch the charm's files on this machine: not when they hold the
/// classic charm's etcd, another etcd unit's, or a record that cannot be trusted (each
/// said in the unit's status).
fn machine_is_ours(ctx: &Context) -> Result<bool> {
    // The classic charm's etcd, not taken over: nothing here is touched until its turn,
    // not even this charm's own directory (the claim below writes one).
    if !takeover::step(ctx)? {
        return Ok(false);
    }
    // Before anything reads or changes the charm's files: are they this unit's?
    if let crate::ops::claim::Claim::Taken(other) = crate::ops::claim::claim(&ctx.unit)? {
        // Not even stop or remove touches them: they are the other unit's etcd. A status
        // that cannot be said changes nothing; failing the hook for it would only hold up
        // this unit's removal.
        let _ = crate::unit::status::set_untracked(
            Level::Blocked,
            &format!(
                "etcd unit {other} is deployed on this machine too: one etcd unit per machine \
                 (remove this unit and add one with --to another machine)"
            ),
        );
        return Ok(false);
    }
    if let Err(e) = crate::ops::check_local_files() {
        // Nothing is decided from a file that cannot be trusted: the operator sees which.
        crate::unit::status::set_untracked(Level::Blocked, &format!("{e:#}"))?;
        return Ok(false);
    }
    Ok(true)
}

pub fn hook(ctx: &Context) -> Result<()> {
    if !machine_is_ours(ctx)? {
        return Ok(());
    }
    crate::ops::finish_interrupted()?;
    let mut st = LocalState::load()?;
    let hook = ctx.hook.clone().unwrap_or(Hook::Other(String::new()));
    // Juju runs a dying unit's storage-detaching before anything else of its removal
    // (internal/worker/uniter/storage/resolver.go): the member leaves then, instead of
    // moving its data off the volume to a disk it is about to leave.
    let leaving = (hook.is_relation(PEER, RelationEvent::Departed)
        && ctx.departing_unit.as_deref() == Some(ctx.unit.as_str()))
        || hook == Hook::Stop
        || (crate::unit::data_detaching(ctx) && !st.left && juju::unit_dying(&ctx.unit)?);
    if leaving {
        leave(&mut st, &ctx.unit)?;
    }
    let detaching = crate::unit::data_detaching(ctx);
    if hook == Hook::Remove || st.left {
        if detaching {
            // The member left and etcd is stopped: the volume goes with its data.
            release_volume()?;
        }
        // The unit is going: a status that cannot be said changes nothing, and failing the
        // stop or remove hook would only hold its removal up.
        let _ =
            crate::unit::status::set_untracked(Level::Maintenance, "Unit removed from the cluster");
        return Ok(());
    }
    // root's etcd password (etcd-client) on disk before this hook's first etcd request: the
    // leader turns authentication on only once every unit has it.
    let password_error =
        crate::relations::etcd_client::sync_password(&ctx.unit, hook == Hook::UpdateStatus)
            .err()
            .map(|e| format!("{e:#}"));
    // A lone leader whose own restart moved a CA move on plans the next step in the same
    // hook: no other unit's hook would wake it.
    // Each pass sees the previous one's writes, as hook tools show a unit its own.
    let mut board = StatusBoard::default();
    let mut r = Ok(Pass::Done);
    for _ in 0..4 {
        board = StatusBoard::default();
        r = reconcile(ctx, &mut st, &mut board);
        st.save()?;
        if !matches!(r, Ok(Pass::Again)) {
            break;
        }
        juju::log(
            "INFO",
            "this unit's restart moved the CA move on: planning again",
        );
    }
    if detaching && r.is_ok() {
        // The data moved off the volume and etcd runs from its new place.
        release_volume()?;
    }
    if crate::monitoring::nrpe::concerns(ctx.hook.as_ref()) {
        nrpe_checks(ctx, &mut st);
        st.save()?;
    }
    if let Some(e) = &st.nrpe_error {
        board.report(Level::Blocked, format!("nrpe-external-master: {e}"));
    }
    etcd_clients(ctx, &mut st, &mut board, password_error, r.is_ok());
    st.save()?;
    if crate::monitoring::cos::concerns(ctx.hook.as_ref()) {
        cos_agent(ctx, &mut st);
        st.save()?;
    }
    if let Some(e) = &st.cos_error {
        board.report(Level::Blocked, format!("cos-agent: {e}"));
    }
    mark("end");
    log_slow_hook(ctx.hook_name());
    let (status, msg) = board.winner();
    crate::unit::status::set(status, &msg, false)?;
    r.map(|_| ())
}

/// Unmounts the `data` volume once etcd no longer runs from it (its config names another
/// data directory, or etcd is stopped).
fn release_volume() -> Result<()> {
    let configured = crate::ops::relocate::configured_data_dir(std::path::Path::new(
        etcdkit::service::CONFIG_FILE,
    ))?;
    let on_volume =
        configured.is_some_and(|d| std::path::Path::new(&d).starts_with(etcdkit::VOLUME_MOUNT));
    let runs = on_volume && crate::ops::standdown::service().running()?;
    crate::unit::volume::release(runs)
}

/// The leader serves the `etcd-client` relations (`relations::etcd_client`) once this unit's
/// etcd runs; what it waits for or refuses goes into the status.
fn etcd_clients(
    ctx: &Context,
    st: &mut LocalState,
    board: &mut StatusBoard,
    password_error: Option<String>,
    ran: bool,
) {
    if let Some(e) = password_error {
        juju::log("ERROR", &format!("etcd-client: {e}"));
        board.report(Level::Blocked, format!("etcd-client: {e}"));
    }
    if ctx.hook == Some(Hook::UpdateStatus) && st.etcd_client_settled {
        return;
    }
    let result = (|| -> Result<Vec<(Level, String)>> {
        if !ran || !juju::is_leader()? || !crate::ops::standdown::service().running()? {
            return Ok(vec![]);
        }
        let Ok(cfg) = Config::parse(&juju::config()?) else {
            return Ok(vec![]);
        };
        let endpoint = crate::relations::etcd_client::ENDPOINT;
        let broken = ctx
            .hook
            .as_ref()
            .is_some_and(|h| h.is_relation(endpoint, juju::RelationEvent::Broken))
            .then(|| std::env::var("JUJU_RELATION_ID").ok())
            .flatten();
        crate::relations::etcd_client::reconcile(&ctx.unit, &cfg, broken.as_deref())
    })();
    st.etcd_client_settled = matches!(&result, Ok(notes) if notes.is_empty()) && ran;
    match result {
        Ok(notes) => {
            for (level, msg) in notes {
                board.report(level, msg);
            }
        }
        Err(e) => {
            juju::log("ERROR", &format!("etcd-client: {e:#}"));
            board.report(Level::Blocked, format!("etcd-client: {e:#}"));
        }
    }
}

/// This unit's side of `cos-agent` follows the relation (`monitoring::cos`); what went wrong
/// is kept for the status until a later try succeeds. A bad configuration is the
/// reconcile's to report.
fn cos_agent(ctx: &Context, st: &mut LocalState) {
    let result = (|| -> Result<()> {
        let Ok(cfg) = Config::parse(&juju::config()?) else {
            return Ok(());
        };
        crate::monitoring::cos::reconcile(&ctx.unit, ctx.hook.as_ref(), &cfg)
    })();
    st.cos_error = match result {
        Ok(()) => None,
        Err(e) => {
            juju::log("ERROR", &format!("cos-agent: {e:#}"));
            Some(format!("{e:#}"))
        }
    };
}

/// The Nagios checks follow the relation (`nrpe`); what went wrong is kept for the status
/// until a later try succeeds. A bad configuration is the reconcile's to report.
fn nrpe_checks(ctx: &Context, st: &mut LocalState) {
    let result = (|| -> Result<()> {
        let Ok(cfg) = Config::parse(&juju::config()?) else {
            return Ok(());
        };
        let endpoint = endpoint(&crate::unit::peer_address()?, cfg.port);
        crate::monitoring::nrpe::reconcile(
            &ctx.unit,
            ctx.hook.as_ref(),
            &cfg.nagios_context,
            &cfg.nagios_servicegroups,
            &endpoint,
        )
    })();
    st.nrpe_error = match result {
        Ok(()) => None,
        Err(e) => {
            juju::log("ERROR", &format!("nrpe: {e:#}"));
            Some(format!("{e:#}"))
        }
    };
}
