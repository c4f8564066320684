//! What restore and recover share around their swap (whose undo is the unit's transaction,
//! `ops::txn`): the epoch a rebuilt cluster publishes, the config of a member not proven
//! yet (clients on loopback only) and of one proven, and the old data's disposal once the
//! new is proven.

use crate::juju::{self, Bag, Context};
use crate::ops::txn::Txn;
use crate::unit::peers::{Key, PeerBag};
use crate::unit::{self, LocalState};
use anyhow::{anyhow, Result};
use etcdkit::install::Installed;
use std::path::Path;
use std::process::Command;

/// The epoch a rebuilt cluster (restore, recover) publishes: one past the application's.
pub(crate) fn next_epoch(ctx: &Context) -> Result<u64> {
    Ok(juju::relation_ids(unit::PEER)?
        .first()
        .and_then(|r| juju::relation_get(r, &ctx.app, true).ok())
        .and_then(|b| b.peer(Key::Epoch).and_then(|e| e.parse().ok()))
        .unwrap_or(1)
        + 1)
}

pub(crate) fn rerender(
    st: &LocalState,
    cfg: &crate::config::Config,
    name: &str,
    address: &str,
    data: &str,
) -> Result<()> {
    write_config(&render_for(st, cfg, name, address, data)?)
}

/// Writes etcd's config as `rendered` would have it, but with clients served on loopback
/// only (`render::clients_on_loopback`), and returns the endpoint to check the member at:
/// a member whose data a crash would still undo acknowledges no client's write.
/// The config it replaces is recorded in `txn` first: an undo puts it back.
pub(crate) fn write_unproven(txn: &mut Txn, rendered: &str) -> Result<String> {
    let (text, ep) = etcdkit::render::clients_on_loopback(rendered)
        .ok_or_else(|| anyhow!("etcd's config names no https client URL"))?;
    txn.replace_file(Path::new(etcdkit::service::CONFIG_FILE), &text)?;
    Ok(ep)
}

pub(crate) fn write_config(text: &str) -> Result<()> {
    crate::pki::write_file(
        Path::new(etcdkit::service::CONFIG_FILE),
        text.as_bytes(),
        0o644,
    )?;
    Ok(())
}

pub(crate) fn render_for(
    st: &LocalState,
    cfg: &crate::config::Config,
    name: &str,
    address: &str,
    data: &str,
) -> Result<String> {
    let m = etcdkit::render::Member {
        name: name.into(),
        address: address.into(),
        data_dir: data.into(),
        initial_cluster: st.initial_cluster.clone().unwrap_or_default(),
        state: etcdkit::render::ClusterState::New,
        token: st.token.clone().unwrap_or_default(),
        pki_dir: crate::pki::PKI_DIR.into(),
        version: Installed::load()
            .ok_or_else(|| anyhow!("etcd is not installed"))?
            .version()?,
    };
    // In an action: no hook leaves the cos-agent relation here.
    let settings = crate::monitoring::cos::etcd_settings(cfg, None)?;
    Ok(etcdkit::render::etcd_config(&m, &settings))
}

pub(crate) fn publish_epoch(
    ctx: &Context,
    epoch: u64,
    token: &str,
    name: &str,
    peer_url: &str,
) -> Result<()> {
    let Some(rel) = juju::relation_ids(unit::PEER)?.into_iter().next() else {
        return Ok(());
    };
    let mut b = Bag::new();
    b.insert(Key::Epoch.into(), epoch.to_string());
    b.insert(Key::Token.into(), token.into());
    b.insert(Key::Bootstrap.into(), name.into());
    b.insert(Key::InitialCluster.into(), format!("{name}={peer_url}"));
    b.insert(Key::Join.into(), String::new());
    juju::relation_set(&rel, &b, true)?;
    let _ = ctx;
    Ok(())
}

/// Deletes directories of the data dir off the action's clock (hundreds of MiB take a
/// while to free): each is renamed at once into a `.trash-*` directory, which no restore
/// uses, and a process of its own session deletes that after the action has answered. A
/// trash directory left by a crash is swept by the next restore (`sweep_trash`). Only data
/// whose replacement is proven comes here.
pub(crate) fn discard_later(data: &Path, dirs: &[&Path]) {
    let trash = data.join(format!(".trash-{}-{}", unit::now(), std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&trash) {
        juju::log(
            "WARNING",
            &format!("cannot create {}: {e}", trash.display()),
        );
        return;
    }
    for (i, d) in dirs.iter().enumerate() {
        if d.exists() {
            if let Err(e) = std::fs::rename(d, trash.join(i.to_string())) {
                juju::log("WARNING", &format!("cannot discard {}: {e}", d.display()));
            }
        }
    }
    let spawned = Command::new("setsid")
        .args(["rm", "-rf", "--"])
        .arg(&trash)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        juju::log(
            "WARNING",
            &format!(
                "cannot start deleting {}: {e}; deleting it now",
                trash.display()
            ),
        );
        // What stays is trash only (the restored member is proven); the next restore
        // sweeps it.
        let _ = std::fs::remove_dir_all(&trash);
    }
}

/// Deletes trash directories a crashed or interrupted `discard_later` left behind.
pub(crate) fn sweep_trash(data: &Path) {
    for trash in unit::entries_named(data, ".trash-") {
        // Trash that will not go costs disk, not data: said, and left for the next try.
        // (NotFound: the previous restore's own deletion got there first.)
        match std::fs::remove_dir_all(&trash) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => juju::log(
                "WARNING",
                &format!("cannot delete {}: {err}", trash.display()),
            ),
            _ => {}
        }
    }
}
