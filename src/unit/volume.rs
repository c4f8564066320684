//! The `data` storage: a block device (`type: block`, as the classic charm declares it, so
//! `juju refresh --switch` from it is allowed). Juju hands the charm a raw device and its
//! name (`storage-get location`: `/dev/vdb`, `/dev/loop3`, a name the next boot may
//! change). The charm makes an ext4 filesystem on it only when it holds nothing at all,
//! mounts it at /media/etcd (the classic charm's place), names it in /etc/fstab by its
//! filesystem's UUID, and keeps etcd's data in /media/etcd/data. A device that holds
//! anything else (a partition table, another volume's signature) is never formatted.
//!
//! Each step is safe to run again after a kill: the fstab line is written before the
//! mount, a mounted device is not probed again, and a release unmounts before it drops the
//! line.

use crate::juju;
use anyhow::{bail, Context, Result};
use etcdkit::{VOLUME_DATA_DIR, VOLUME_MOUNT};
use hostkit::volume;
use std::path::Path;

/// etcd's data directory on the `data` volume `dev`: the volume formatted when blank,
/// mounted at /media/etcd and named in /etc/fstab first when it is not mounted yet.
pub fn data_dir_on(dev: &str) -> Result<String> {
    let mount = Path::new(VOLUME_MOUNT);
    let named = |e: anyhow::Error| e.context(format!("the data storage (device {dev})"));
    if !volume::mounted_from(mount, dev).map_err(named)? {
        if volume::is_mount_point(mount)? {
            bail!(
                "{VOLUME_MOUNT} is mounted from another device than the data storage ({dev}): \
                 the charm mounts its volume there; unmount it (umount {VOLUME_MOUNT}) and \
                 Juju retries the hook"
            );
        }
        let mut found = volume::probe(dev).map_err(named)?;
        if found.blank() {
            juju::log(
                "INFO",
                &format!("the data storage {dev} is blank: making an ext4 filesystem on it"),
            );
            found = volume::format_ext4(dev, "etcd-data").map_err(named)?;
        }
        if !found.filesystem() {
            bail!(
                "the data storage ({dev}) holds {} ({}), not a filesystem: the charm formats \
                 only a blank device and never this one; give the unit a blank volume \
                 (juju remove-storage, then juju add-storage)",
                found.kind,
                found.usage
            );
        }
        volume::edit_fstab(|t| volume::fstab_with(t, &found.uuid, VOLUME_MOUNT, &found.kind))?;
        hostkit::crash::crash_point("volume-in-fstab");
        volume::mount_at(dev, mount, &found.kind).map_err(named)?;
        juju::log(
            "INFO",
            &format!("the data storage {dev} is mounted at {VOLUME_MOUNT}"),
        );
    }
    make_private_dir(VOLUME_DATA_DIR)?;
    Ok(VOLUME_DATA_DIR.to_string())
}

/// etcd's data directory, 0700 (etcd warns about any wider one).
fn make_private_dir(dir: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(dir) {
        Ok(md) if md.is_dir() => {
            if md.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("making {dir} private"))?;
            }
            Ok(())
        }
        Ok(_) => bail!("{dir} is not a directory: move it away and Juju retries the hook"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)
            .with_context(|| format!("making {dir}")),
        Err(e) => Err(e).with_context(|| format!("reading {dir}")),
    }
}

/// The volume is going (`data-storage-detaching`, after the data left it or the member
/// left the cluster): unmounted, then its fstab line removed. A volume etcd still keeps
/// its data on is refused by name; one still in use fails to unmount (EBUSY) and the hook
/// is retried.
pub fn release(etcd_runs_from_it: bool) -> Result<()> {
    if etcd_runs_from_it {
        bail!(
            "etcd still runs from the data storage ({VOLUME_DATA_DIR}): it is not unmounted \
             before the data left it; Juju retries the hook"
        );
    }
    volume::unmount(Path::new(VOLUME_MOUNT))?;
    hostkit::crash::crash_point("volume-unmounted");
    volume::edit_fstab(|t| volume::fstab_without(t, VOLUME_MOUNT))?;
    juju::log(
        "INFO",
        &format!("the data storage is unmounted from {VOLUME_MOUNT} and out of /etc/fstab"),
    );
    Ok(())
}
