//! Phase 3, `follow_epoch`: after a restore, a member of the old cluster sets its data aside.

use super::state::*;
use crate::juju::{self};
use crate::unit::now;
use crate::unit::peers::Key;
use anyhow::{Context as _, Result};
use etcdkit::service::{self, Service};
use std::path::Path;

/// When etcd was configured with another data directory (the `data` storage came or is
/// going), stops it and moves the member's data to `data`, verified (see `relocate`).
/// Must run before the new config is written: the old one names where the data is.
pub(super) fn relocate_data(data: &str, svc: &Service) -> Result<()> {
    let from = match crate::ops::relocate::configured_data_dir(Path::new(service::CONFIG_FILE)) {
        Ok(from) => from,
        // The charm's own file, unreadable as YAML (edited by hand, cut short): the caller
        // writes it again. It is kept aside for the operator, and where the member's data
        // is, is found on disk: the new data directory first, then the others the charm
        // ever configures.
        Err(e) => {
            let aside = format!(
                "{}.corrupt-{}",
                service::CONFIG_FILE,
                crate::unit::now() as i64
            );
            std::fs::rename(service::CONFIG_FILE, &aside)
                .with_context(|| format!("moving the unreadable {} aside", service::CONFIG_FILE))?;
            let found = [data.to_string()]
                .into_iter()
                .chain([
                    etcdkit::VOLUME_DATA_DIR.to_string(),
                    etcdkit::DATA_DIR.to_string(),
                    etcdkit::SNAP_DATA_DIR.to_string(),
                ])
                .find(|d| crate::unit::has_member_data(d));
            juju::log(
                "WARNING",
                &format!(
                    "{e:#}: the file is the charm's and is written again (the unreadable one is kept as {aside}); the member's data is in {}",
                    found.as_deref().unwrap_or("no directory yet")
                ),
            );
            found
        }
    };
    if crate::ops::relocate::needed(from.as_deref(), data) {
        svc.stop()?;
        crate::ops::relocate::move_member(from.as_deref().unwrap_or_default(), data)?;
    }
    Ok(())
}

impl<'a> Reconcile<'a> {
    /// Phase 3. After a restore the leader publishes a new epoch: this member's data belongs
    /// to the old cluster. It is set aside (never deleted here) and the member joins the new
    /// cluster through the normal path.
    pub(super) fn follow_epoch(&mut self) -> Result<()> {
        match crate::hook::plan::epoch(
            self.peers.app_get(Key::Epoch),
            self.st.epoch.as_deref(),
            self.st.initial_cluster.is_some(),
            self.leader,
        ) {
            crate::hook::plan::Epoch::Rejoin { old, new } => {
                juju::log(
                    "INFO",
                    &format!("the cluster was restored (epoch {old} -> {new}); rejoining"),
                );
                self.svc.stop()?;
                let member = Path::new(&self.data).join("member");
                if member.exists() {
                    // Never over an earlier aside: each keeps the data it was made for.
                    let mut aside = Path::new(&self.data).join(format!(".epoch-{old}"));
                    if aside.exists() {
                        aside = Path::new(&self.data).join(format!(".epoch-{old}-{}", now()));
                    }
                    std::fs::create_dir_all(&aside)?;
                    std::fs::rename(&member, aside.join("member"))?;
                    // The data of the cluster before the last restore is kept (the operator's
                    // way back); that of earlier ones goes, so restores do not fill the disk.
                    let asides = crate::unit::entries_named(Path::new(&self.data), ".epoch-");
                    for old in asides.into_iter().filter(|a| *a != aside) {
                        match std::fs::remove_dir_all(&old) {
                            Ok(()) => juju::log(
                                "INFO",
                                &format!(
                                    "removed {}: the data of a cluster two or more restores ago",
                                    old.display()
                                ),
                            ),
                            Err(e) => juju::log(
                                "WARNING",
                                &format!("cannot remove {}: {e}", old.display()),
                            ),
                        }
                    }
                }
                self.st.initial_cluster = None;
                self.st.initial_state = None;
                self.st.epoch = None;
                self.set(Key::Phase, "ready");
            }
            crate::hook::plan::Epoch::Adopt(e) => self.st.epoch = Some(e),
            crate::hook::plan::Epoch::Keep => {}
        }
        Ok(())
    }
}
