//! Phase 1, `observe`: config, the installed etcd, the peer relation, this unit's address and what it publishes about itself.

use super::state::*;
use crate::config::Config;
use crate::hook::delivery::{apply_snapd_refresh, ensure_installed};
use crate::juju::Hook;
use crate::juju::{self, Bag, Context};
use crate::pki::certs::ensure_csrs;
use crate::unit::peers::Key;
use crate::unit::peers::Peers;
use crate::unit::status::Level;
use crate::unit::status::{mark, StatusBoard};
use crate::unit::{data_dir, endpoint, member_name, LocalState, SeenDataDir, SeenResource, PEER};
use anyhow::{Context as _, Result};
use etcdkit::install::{self, Delivery, InstallError, Installed};
use etcdkit::service::Service;

impl<'a> Reconcile<'a> {
    /// Phase 1. `None` when the unit can go no further in this hook (the status says why).
    pub(super) fn observe(
        ctx: &'a Context,
        st: &'a mut LocalState,
        board: &'a mut StatusBoard,
    ) -> Result<Option<Reconcile<'a>>> {
        let cfg = match Config::parse(&juju::config()?) {
            Ok(c) => c,
            Err(msg) => {
                board.report(Level::Blocked, msg);
                return Ok(None);
            }
        };
        let leader = juju::is_leader()?;
        if !leader || ctx.is(Hook::LeaderElected) {
            crate::unit::status::forget_app()?;
        }
        let update_status = ctx.is(Hook::UpdateStatus);
        let Some((inst, migration_hint)) = installed(ctx, st, board, &cfg, update_status)? else {
            return Ok(None);
        };
        let Some(rel) = juju::relation_ids(PEER)?.into_iter().next() else {
            board.report(Level::Waiting, "Waiting for the peer relation");
            return Ok(None);
        };
        // Only the address peers see in relation data: the leader checks a CSR's names
        // against it, and a machine's other addresses (an IPv6 ULA, a second NIC) are
        // known to nobody else.
        let Some(address) = juju::network_ingress(PEER)?.first().cloned() else {
            board.report(Level::Waiting, "Waiting for an ingress address");
            return Ok(None);
        };
        let name = member_name(&ctx.unit);
        let peer_url = endpoint(&address, cfg.management_port);
        let client_url = endpoint(&address, cfg.port);
        let names = vec![address.clone(), "127.0.0.1".to_string()];
        let csrs = ensure_csrs(st, &ctx.unit, &names)?;

        let peers = read_peers(&rel, ctx)?;
        mark("peers-read");
        let Some(inst) = staged(inst, &peers, board)? else {
            return Ok(None);
        };
        let mine = juju::relation_get(&rel, &ctx.unit, false)?;
        let detaching = crate::unit::data_detaching(ctx);
        let data = data_dir_of(st, update_status, detaching, inst.delivery)?;
        let svc = Service {
            etcd_binary: inst.etcd(),
        };
        let mut r = Reconcile {
            ctx,
            st,
            board,
            cfg,
            leader,
            inst,
            migration_hint,
            address,
            names,
            name,
            peer_url,
            client_url,
            csrs,
            peers,
            mine,
            my_writes: Bag::new(),
            svc,
            data,
            provided: None,
            certified: false,
            trust_on_disk: None,
            peer_trust_on_disk: None,
        };
        r.publish_self();
        Ok(Some(r))
    }
}

/// etcd installed (or already there) from the delivery the config and the `etcd` resource
/// choose, its version told to Juju; `None` when the unit is blocked (the board says why).
/// Also the status hint for a Debian-package unit with a resource attached.
fn installed(
    ctx: &Context,
    st: &mut LocalState,
    board: &mut StatusBoard,
    cfg: &Config,
    update_status: bool,
) -> Result<Option<(Installed, &'static str)>> {
    let resource = remembered(
        &mut st.etcd_resource,
        update_status,
        |_| true,
        || {
            let path = juju::resource_get("etcd")
                .context("cannot tell whether an etcd resource is attached")?;
            Ok(SeenResource { path })
        },
    )?
    .path;
    let inst = match ensure_installed(cfg, resource.as_deref()) {
        Ok(i) => i,
        Err(InstallError::Bad(msg)) => {
            board.report(Level::Blocked, msg);
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    // Attaching a resource never migrates a Debian-package unit by itself: say how to.
    let migration_hint = if inst.delivery == Delivery::Deb && resource.is_some() {
        "; snap-upgrade available: run the snap-upgrade action to move to the attached etcd resource"
    } else {
        ""
    };
    mark("installed");
    if let Err(msg) = apply_snapd_refresh(st, cfg, &ctx.unit) {
        board.report(Level::Blocked, msg);
        return Ok(None);
    }
    if st.told_version.as_deref() != Some(inst.version.as_str()) {
        // Best effort: the version column is cosmetic; the next hook tries again.
        if juju::application_version_set(&inst.version).is_ok() {
            st.told_version = Some(inst.version.clone());
        }
    }
    if let Some(v) = &inst.rolled_back {
        board.report(
            Level::Blocked,
            format!(
                "etcd {v} did not become healthy on this unit and was rolled back to {}; {}",
                inst.version,
                inst.retry_hint()
            ),
        );
    }
    Ok(Some((inst, migration_hint)))
}

/// The peer relation as this hook sees it: the application's bag and every other unit's.
/// The peer relation's application data and every other unit's databag.
pub(crate) fn read_peers(rel: &str, ctx: &Context) -> Result<Peers> {
    let mut peers = Peers {
        rel: rel.to_string(),
        app: juju::relation_get(rel, &ctx.app, true)?,
        app_writes: Bag::new(),
        units: Default::default(),
        new_client: None,
    };
    for u in juju::relation_list(rel)? {
        let b = juju::relation_get(rel, &u, false)?;
        peers.units.insert(u, b);
    }
    Ok(peers)
}

/// A newer Debian package the leader published (the upgrade-package action): staged here,
/// switched in this unit's rolling turn like an attached etcd resource. `None` when the
/// unit is blocked (the board says why).
fn staged(inst: Installed, peers: &Peers, board: &mut StatusBoard) -> Result<Option<Installed>> {
    if inst.delivery != Delivery::Deb {
        return Ok(Some(inst));
    }
    let Some(target) = peers.app_get(Key::PackageTarget).filter(|t| !t.is_empty()) else {
        return Ok(Some(inst));
    };
    match install::stage_deb(&inst, target) {
        Ok(i) => Ok(Some(i)),
        Err(InstallError::Bad(msg)) => {
            board.report(Level::Blocked, msg);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Where etcd's data lives, asked of Juju again only when the delivery changed or the hook
/// is not update-status.
fn data_dir_of(
    st: &mut LocalState,
    update_status: bool,
    detaching: bool,
    delivery: Delivery,
) -> Result<String> {
    Ok(remembered(
        &mut st.data_dir,
        update_status,
        |seen| seen.delivery == delivery,
        || {
            Ok(SeenDataDir {
                delivery,
                dir: data_dir(detaching)?,
            })
        },
    )?
    .dir)
}
