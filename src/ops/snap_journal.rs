//! The journal of a snap-upgrade (the switch of a member from the Debian package to the
//! snap): written before etcd stops, cleared once the new delivery's member is verified;
//! a snap-upgrade whose process died is finished or undone by the next hook or action
//! (`recover_interrupted`). Also the forced failures its tests use (`step`).

use crate::juju;
use crate::unit;
use anyhow::{bail, Context as _, Result};
use etcdkit::install::{self, Installed};
use etcdkit::service::Service;
use std::path::Path;

pub(crate) const CRASHPOINTS: &str = "/var/lib/etcd-charm/crashpoints";

pub(crate) fn step(name: &str) -> Result<()> {
    juju::action_log(&format!("snap-upgrade: {name}"));
    // A test can kill the action here (`crash-at` = snap-upgrade-<step>) or make the step fail.
    unit::crash_point(&format!("snap-upgrade-{name}"));
    if Path::new(CRASHPOINTS).join(name).exists() {
        bail!("forced failure at step {name} (crash point file present)");
    }
    Ok(())
}

pub(crate) const JOURNAL: &str = "/var/lib/etcd-charm/migration-journal.json";

/// The journal, if any, is readable (a corrupt one blocks the unit: `check_local_files`).
pub(crate) fn check_journal() -> Result<()> {
    unit::read_json::<Journal>(JOURNAL).map(|_| ())
}

/// What a snap-upgrade that dies part-way must be able to undo: written before etcd stops,
/// cleared once the new delivery's member is verified (`Switch`), or before the package purge
/// sets the data aside (`Purge`).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) enum Journal {
    Switch {
        data: String,
        /// where the data moved to, when it moves (the snap's own place)
        new_data: Option<String>,
        config: String,
        old_link: Option<String>,
        before: Installed,
    },
    Purge {
        data: String,
        aside: String,
    },
}

impl Journal {
    pub(crate) fn save(&self) -> Result<()> {
        unit::write_json(JOURNAL, self)
    }
    pub(crate) fn clear() -> Result<()> {
        unit::remove_if_present(Path::new(JOURNAL))
    }
}

/// Puts the Debian package's member back as it was before the switch: etcd stopped, the data
/// in its old place, the old config, install record and binaries link; then started.
pub(crate) fn undo_switch(
    data: &str,
    new_data: Option<&str>,
    config: &[u8],
    old_link: Option<&Path>,
    before: &Installed,
) -> Result<()> {
    let svc = Service {
        etcd_binary: Installed::load().map(|i| i.etcd()).unwrap_or_default(),
    };
    svc.stop()?;
    if let Some(new_data) = new_data {
        if Path::new(new_data).exists() && !Path::new(data).exists() {
            std::fs::rename(new_data, data).context("moving the data back")?;
        }
    }
    crate::pki::write_file(Path::new(etcdkit::service::CONFIG_FILE), config, 0o644)?;
    before.save()?;
    match old_link {
        Some(l) => install::switch_current(l)?,
        None => unit::remove_if_present(&Path::new(install::OPT_DIR).join("current"))?,
    }
    Service {
        etcd_binary: before.etcd(),
    }
    .start()?;
    Ok(())
}

/// Finishes or undoes a snap-upgrade whose process died: every hook and action runs this
/// first. Before the new member was verified, the package's member comes back; during the
/// purge, the data set aside comes back to its place.
pub fn recover_interrupted() -> Result<()> {
    let Some(j) = unit::read_json::<Journal>(JOURNAL)? else {
        return Ok(());
    };
    match &j {
        Journal::Switch {
            data,
            new_data,
            config,
            old_link,
            before,
        } => {
            juju::log(
                "WARNING",
                "a snap-upgrade was interrupted before its new member was verified; rolling back to the Debian package",
            );
            undo_switch(
                data,
                new_data.as_deref(),
                config.as_bytes(),
                old_link.as_deref().map(Path::new),
                before,
            )?;
        }
        Journal::Purge { data, aside } => {
            juju::log(
                "WARNING",
                "a snap-upgrade was interrupted during the package purge; putting the data back",
            );
            let (data, aside) = (Path::new(data), Path::new(aside));
            if aside.exists() {
                set_leftover_aside(data)?;
                std::fs::rename(aside, data).context("putting the data dir back")?;
            }
            Service {
                etcd_binary: Installed::load().map(|i| i.etcd()).unwrap_or_default(),
            }
            .start()?;
        }
    }
    Journal::clear()
}

/// Clears the data dir's place for the data set aside during the purge: an empty dir the purge
/// left goes; anything else is kept aside, never deleted here.
pub(crate) fn set_leftover_aside(data: &Path) -> Result<()> {
    if !data.exists() || std::fs::remove_dir(data).is_ok() {
        return Ok(());
    }
    let left = data.with_file_name(format!(".purge-leftover-{}", unit::now()));
    std::fs::rename(data, &left)
        .with_context(|| format!("setting {} aside as {}", data.display(), left.display()))?;
    Ok(())
}
