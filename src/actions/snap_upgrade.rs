//! The snap-upgrade action: move a unit running etcd from the Debian package to the managed
//! delivery (the snap where snapd runs, otherwise the archive from the attached `etcd`
//! resource), keeping the member's identity and data.
//!
//! Steps: `preflight` → `backup` → `snapshot` → `stop` → `install` (for a snap, then
//! `move-data` to /var/snap/etcd/common/data and the config's data-dir) → `start` → `verify`
//! (healthy, same member ID, every key there) → `purge` (with etcd stopped and the data dir
//! set aside: the package's purge deletes /var/lib/etcd) → `report`. A failure before the
//! purge rolls back to the running package with its data.
//!
//! Crash points for tests: a file /var/lib/etcd-charm/crashpoints/<step> makes that step fail.

use crate::actions::support::{
    local, param_bool, param_str, refuse, writable_dir, Refused, Results,
};
use crate::juju::{self, Context};
use crate::ops::snap_journal::*;
use crate::unit;
use anyhow::{anyhow, bail, Context as _, Result};
use etcdkit::client::Client;
use etcdkit::install::{self, Delivery, Installed};
use etcdkit::service::Service;
use etcdkit::snapshot::save_raw;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    let use_resource = param_bool(params, "use-resource", false);
    let backup = param_bool(params, "backup", true);
    let target = param_str(params, "target", "/home/ubuntu/etcd-migration").to_string();

    // preflight
    let before_inst =
        Installed::load().ok_or_else(|| anyhow!("etcd is not installed on this unit"))?;
    if before_inst.delivery != Delivery::Deb {
        return refuse(format!(
            "this unit runs etcd from the {} delivery, not the Debian package: nothing to migrate",
            before_inst.delivery.name()
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
    // An attached snap wins; else the store's snap where snapd runs, unless use-resource
    // asks for the attached tarball.
    let to_snap = snap_file.is_some() || (snapd && !use_resource);
    if !to_snap && resource.is_none() {
        return refuse("no snapd here: attach an etcd release tarball as the etcd resource, then run snap-upgrade again");
    }
    let target_dir = if backup {
        Some(writable_dir(&target, "target")?)
    } else {
        None
    };
    let (client, ep, cfg) = local()?;
    step("preflight")?;
    if !client.health(&ep).unwrap_or(false) {
        return refuse("etcd on this unit is not healthy; fix that before migrating");
    }
    let before = identity(&client, &ep)?;
    // The member goes down below: never while another unit's operation has its own down
    // (the member-down lock, held until this action ends).
    let unit_name = ctx.unit.clone();
    let _lock =
        match crate::ops::member_lock::take(&client, &ep, &unit_name, "snap-upgrade-action")? {
            Ok(held) => held,
            Err(holder) => {
                return refuse(format!(
                    "{holder} has its member down now (the member-down lock): run snap-upgrade \
                 again once it is done"
                ))
            }
        };
    let data = unit::data_dir(false)?;
    let mut results: Results = vec![];

    // backup of config, certificates and data, and a snapshot
    if let Some(dir) = &target_dir {
        step("backup")?;
        // Room for the archive of the data dir (at most its size: tar compresses) and the
        // snapshot beside it, checked before anything is written.
        let need = crate::ops::relocate::tree_size(Path::new(&data))?
            .saturating_add(client.status(&ep)?.db_size);
        if let Err(e) = unit::ensure_room(
            dir,
            need,
            Some(Path::new(&data)),
            "the backup before the migration",
        ) {
            return refuse(format!("{e:#}; or run with backup=false"));
        }
        let archive = dir.join("etcd-pre-migration.tar.gz");
        // It holds every private key: 0600 from the moment it exists (tar writes into a
        // file made private first, never one it creates with the umask's mode).
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
        let out = std::process::Command::new("tar")
            .args(["-czf", "-", "--exclude", "*.sock", "/etc/etcd", &data])
            .stdout(file)
            .output()
            .context("running tar for the backup")?;
        if !out.status.success() {
            bail!("backup failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        step("snapshot")?;
        let snap = dir.join("etcd-pre-migration.db");
        save_raw(&client, &ep, &snap)?;
        results.push(("backup.path".into(), archive.display().to_string()));
        results.push(("backup.snapshot".into(), snap.display().to_string()));
    }

    let old_svc = Service {
        etcd_binary: before_inst.etcd(),
    };
    let old_link = std::fs::read_link(Path::new(install::OPT_DIR).join("current")).ok();
    // The snap keeps its data under /var/snap/etcd/common: the data moves there (and back on
    // a rollback), and the config names the new place.
    let config_file = Path::new(etcdkit::service::CONFIG_FILE);
    let old_config = std::fs::read(config_file).context("reading the etcd config")?;
    let new_data = PathBuf::from(etcdkit::SNAP_DATA_DIR);
    let moves_data = to_snap && juju::storage_location("data")?.is_none();
    Journal::Switch {
        data: data.clone(),
        new_data: moves_data.then(|| new_data.display().to_string()),
        config: String::from_utf8(old_config.clone()).context("the etcd config is not UTF-8")?,
        old_link: old_link.as_ref().map(|l| l.display().to_string()),
        before: before_inst.clone(),
    }
    .save()?;
    let rollback = |why: &anyhow::Error| -> Result<()> {
        juju::action_log(&format!(
            "snap-upgrade failed ({why:#}); rolling back to the Debian package"
        ));
        undo_switch(
            &data,
            moves_data.then_some(new_data.to_str().unwrap_or_default()),
            &old_config,
            old_link.as_deref(),
            &before_inst,
        )?;
        Journal::clear()?;
        wait_healthy(&client, &ep)
    };

    let migrated = (|| -> Result<Installed> {
        step("stop")?;
        crate::actions::support::member_going_away(
            "Moving etcd from the Debian package (snap-upgrade action)",
        )?;
        old_svc.stop()?;
        step("install")?;
        let inst = if to_snap {
            let inst = match &snap_file {
                Some(f) => install::install_snap_file(f),
                None => install::install_snap(&cfg.channel),
            };
            let inst = match inst {
                Ok(i) => i,
                Err(install::InstallError::Bad(m)) => return Err(Refused(m).into()),
                Err(e) => return Err(e.into()),
            };
            if moves_data {
                step("move-data")?;
                std::fs::create_dir_all(new_data.parent().unwrap_or(Path::new("/")))?;
                std::fs::rename(&data, &new_data)
                    .with_context(|| format!("moving {data} to {}", new_data.display()))?;
                let mut conf: serde_yaml::Value =
                    serde_yaml::from_slice(&old_config).context("parsing the etcd config")?;
                conf["data-dir"] = serde_yaml::Value::from(new_data.display().to_string());
                crate::pki::write_file(
                    config_file,
                    serde_yaml::to_string(&conf)?.as_bytes(),
                    0o644,
                )?;
            }
            inst
        } else {
            match install::install_archive(
                Path::new(resource.as_deref().unwrap_or_default()),
                cfg.archive_sha256.as_deref(),
                "etcd resource",
                false,
            ) {
                Ok(i) => i,
                Err(install::InstallError::Bad(m)) => return Err(Refused(m).into()),
                Err(e) => return Err(e.into()),
            }
        };
        step("start")?;
        Service {
            etcd_binary: inst.etcd(),
        }
        .start()?;
        step("verify")?;
        wait_healthy(&client, &ep)?;
        let after = identity(&client, &ep)?;
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
        Ok(inst)
    })();
    let inst = match migrated {
        Ok(i) => {
            Journal::clear()?;
            i
        }
        Err(e) => {
            if let Err(r) = rollback(&e) {
                bail!("snap-upgrade failed ({e:#}) and the rollback failed too ({r:#}): check etcd on this unit");
            }
            return match e.downcast::<Refused>() {
                Ok(r) => refuse(format!(
                    "{}; rolled back to the Debian package, which runs with its data",
                    r.0
                )),
                Err(e) => refuse(format!(
                    "{e:#}; rolled back to the Debian package, which runs with its data"
                )),
            };
        }
    };

    // purge: the package's purge removes /var/lib/etcd, so the data is set aside meanwhile.
    step("purge")?;
    let svc = Service {
        etcd_binary: inst.etcd(),
    };
    let data_now = if moves_data {
        new_data.display().to_string()
    } else {
        data.clone()
    };
    let purged = purge_keeping(&data_now, &svc).and_then(|_| wait_healthy(&client, &ep));
    let purge_note = match purged {
        Ok(()) => "the etcd-server and etcd-client packages are purged".to_string(),
        Err(e) => {
            format!("the packages could not be purged ({e:#}); etcd runs from the new delivery")
        }
    };
    let after = identity(&client, &ep)?;
    let _ = juju::application_version_set(&inst.version);
    results.extend([
        ("output".to_string(), format!("migrated from the Debian package (etcd {}) to the {} delivery (etcd {}); {purge_note}", before_inst.version, inst.delivery.name(), inst.version)),
        ("member-id".to_string(), format!("{:x}", after.member_id)),
        ("keys".to_string(), after.keys.to_string()),
        ("delivery".to_string(), inst.delivery.name().to_string()),
        ("version".to_string(), inst.version.clone()),
    ]);
    let _ = ctx;
    Ok(results)
}

/// Purges the Debian packages with etcd stopped and the data dir moved out of their reach.
fn purge_keeping(data: &str, svc: &Service) -> Result<()> {
    svc.stop()?;
    let data_path = PathBuf::from(data);
    let aside = PathBuf::from(format!("{data}.migrating"));
    let inside = data_path.starts_with("/var/lib/etcd");
    if inside {
        Journal::Purge {
            data: data.to_string(),
            aside: aside.display().to_string(),
        }
        .save()?;
        std::fs::rename(&data_path, &aside).context("setting the data dir aside")?;
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
    if inside {
        set_leftover_aside(&data_path)?;
        std::fs::rename(&aside, &data_path).context("putting the data dir back")?;
        Journal::clear()?;
    }
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
