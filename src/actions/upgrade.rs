//! The upgrade's actions: `pre-upgrade-check` (the same checks the leader makes before an
//! upgrade turn, plus disk space and the version step) and `resume-upgrade` (goes on after
//! `pause_after_unit_upgrade` held the roll).

use crate::actions::support::{leader_only, local, param_str, refuse, Results};
use crate::juju::{self, Bag, Context};
use crate::unit::peers::{Key, PeerBag};
use crate::{ops::membership::apply as membership, unit};
use anyhow::{anyhow, Result};
use etcdkit::install::{self, Delivery, Installed};
use etcdkit::version::{check_step, Version};
use serde_json::Value;
use std::collections::BTreeMap;

/// Checks the cluster is ready for an upgrade to `version` (default: the version staged on
/// this unit from the attached etcd resource). Refuses with every failed check named.
pub fn pre_upgrade_check(params: &BTreeMap<String, Value>) -> Result<Results> {
    let (client, ep, _) = local()?;
    let inst = Installed::load().ok_or_else(|| anyhow!("etcd is not installed"))?;
    let requested = param_str(params, "version", "");
    let target_raw = if requested.is_empty() {
        inst.version.clone()
    } else {
        requested.to_string()
    };
    let Some(target) = Version::parse(&target_raw) else {
        return refuse(format!(
            "version {target_raw:?} is not an etcd version (use 3.5.30 or v3.5.30)"
        ));
    };
    let mut failed = vec![];
    let mut lines = vec![];
    let members = match membership::ready_for_upgrade(&client, &ep) {
        Ok(m) => {
            lines.push(format!(
                "every member ({}) is started, a voter and healthy; no alarm",
                m.len()
            ));
            m
        }
        Err(why) => {
            failed.push(why);
            client.member_list(&ep).unwrap_or_default()
        }
    };
    // The step, from the oldest version any member runs.
    let mut oldest: Option<Version> = None;
    let mut largest_db = 0u64;
    for m in &members {
        let Some(url) = m.client_url() else { continue };
        match client.status(&url) {
            Ok(s) => {
                largest_db = largest_db.max(s.db_size);
                match Version::parse(&s.version) {
                    Some(v) => oldest = Some(oldest.map_or(v, |o| o.min(v))),
                    None => failed.push(format!("member {} reports no version", m.name)),
                }
            }
            Err(e) => failed.push(format!("member {} does not report its status: {e}", m.name)),
        }
    }
    if let Some(from) = oldest {
        match check_step(from, target) {
            Ok(()) => lines.push(format!("the step from {from} to {target} is supported")),
            Err(why) => failed.push(why),
        }
    }
    // Into 3.6 and later: no data left in the v2 store (this member's: the v2 store is
    // replicated; a member whose own copy still has data fails etcd 3.6's start in its turn
    // and is rolled back by the health gate).
    let data = unit::data_dir(false)?;
    match etcdkit::v2store::gate(target, &inst, std::path::Path::new(&data)) {
        Ok(Some(line)) => lines.push(line),
        Ok(None) => {}
        Err(why) => failed.push(why),
    }
    disk_room(&data, largest_db, &mut lines, &mut failed)?;
    if !failed.is_empty() {
        return refuse(format!(
            "not ready to upgrade to etcd {target}: {}",
            failed.join("; ")
        ));
    }
    Ok(vec![
        ("ready".into(), "true".into()),
        ("target".into(), target.to_string()),
        ("output".into(), lines.join("\n")),
    ])
}

/// Disk: a snapshot (the upgrade keeps one) and room for the database to grow into.
fn disk_room(
    data: &str,
    largest_db: u64,
    lines: &mut Vec<String>,
    failed: &mut Vec<String>,
) -> Result<()> {
    let free = hostkit::fs::free_bytes(std::path::Path::new(data))?;
    let need = largest_db.saturating_mul(2);
    if free < need {
        failed.push(format!(
            "{data} has {} MiB free; the upgrade's snapshot and the database need {} MiB: free some space first",
            free >> 20,
            need >> 20
        ));
    } else {
        lines.push(format!(
            "{data} has {} MiB free (needs {} MiB)",
            free >> 20,
            need >> 20
        ));
    }
    Ok(())
}

/// Lets a paused upgrade go on (leader only): the next unit's turn is granted by the next
/// hook.
pub fn resume_upgrade(ctx: &Context) -> Result<Results> {
    leader_only(ctx, "resume-upgrade")?;
    let Some(rel) = juju::relation_ids(unit::PEER)?.into_iter().next() else {
        return refuse("there is no peer relation yet: nothing to resume");
    };
    let app = juju::relation_get(&rel, &ctx.app, true)?;
    let Some(after) = app.peer(Key::UpgradePaused).filter(|v| !v.is_empty()) else {
        return refuse("no upgrade is paused");
    };
    let after = after.clone();
    juju::relation_set(
        &rel,
        &Bag::from([(Key::UpgradePaused.into(), String::new())]),
        true,
    )?;
    Ok(vec![(
        "output".into(),
        format!("the upgrade goes on after {after}; the next unit's turn comes with the next hook"),
    )])
}

/// Publishes a Debian package version for every unit to stage and roll to (leader only, for
/// units installed from the Debian package): the version asked for, or the newest the apt
/// sources offer, after the pre-upgrade check passes for its etcd version. The roll is the
/// same as for an attached etcd resource: a snapshot first, one unit at a time, the raft
/// leader last, each turn health-gated and rolled back on its unit if it fails.
pub fn upgrade_package(ctx: &Context, params: &BTreeMap<String, Value>) -> Result<Results> {
    leader_only(ctx, "upgrade-package")?;
    let inst = Installed::load().ok_or_else(|| anyhow!("etcd is not installed"))?;
    if inst.delivery != Delivery::Deb {
        return refuse(format!(
            "this unit runs etcd from the {} delivery; upgrade-package moves units installed \
             from the Debian package (attach a newer etcd resource instead)",
            inst.delivery.name()
        ));
    }
    let Some(rel) = juju::relation_ids(unit::PEER)?.into_iter().next() else {
        return refuse("there is no peer relation yet; wait until the unit is active");
    };
    let requested = param_str(params, "version", "");
    let target = match install::package_in_sources((!requested.is_empty()).then_some(requested)) {
        Ok(t) => t,
        Err(install::InstallError::Bad(msg)) => return refuse(format!("version: {msg}")),
        Err(e) => return Err(e.into()),
    };
    let running = inst.package_version()?;
    if target == running && inst.staged.is_none() {
        return refuse(format!(
            "etcd-server {target} is installed already; publish a newer package in the apt \
             mirror first"
        ));
    }
    let Some(etcd) = Version::parse(&target) else {
        return refuse(format!("etcd-server {target} names no etcd version"));
    };
    let check = BTreeMap::from([("version".to_string(), Value::from(etcd.to_string()))]);
    let checked = pre_upgrade_check(&check)?;
    juju::relation_set(
        &rel,
        &Bag::from([(Key::PackageTarget.into(), target.clone())]),
        true,
    )?;
    let mut out = vec![
        ("target".into(), target.clone()),
        (
            "output".into(),
            format!(
                "etcd-server {target} (etcd {etcd}) is published to every unit: each stages it \
                 now, then they switch one at a time, the raft leader last"
            ),
        ),
    ];
    out.extend(
        checked
            .into_iter()
            .filter(|(k, _)| k == "output")
            .map(|(_, v)| ("checks".into(), v)),
    );
    Ok(out)
}
