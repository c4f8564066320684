//! A staged delivery switched in for a rolling turn, then committed or rolled back (to the
//! archive kept, or the Debian packages kept).

use super::archive::*;
use super::common::*;
use super::deb::*;
use super::record::*;
use std::path::Path;

/// Switches to the staged binaries (this unit's turn): `current` moves to the staged
/// directory, or the staged Debian packages are installed. What ran before is recorded
/// first (`previous`), so a crash at any point leaves the way back; switching again after
/// such a crash keeps that record. Nothing staged: nothing happens.
pub fn switch_staged(inst: &mut Installed) -> Result<()> {
    let Some(dir) = inst.staged.clone() else {
        return Ok(());
    };
    if inst.previous.is_none() {
        inst.previous = match inst.delivery {
            Delivery::Deb => Some(
                Path::new(DEBS_DIR)
                    .join(inst.package_version()?)
                    .display()
                    .to_string(),
            ),
            _ => std::fs::read_link(Path::new(OPT_DIR).join("current"))
                .ok()
                .map(|p| p.display().to_string()),
        };
        inst.save()?;
    }
    match inst.delivery {
        Delivery::Deb => {
            install_debs(Path::new(&dir))?;
            inst.package = Some(package_of(Path::new(&dir)));
        }
        _ => switch_current(Path::new(&dir))?,
    }
    inst.staged = None;
    inst.save()
}

/// Keeps the switched-in binaries: they passed their health check.
pub fn commit(inst: &mut Installed) -> Result<()> {
    if inst.previous.take().is_some() {
        inst.save()?;
    }
    Ok(())
}

/// Puts back what ran before (`previous`) after the new binaries failed their health
/// check, and remembers what failed so it is not tried again until a new resource (or a
/// new package target). Nothing recorded: nothing to go back to (an error).
pub fn roll_back(inst: &mut Installed) -> Result<()> {
    let Some(before) = inst.previous.clone() else {
        return Err(InstallError::Bad(
            "no earlier etcd is recorded on this unit to roll back to".into(),
        ));
    };
    let before = Path::new(&before);
    match inst.delivery {
        Delivery::Deb => {
            install_debs(before)?;
            inst.rolled_back = inst.package.replace(package_of(before));
            inst.version = binary_version(Path::new("/usr/bin/etcd"))?;
        }
        _ => {
            switch_current(before)?;
            inst.rolled_back = Some(inst.version.clone());
            inst.version = binary_version(&before.join("etcd"))?;
        }
    }
    inst.previous = None;
    inst.staged = None;
    inst.save()
}
