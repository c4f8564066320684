//! The recover action: a working cluster again after a majority of members is gone for good.
//!
//! Steps, each checking before it acts:
//! 1. `observe`: this unit is the leader; no member that answers has a raft leader (no
//!    quorum; a member restarted since the loss answers nothing at all); the surviving units'
//!    members are asked for their raft index. If another unit may hold newer data the action
//!    refuses and names it (unless `accept-older-data`), and it refuses without
//!    `confirm-majority-lost`.
//! 2. `copy`: this member's data is copied aside (`.pre-recover-<time>`), recorded first in
//!    the unit's transaction (`ops::txn`), so a crash anywhere until step 4 puts the
//!    original back.
//! 3. `force`: etcd restarts once with `force-new-cluster`: the same data, the same member,
//!    a membership of one.
//! 4. `check`: healthy alone; etcd restarts with its normal config; then the copy goes.
//! 5. `publish`: a new epoch: every other unit sets its old member data aside and joins again
//!    through the normal one-at-a-time learner path.

use crate::actions::support::{leader_only, local, param_bool, refuse, Results};
use crate::juju::{self, Context};
use crate::ops::restore::{next_epoch, publish_epoch, rerender, write_unproven};
use crate::ops::txn::{Op, Step, Txn};
use crate::unit::peers::{Key, PeerBag};
use crate::unit::{self, member_name, retry, LocalState};
use anyhow::{anyhow, bail, Context as _, Result};
use etcdkit::client::Client;
use etcdkit::install::Installed;
use etcdkit::service::Service;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const HAS_QUORUM: &str = "the cluster has a raft leader, so a majority of members is alive: \
     recover is only for a majority lost for good. Remove dead units with remove-unit instead";

/// The other units' client URLs, as they published them on the peer relation.
fn peer_client_urls() -> Result<Vec<(String, String)>> {
    let mut out = vec![];
    for rel in juju::relation_ids(unit::PEER)? {
        for unit in juju::relation_list(&rel)? {
            let bag = juju::relation_get(&rel, &unit, false)?;
            if let Some(url) = bag.peer(Key::ClientUrl).filter(|u| !u.is_empty()) {
                out.push((unit, url.clone()));
            }
        }
    }
    Ok(out)
}

pub fn recover(
    ctx: &Context,
    params: &std::collections::BTreeMap<String, Value>,
) -> Result<Results> {
    leader_only(ctx, "recover")?;
    let (client, ep, cfg) = local()?;
    let inst = Installed::load().ok_or_else(|| anyhow!("etcd is not installed"))?;
    observe(ctx, &client, &ep, params)?;
    let data = unit::data_dir(false)?;
    let member = Path::new(&data).join("member");
    if !member.join("wal").is_dir() {
        return refuse(format!(
            "{} holds no member data to recover from",
            member.display()
        ));
    }
    let svc = Service {
        etcd_binary: inst.etcd(),
    };
    let (txn, aside) = copy(&svc, &member, Path::new(&data))?;
    let (txn, local_ep) = force(&svc, txn)?;
    // 3–4. healthy alone; otherwise the original data goes back, as after a crash here.
    let alone = |ep: &str| -> Result<()> {
        if !client.health(ep)? {
            bail!("not healthy yet");
        }
        let members = client.member_list(ep)?;
        if members.len() != 1 {
            bail!("{} members", members.len());
        }
        Ok(())
    };
    if let Err(e) = retry(Duration::from_secs(60), Duration::from_millis(100), || {
        alone(&local_ep)
    }) {
        txn.undo()?;
        return refuse(format!(
            "etcd did not come up alone with force-new-cluster ({e}); the original data is back in place"
        ));
    }

    // 4. the normal config again; then the copy can go.
    let address = unit::peer_address()?;
    let name = member_name(&ctx.unit);
    let peer_url = unit::endpoint(&address, cfg.management_port);
    let epoch = next_epoch(ctx)?;
    // Proven alone with this member's data: from here nothing is undone, so it may take
    // clients' writes.
    txn.commit()?;
    let mut st = LocalState::load()?;
    st.initial_cluster = Some(format!("{name}={peer_url}"));
    st.initial_state = Some("existing".into());
    st.epoch = Some(epoch.to_string());
    st.save()?;
    rerender(&st, &cfg, &name, &address, &data)?;
    svc.restart()?;
    retry(Duration::from_secs(60), Duration::from_millis(100), || alone(&ep))
        .map_err(|e| anyhow!("the recovered member is not healthy after its restart with the full config: {e}; the next hook starts it again"))?;
    std::fs::remove_dir_all(&aside).context("removing the copy of the original data")?;

    // 5. the other units rejoin the new cluster.
    let token = st.token.clone().unwrap_or_else(|| "etcd-cluster".into());
    publish_epoch(ctx, epoch, &token, &name, &peer_url)?;
    let revision = client.revision(&ep)?;
    juju::action_log(&format!(
        "{} is a cluster of one at revision {revision}; the other units rejoin one at a time",
        ctx.unit
    ));
    Ok(vec![
        ("recover.from".into(), ctx.unit.clone()),
        ("recover.revision".into(), revision.to_string()),
        ("recover.epoch".into(), epoch.to_string()),
        (
            "output".into(),
            "recovered; add units or wait for the surviving ones to rejoin".into(),
        ),
    ])
}

/// 1. Refuses unless the quorum is lost, no surviving unit may hold newer data (or the
/// operator accepts it), and the operator confirmed.
fn observe(
    ctx: &Context,
    client: &Client,
    ep: &str,
    params: &std::collections::BTreeMap<String, Value>,
) -> Result<()> {
    // A member without quorum that (re)started since the loss does not serve clients at
    // all (it waits for its peers before it is ready), so an unanswered status is not a
    // refusal: the local data is what counts then.
    let own = retry(Duration::from_secs(10), Duration::from_millis(200), || {
        client.status(ep)
    })
    .ok();
    if own.as_ref().is_some_and(|s| s.leader != 0) {
        return refuse(HAS_QUORUM);
    }
    let own_index = own.as_ref().map(|s| s.raft_index);
    let silent = survivors(client, own_index, params)?;
    // A survivor whose etcd does not answer (restarted without quorum, partitioned) may
    // hold newer data than any that answers: the operator names each such unit to accept
    // losing it (M4).
    let accepted: Vec<String> =
        crate::actions::support::param_str(params, "accept-unreachable", "")
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
    let unnamed: Vec<&str> = silent
        .iter()
        .filter(|u| !accepted.contains(u))
        .map(String::as_str)
        .collect();
    if !unnamed.is_empty() {
        let list = unnamed.join(",");
        return refuse(format!(
            "{list} still deployed but its etcd does not answer: it may hold newer data than \
             this unit. Bring it back (recover is then not needed), remove its unit if it is \
             gone for good, or run again with accept-unreachable={list} to rebuild without it"
        ));
    }
    if !param_bool(params, "confirm-majority-lost", false) {
        return refuse(format!(
            "recover rebuilds the cluster from {}'s data alone (etcd's force-new-cluster): \
             writes that only the lost members held are gone. If the members that do not \
             answer are gone for good, run again with confirm-majority-lost=true",
            ctx.unit
        ));
    }
    Ok(())
}

/// The other units' members, asked for their raft index: refused when one has a raft
/// leader, or may hold newer data than this one (`own_index`) unless accept-older-data.
/// Returns the units whose etcd does not answer.
fn survivors(
    client: &Client,
    own_index: Option<u64>,
    params: &std::collections::BTreeMap<String, Value>,
) -> Result<Vec<String>> {
    let mut newest: Option<(String, u64)> = None;
    let mut alive = vec![];
    let mut silent = vec![];
    for (unit, url) in peer_client_urls()? {
        match client.status(&url) {
            Ok(s) if s.leader != 0 => return refuse(HAS_QUORUM),
            Ok(s) => {
                alive.push(format!("{unit} (raft index {})", s.raft_index));
                if newest.as_ref().is_none_or(|(_, i)| s.raft_index > *i) {
                    newest = Some((unit, s.raft_index));
                }
            }
            Err(_) => silent.push(unit),
        }
    }
    let none_or = |v: &[String]| {
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    juju::action_log(&format!(
        "this member: {}; other members answering: {}; not answering: {}",
        own_index.map_or(
            "does not serve clients (no quorum since it started)".into(),
            |i| format!("raft index {i}")
        ),
        none_or(&alive),
        none_or(&silent)
    ));
    if let Some((unit, index)) = newest {
        if own_index.is_none_or(|i| index > i) && !param_bool(params, "accept-older-data", false) {
            return refuse(format!(
                "{unit} may hold newer data (raft index {index}, this unit {}): rebuilding \
                 from this unit could drop writes. Run again with accept-older-data=true to \
                 accept that",
                own_index.map_or("unknown".into(), |i| i.to_string())
            ));
        }
    }
    Ok(silent)
}

/// 2. etcd stopped and this member's data copied aside, the copy recorded first: a crash
/// from here until the check passes puts the original back. The copy is complete, or it
/// is not `member`: only a whole copy is ever put back.
fn copy(svc: &Service, member: &Path, data: &Path) -> Result<(Txn, std::path::PathBuf)> {
    let aside = data.join(format!(".pre-recover-{}", unit::now()));
    let copy = aside.join("member");
    let mut txn = Txn::begin(Op::Recover)?;
    crate::actions::support::member_going_away(
        "Rebuilding the cluster from this member's data (recover action)",
    )?;
    juju::action_log("stopping etcd and copying its data aside");
    svc.stop()?;
    txn.make_dir(&aside)?;
    unit::ensure_room(
        &aside,
        crate::ops::relocate::tree_size(member)?,
        None,
        "the copy of this member's data",
    )?;
    txn.record(Step::Copied {
        original: member.to_path_buf(),
        copy: copy.clone(),
        displaced: ".failed-restore".into(),
    })?;
    let partial = crate::ops::txn::partial(&copy);
    crate::ops::relocate::copy_dir(member, &partial)?;
    std::fs::rename(&partial, &copy)?;
    unit::crash_point("recover-copied");
    Ok((txn, aside))
}

/// 3. etcd restarted once with force-new-cluster: the same data, the same member, a
/// membership of one. Clients on loopback only until it is proven: a crash in this window
/// puts the original data back, which would discard any write it had acknowledged.
fn force(svc: &Service, mut txn: Txn) -> Result<(Txn, String)> {
    let config = std::fs::read_to_string(etcdkit::service::CONFIG_FILE)
        .context("reading the etcd config")?;
    let local_ep = write_unproven(
        &mut txn,
        &format!("{}\nforce-new-cluster: true\n", config.trim_end()),
    )?;
    juju::action_log(
        "starting etcd with force-new-cluster (clients on loopback until it is proven)",
    );
    svc.start()?;
    unit::crash_point("recover-forced");
    Ok((txn, local_ep))
}
