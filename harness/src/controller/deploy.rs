//! A unit's charm files replaced by a refresh, as Juju's uniter does it: by the unit's own
//! agent, between two of its hooks, before the next one runs (internal/worker/uniter: the
//! charm upgrade is an operation of its own; the manifest deployer,
//! internal/worker/uniter/charm/manifest_deployer.go `removeDiff`, removes the old charm's
//! files the new one does not have and writes the new ones over; what the unit made at run
//! time, a `.unit-state.db` or a venv, stays). Never while a hook of the unit runs: the
//! controller once replaced them from the refresh command itself, and a hook that had just
//! started ran the old dispatch's interpreter on the new dispatch.

use super::{charm_dir_in_machine, copy_tree, Ctl};
use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};

impl Ctl {
    /// Puts the application's current charm files on `unit`'s machine when the unit still
    /// has another charm's (a refresh since its last hook). Runs before each of its hooks.
    pub(crate) async fn deploy_charm_change(&self, model: &str, unit: &str) -> Result<()> {
        let found = self.read(|w| {
            let m = w.models.get(model)?;
            let u = m.units.get(unit)?;
            let to = m.apps.get(&u.app)?.charm_dir.clone();
            let pid = m.machines.get(&u.machine)?.init_pid?;
            Some((u.charm_from.clone()?, to, pid))
        });
        let Some((from, to, pid)) = found.filter(|(from, to, _)| from != to) else {
            return Ok(());
        };
        let target = PathBuf::from(format!("/proc/{pid}/root"))
            .join(charm_dir_in_machine(unit).trim_start_matches('/'));
        let (f, t) = (PathBuf::from(&from), PathBuf::from(&to));
        tokio::task::spawn_blocking(move || replace_files(&f, &t, &target))
            .await?
            .with_context(|| format!("deploying the new charm to {unit}"))?;
        self.mutate(|w| {
            if let Some(u) = w.models.get_mut(model).and_then(|m| m.units.get_mut(unit)) {
                u.charm_from = Some(to);
            }
        });
        Ok(())
    }
}

/// In `target` (a unit's charm directory), the files of the charm at `old` that the one at
/// `new` lacks removed, then `new`'s files put in place (by rename: see `copy_tree`).
fn replace_files(old: &Path, new: &Path, target: &Path) -> Result<()> {
    for rel in only_in(old, new)? {
        let path = target.join(&rel);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("removing the old charm file {}", path.display()))
            }
            _ => {}
        }
    }
    copy_tree(new, target)
}

/// The paths (relative) under `old` that `new` does not have; a directory that goes is
/// listed once, not its contents.
fn only_in(old: &Path, new: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = old.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let r = rel.join(entry.file_name());
            match std::fs::symlink_metadata(new.join(&r)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(r),
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {}", new.join(&r).display()))
                }
                Ok(md) if md.is_dir() && entry.file_type()?.is_dir() => todo.push(r),
                Ok(_) => {}
            }
        }
    }
    out.sort();
    Ok(out)
}
