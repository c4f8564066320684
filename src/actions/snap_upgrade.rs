//! The snap-upgrade action: move a unit running etcd from the Debian package to the managed
//! delivery (the snap where snapd runs, otherwise the archive from the attached `etcd`
//! resource), keeping the member's identity and data.
//!
//! Steps: `preflight` → `backup` → `snapshot` → `stop` → `install` (for a snap, then
//! `move-data` to /var/snap/etcd/common/data and the config's data-dir) → `start` → `verify`
//! (healthy, same member ID, every key there) → `purge` (with etcd stopped and the data dir
//! set aside: the package's purge deletes /var/lib/etcd) → `report`. Every change of the
//! switch is recorded first in the unit's transaction (`ops::txn`): a failure before the
//! purge undoes it (the running package with its data), and so does the next hook after a
//! kill.
//!
//! Crash points for tests: a file /var/lib/etcd-charm/crashpoints/<step> makes that step fail.

use crate::actions::support::{
    local, param_bool, param_str, refuse, writable_dir, Refused, Results,
};
use crate::config::Config;
use crate::juju::{self, Context};
use crate::ops::txn::{Op, Step, Txn};
use crate::unit;
use anyhow::{anyhow, bail, Context as _, Result};
use etcdkit::client::Client;
use etcdkit::install::{self, Delivery, Installed};
use etcdkit::service::Service;
use etcdkit::snapshot::save_raw;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CRASHPOINTS: &str = "/var/lib/etcd-charm/crashpoints";

fn step(name: &str) -> Result<()> {
    juju::action_log(&format!("snap-upgrade: {name}"));
    // A test can kill the action here (`crash-at` = snap-upgrade-<step>) or make the step fail.
    unit::crash_point(&format!("snap-upgrade-{name}"));
    if Path::new(CRASHPOINTS).join(name).exists() {
        bail!("forced failure at step {name} (crash point file present)");
    }
    Ok(())
}

/// Where the member goes, decided before anything is touched.
struct Plan {
    before: Installed,
    /// the attached `etcd` resource
    resource: Option<String>,
    /// the resource, when it is a snap
    snap_file: Option<PathBuf>,
    to_snap: bool,
    target_dir: Option<PathBuf>,
}

/// What the member looks like, to compare before and after.
#[derive(Debug, PartialEq)]
struct Identity {
    member_id: u64,
    keys: u64,
}

fn identity(client: &Client, ep: &str) -> Result<Identity> {
    let st = client.status(ep)?;
    let v = client.post(ep, "/v3/kv/range", serde_json::json!({"key": "AA==", "range_end": "AA==", "count_only": true, "serializable": true}))?;
    let keys = v
        .get("count")
        .and_then(|c| c.as_str().and_then(|s| s.parse().ok()).or(c.as_u64()))
        .unwrap_or(0);
    Ok(Identity {
        member_id: st.header.member_id,
        keys,
    })
}

fn wait_healthy(client: &Client, ep: &str) -> Result<()> {
    unit::retry(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || match client.health(ep) {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow!("etcd is not healthy yet")),
            Err(e) => Err(anyhow!("{e}")),
        },
    )
}

pub fn snap_upgrade(
    ctx: &Context,
    params: &std::collections::BTreeMap<String, Value>,
) -> Result<Results> {
    let plan = preflight(params)?;
    let (client, ep, cfg) = local()?;
    step("preflight")?;
    if !client.health(&ep).unwrap_or(false) {
        return refuse("etcd on this unit is not healthy; fix that before migrating");
    }
    let before = identity(&client, &ep)?;
    // The member goes down below: never while another unit's operation has its own down
    // (the member-down lock, held until this action ends).
    let _lock = match crate::ops::member_lock::take(&client, &ep, &ctx.unit, "snap-upgrade-action")?
    {
        Ok(held) => held,
        Err(holder) => {
            return refuse(format!(
                "{holder} has its member down now (the member-down lock): run snap-upgrade \
                 again once it is done"
            ))
        }
    };
    let data = unit::data_dir(false)?;
    let mut results = match &plan.target_dir {
        Some(dir) => backup(&client, &ep, dir, &data)?,
        None => vec![],
    };
    let moves_data = plan.to_snap && juju::storage_location("data")?.is_none();
    let mut txn = Txn::begin(Op::SnapUpgrade)?;
    let inst = match switch(&mut txn, &plan, &cfg, &data, moves_data)
        .and_then(|inst| verify(&client, &ep, &before).map(|()| inst))
    {
        Ok(i) => {
            txn.commit()?;
            i
        }
        Err(e) => return roll_back(txn, &client, &ep, e),
    };

    // purge: the package's purge removes /var/lib/etcd, so the data is set aside meanwhile.
    step("purge")?;
    let svc = Service {
        etcd_binary: inst.etcd(),
    };
    let data_now = if moves_data {
        etcdkit::SNAP_DATA_DIR.to_string()
    } else {
        data
    };
    let purged = purge_keeping(&data_now, &svc).and_then(|_| wait_healthy(&client, &ep));
    let purge_note = match purged {
        Ok(()) => "the etcd-server and etcd-client packages are purged".to_string(),
        Err(e) => {
            format!("the packages could not be purged ({e:#}); etcd runs from the new delivery")
        }
    };
    let after = identity(&client, &ep)?;
    // The version in `juju status` only: the action's result names it, and the next hook
    // sets it again.
    let _ = juju::application_version_set(&inst.version);
    results.extend([
        ("output".to_string(), format!("migrated from the Debian package (etcd {}) to the {} delivery (etcd {}); {purge_note}", plan.before.version, inst.delivery.name(), inst.version)),
        ("member-id".to_string(), format!("{:x}", after.member_id)),
        ("keys".to_string(), after.keys.to_string()),
        ("delivery".to_string(), inst.delivery.name().to_string()),
        ("version".to_string(), inst.version.clone()),
    ]);
    Ok(results)
}

/// Refuses what cannot migrate, and decides where to: an attached snap wins; else the
/// store's snap where snapd runs, unless use-resource asks for the attached tarball.
fn preflight(params: &std::collections::BTreeMap<String, Value>) -> Result<Plan> {
    let use_resource = param_bool(params, "use-resource", false);
    let backup = param_bool(params, "backup", true);
    let target = param_str(params, "target", "/home/ubuntu/etcd-migration").to_string();
    let before = Installed::load().ok_or_else(|| anyhow!("etcd is not installed on this unit"))?;
    if before.delivery != Delivery::Deb {
        return refuse(format!(
            "this unit runs etcd from the {} delivery, not the Debian package: nothing to migrate",
            before.delivery.name()
        ));
    }
    let resource = juju::resource_get("etcd")?;
    let snap_file = resource
        .as_deref()
        .map(PathBuf::from)
        .filter(|p| install::is_snap_file(p));
    let snapd = install::snapd_present();
    if snap_file.is_some() && !snapd {
        return refuse("the etcd resource is a snap but snapd does not run on this machine: install snapd, or attach an etcd release tarball, then run snap-upgrade again");
    }
    let to_snap = snap_file.is_some() || (snapd && !use_resource);
    if !to_snap && resource.is_none() {
        return refuse("no snapd here: attach an etcd release tarball as the etcd resource, then run snap-upgrade again");
    }
    let target_dir = if backup {
        Some(writable_dir(&target, "target")?)
    } else {
        None
    };
    Ok(Plan {
        before,
        resource,
        snap_file,
        to_snap,
        target_dir,
    })
}

/// An archive of config, certificates and data, and a snapshot, into `dir`.
fn backup(client: &Client, ep: &str, dir: &Path, data: &str) -> Result<Results> {
    step("backup")?;
    // Room for the archive of the data dir (at most its size: tar compresses) and the
    // snapshot beside it, checked before anything is written.
    let need = crate::ops::relocate::tree_size(Path::new(data))?
        .saturating_add(client.status(ep)?.db_size);
    if let Err(e) = unit::ensure_room(
        dir,
        need,
        Some(Path::new(data)),
        "the backup before the migration",
    ) {
        return refuse(format!("{e:#}; or run with backup=false"));
    }
    let archive = dir.join("etcd-pre-migration.tar.gz");
    // It holds every private key: 0600 from the moment it exists (tar writes into a file
    // made private first, never one it creates with the umask's mode).
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&archive)
            .with_context(|| format!("creating {}", archive.display()))?;
        // An archive left by an earlier run keeps its old mode on open: set it.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f
    };
    write_backup(file, &[Path::new("/etc/etcd"), Path::new(data)])
        .with_context(|| format!("writing the backup {}", archive.display()))?;
    step("snapshot")?;
    let snap = dir.join("etcd-pre-migration.db");
    save_raw(client, ep, &snap)?;
    Ok(vec![
        ("backup.path".into(), archive.display().to_string()),
        ("backup.snapshot".into(), snap.display().to_string()),
    ])
}

/// A gzipped tar of `roots` (each under its absolute path without the leading `/`, as
/// `tar -czf - /etc/etcd <data>` names them): directories, regular files and symlinks (not
/// followed); sockets and other special files are left out.
fn write_backup(file: std::fs::File, roots: &[&Path]) -> std::io::Result<()> {
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut todo: Vec<PathBuf> = roots.iter().map(|p| p.to_path_buf()).collect();
    while let Some(path) = todo.pop() {
        let md = std::fs::symlink_metadata(&path)?;
        let name = path.strip_prefix("/").unwrap_or(&path);
        if md.is_dir() {
            tar.append_dir(name, &path)?;
            for e in std::fs::read_dir(&path)? {
                todo.push(e?.path());
            }
        } else if md.is_file() || md.file_type().is_symlink() {
            tar.append_path_with_name(&path, name)?;
        }
    }
    tar.into_inner()?.finish()?.sync_all()
}

/// etcd stopped, the new delivery installed (for a snap, the data moved to the snap's own
/// place and the config pointed there), and started: each change recorded first.
fn switch(
    txn: &mut Txn,
    plan: &Plan,
    cfg: &Config,
    data: &str,
    moves_data: bool,
) -> Result<Installed> {
    let config_file = Path::new(etcdkit::service::CONFIG_FILE);
    let old_config = std::fs::read_to_string(config_file).context("reading the etcd config")?;
    txn.record(Step::File {
        path: config_file.into(),
        before: old_config.clone(),
    })?;
    step("stop")?;
    crate::actions::support::member_going_away(
        "Moving etcd from the Debian package (snap-upgrade action)",
    )?;
    Service {
        etcd_binary: plan.before.etcd(),
    }
    .stop()?;
    step("install")?;
    txn.record(Step::Binaries {
        before: plan.before.clone(),
        link: std::fs::read_link(Path::new(install::OPT_DIR).join("current")).ok(),
    })?;
    let installed = match (&plan.snap_file, plan.to_snap) {
        (Some(f), _) => install::install_snap_file(f),
        (None, true) => install::install_snap(&cfg.channel),
        (None, false) => install::install_archive(
            Path::new(plan.resource.as_deref().unwrap_or_default()),
            cfg.archive_sha256.as_deref(),
            "etcd resource",
            false,
        ),
    };
    let inst = match installed {
        Ok(i) => i,
        Err(install::InstallError::Bad(m)) => return Err(Refused(m).into()),
        Err(e) => return Err(e.into()),
    };
    if moves_data {
        step("move-data")?;
        let new_data = Path::new(etcdkit::SNAP_DATA_DIR);
        std::fs::create_dir_all(new_data.parent().unwrap_or(Path::new("/")))?;
        txn.move_aside(Path::new(data), new_data, ".purge-leftover")?;
        let mut conf: serde_yaml::Value =
            serde_yaml::from_str(&old_config).context("parsing the etcd config")?;
        conf["data-dir"] = serde_yaml::Value::from(new_data.display().to_string());
        crate::pki::write_file(config_file, serde_yaml::to_string(&conf)?.as_bytes(), 0o644)?;
    }
    step("start")?;
    Service {
        etcd_binary: inst.etcd(),
    }
    .start()?;
    Ok(inst)
}

/// The new delivery's member: healthy, the same member, every key there.
fn verify(client: &Client, ep: &str, before: &Identity) -> Result<()> {
    step("verify")?;
    wait_healthy(client, ep)?;
    let after = identity(client, ep)?;
    if after.member_id != before.member_id {
        bail!(
            "the member ID changed ({:x} → {:x})",
            before.member_id,
            after.member_id
        );
    }
    if after.keys < before.keys {
        bail!(
            "keys are missing after the migration ({} before, {} after)",
            before.keys,
            after.keys
        );
    }
    Ok(())
}

/// The switch failed: undone, back to the Debian package with its data.
fn roll_back(txn: Txn, client: &Client, ep: &str, e: anyhow::Error) -> Result<Results> {
    juju::action_log(&format!(
        "snap-upgrade failed ({e:#}); rolling back to the Debian package"
    ));
    if let Err(r) = txn.undo().and_then(|()| wait_healthy(client, ep)) {
        bail!("snap-upgrade failed ({e:#}) and the rollback failed too ({r:#}): check etcd on this unit");
    }
    let why = match e.downcast::<Refused>() {
        Ok(r) => r.0,
        Err(e) => format!("{e:#}"),
    };
    refuse(format!(
        "{why}; rolled back to the Debian package, which runs with its data"
    ))
}

/// Purges the Debian packages with etcd stopped and the data dir moved out of their reach
/// (recorded first: a kill puts it back).
fn purge_keeping(data: &str, svc: &Service) -> Result<()> {
    svc.stop()?;
    let data_path = PathBuf::from(data);
    let aside = PathBuf::from(format!("{data}.migrating"));
    let mut txn = Txn::begin(Op::SnapUpgrade)?;
    if data_path.starts_with("/var/lib/etcd") {
        txn.move_aside(&data_path, &aside, ".purge-leftover")?;
        unit::crash_point("snap-upgrade-purge-aside");
    }
    let out = std::process::Command::new("apt-get")
        .args([
            "purge",
            "-y",
            "-q",
            // the charm holds them against an `apt upgrade`; it is the charm that moves on
            "--allow-change-held-packages",
            "etcd-server",
            "etcd-client",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    // The data back in its place (what the purge left there set aside, an empty dir gone).
    txn.roll_back()?;
    svc.start()?;
    let out = out.context("running apt-get purge")?;
    if !out.status.success() {
        bail!(
            "apt-get purge: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backup holds files, directories and symlinks (not followed) under their full
    /// paths, and leaves sockets out (etcd's or anyone's), as `tar --exclude *.sock` did.
    #[test]
    fn the_backup_keeps_files_dirs_and_links_and_leaves_sockets_out() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("etc-etcd");
        std::fs::create_dir_all(root.join("pki")).unwrap();
        std::fs::write(root.join("pki/server.key"), "key").unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("link")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(root.join("etcd.sock")).unwrap();
        let out = d.path().join("b.tar.gz");
        write_backup(std::fs::File::create(&out).unwrap(), &[&root]).unwrap();
        let mut names = vec![];
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap());
        for e in tar::Archive::new(gz).entries().unwrap() {
            let e = e.unwrap();
            names.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            ));
        }
        let base = root.strip_prefix("/").unwrap().display().to_string();
        let has = |n: &str, t: tar::EntryType| names.contains(&(format!("{base}{n}"), t));
        assert!(has("", tar::EntryType::Directory), "{names:?}");
        assert!(has("/pki/server.key", tar::EntryType::Regular), "{names:?}");
        assert!(has("/link", tar::EntryType::Symlink), "{names:?}");
        assert!(
            !names.iter().any(|(n, _)| n.ends_with("etcd.sock")),
            "{names:?}"
        );
    }
}
