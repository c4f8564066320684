//! The install action: re-install etcd in place from the attached `etcd` resource (an
//! upstream release tarball, or a snap on a unit that runs the snap), one unit at a time.
//!
//! Steps: `preflight` (a delivery this resource can replace, something to go back to, no
//! other member down, the member-down lock) → `switch` (etcd stopped for a snap, the new
//! binaries in; what ran before recorded first in the unit's transaction, `ops::txn`) →
//! `verify` (restarted, healthy). A failure undoes the switch, and so does the next hook
//! after a kill: the previous binaries run again.

use crate::actions::support::{local, refuse, Refused, Results};
use crate::config::Config;
use crate::juju::{self, Context};
use crate::ops::txn::{Op, Step, Txn};
use crate::unit;
use anyhow::Result;
use etcdkit::client::Client;
use etcdkit::install::{self, Delivery, Installed};
use etcdkit::service::Service;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) fn reinstall(ctx: &Context) -> Result<Results> {
    let Some(resource) = juju::resource_get("etcd")? else {
        return refuse(
            "no etcd resource is attached; attach an upstream etcd release tarball first",
        );
    };
    let resource = PathBuf::from(resource);
    let (client, ep, cfg) = local()?;
    let (before, old_link) = preflight(&resource)?;
    // It takes this member down for a restart: never while another member is down (two
    // at once, say this action run on two units together, could cost the quorum: M6).
    let me = unit::member_name(&ctx.unit);
    if let Some(down) = crate::ops::health::other_member_down(&client, &ep, &me) {
        return refuse(format!(
            "member {down} does not answer healthy: re-installing this member now would take \
             a second member down; run the install action again once {down} is back (one \
             unit at a time)"
        ));
    }
    // And never in the same instant as another unit's operation that passed that check
    // too: the member-down lock, held until this action ends.
    let _lock = match crate::ops::member_lock::take(&client, &ep, &ctx.unit, "install-action")? {
        Ok(held) => held,
        Err(holder) => {
            return refuse(format!(
                "{holder} has its member down now (the member-down lock): run the install \
                 action again once it is done (one unit at a time)"
            ))
        }
    };
    crate::actions::support::member_going_away(
        "Re-installing etcd from the etcd resource (install action)",
    )?;
    let mut txn = Txn::begin(Op::Install)?;
    let inst = match switch(&mut txn, &resource, &cfg, &before, old_link) {
        Ok(i) => i,
        Err(e) => {
            txn.undo()?;
            return Err(e);
        }
    };
    if let Err(e) = verify(&client, &ep, &inst) {
        juju::action_log("etcd did not come back healthy; rolling back");
        txn.undo()?;
        return refuse(format!(
            "etcd {} did not become healthy ({e}); rolled back to the previous binaries",
            inst.version
        ));
    }
    txn.commit()?;
    // The version in `juju status` only: the action's result names it, and the next hook
    // sets it again.
    let _ = juju::application_version_set(&inst.version);
    Ok(vec![
        ("version".into(), inst.version),
        (
            "output".into(),
            "etcd re-installed from the etcd resource".into(),
        ),
    ])
}

/// What this resource replaces, and the binaries `current` points at now (an archive
/// delivery's way back; a snap's is the revision snapd keeps). Nothing to go back to,
/// nothing is touched.
fn preflight(resource: &Path) -> Result<(Installed, Option<PathBuf>)> {
    let before = Installed::load();
    let was_snap = before
        .as_ref()
        .is_some_and(|b| b.delivery == Delivery::Snap);
    let snap_resource = install::is_snap_file(resource);
    if snap_resource != was_snap {
        return refuse(if snap_resource {
            "the etcd resource is a snap but this unit does not run the snap delivery; run snap-upgrade to move it to the snap"
        } else {
            "this unit runs the etcd snap: attach an etcd snap (etcd.snap) as the etcd resource"
        });
    }
    if before.as_ref().is_some_and(|b| b.delivery == Delivery::Deb) {
        return refuse(
            "this unit runs etcd from the Debian package: run snap-upgrade to move it to the \
             attached etcd resource (keeping its data), or upgrade-package on the leader for a \
             newer package",
        );
    }
    let old_link = std::fs::read_link(Path::new(install::OPT_DIR).join("current")).ok();
    match (was_snap, old_link, before) {
        (true, _, Some(before)) => Ok((before, None)),
        (false, Some(link), Some(before)) => Ok((before, Some(link))),
        _ => refuse(format!(
            "this unit has no etcd binaries in {}/current to return to if the new ones fail; \
             it is not safe to re-install it in place",
            install::OPT_DIR
        )),
    }
}

/// The new binaries in, what ran before recorded first. snapd refreshes a snap only while
/// none of its apps runs: a snap unit's member is down for the switch.
fn switch(
    txn: &mut Txn,
    resource: &Path,
    cfg: &Config,
    before: &Installed,
    old_link: Option<PathBuf>,
) -> Result<Installed> {
    let installed = if before.delivery == Delivery::Snap {
        txn.record(Step::SnapRevision {
            revision: install::snap_revision(),
            before: before.clone(),
        })?;
        juju::action_log("stopping etcd to switch the snap's revision");
        Service {
            etcd_binary: before.etcd(),
        }
        .stop()?;
        install::install_snap_file(resource)
    } else {
        txn.record(Step::Binaries {
            before: before.clone(),
            link: old_link,
        })?;
        // Not deferred: binaries of this resource staged for the unit's rolling turn are
        // put in place too.
        install::install_archive(
            resource,
            cfg.archive_sha256.as_deref(),
            "etcd resource",
            false,
        )
    };
    unit::crash_point("install-action-switched");
    match installed {
        Ok(i) => Ok(i),
        Err(install::InstallError::Bad(m)) => Err(Refused(m).into()),
        Err(e) => Err(e.into()),
    }
}

/// Restarted on the new binaries, and healthy within a minute.
fn verify(client: &Client, ep: &str, inst: &Installed) -> std::result::Result<(), String> {
    juju::action_log(&format!("restarting etcd {}", inst.version));
    Service {
        etcd_binary: inst.etcd(),
    }
    .restart()
    .map_err(|e| format!("restarting etcd: {e}"))?;
    unit::retry(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || match client.health(ep) {
            Ok(true) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
}
