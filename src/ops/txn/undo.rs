//! What undoes each step. Each can run twice (a kill between an undo and the save that
//! drops its step runs it again): it looks at what is there before it acts.

use super::step::Step;
use crate::juju;
use crate::unit::{self, LocalState};
use anyhow::{Context as _, Result};
use etcdkit::install::{self, Installed};
use std::path::Path;

pub(super) fn step(step: &Step) -> Result<()> {
    match step {
        Step::MadeDir { path } => remove_if_empty(path),
        Step::Moved {
            from,
            to,
            displaced,
        } => move_back(from, to, displaced)?,
        Step::Copied {
            original,
            copy,
            displaced,
        } => {
            if copy.exists() {
                move_back(original, copy, displaced)?;
            } else {
                // Never renamed into place: the copy is partial, the original untouched.
                let partial = partial(copy);
                match std::fs::remove_dir_all(&partial) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", partial.display()))
                    }
                    _ => {}
                }
            }
        }
        Step::File { path, before } => {
            crate::pki::write_file(path, before.as_bytes(), 0o644)?;
        }
        Step::Cluster(c) => {
            let mut st = LocalState::load()?;
            c.clone().apply(&mut st);
            st.save()?;
        }
        Step::Binaries { before, link } => {
            before.save()?;
            match link {
                Some(l) => install::switch_current(l)?,
                None => unit::remove_if_present(&Path::new(install::OPT_DIR).join("current"))?,
            }
        }
        Step::Switched => {
            if let Some(mut inst) = Installed::load().filter(|i| i.previous.is_some()) {
                install::roll_back(&mut inst)?;
            }
        }
        Step::SnapRevision { revision, before } => {
            if let Some(rev) = revision {
                if install::snap_revision().as_ref() != Some(rev) {
                    install::revert_snap_to(rev)?;
                }
            }
            before.save()?;
        }
    }
    Ok(())
}

/// Where a copy is made before it is complete.
pub(crate) fn partial(copy: &Path) -> std::path::PathBuf {
    let mut name = copy.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    copy.with_file_name(name)
}

/// `to` back to `from`, once what stands at `from` is out of the way (set aside, or gone
/// when it is an empty directory). Nothing at `to`: moved back already, or never moved.
fn move_back(from: &Path, to: &Path, displaced: &str) -> Result<()> {
    if !to.exists() {
        return Ok(());
    }
    if from.exists() && std::fs::remove_dir(from).is_err() {
        let aside = from.with_file_name(format!("{displaced}-{}", unit::now()));
        std::fs::rename(from, &aside)
            .with_context(|| format!("setting {} aside as {}", from.display(), aside.display()))?;
    }
    std::fs::rename(to, from)
        .with_context(|| format!("putting {} back from {}", from.display(), to.display()))
}

fn remove_if_empty(dir: &Path) {
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => juju::log("WARNING", &format!("{} is kept: {e}", dir.display())),
    }
}
