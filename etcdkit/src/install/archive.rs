//! The archive delivery: a release tarball unpacked under /opt/etcd, the `current` link
//! switched now or staged for a rolling turn (`switch`).

use super::common::*;
use super::record::*;
use super::unpack::*;
use std::path::Path;

/// Installs an upstream release tarball. `expected_sha256` (config `archive_sha256`) is
/// checked first. Re-installing the same tarball is a no-op.
/// With `defer_switch` (a running member's upgrade) the new binaries are unpacked and
/// verified but `current` keeps pointing at the running ones until `switch_staged`, in this
/// unit's rolling turn: a restart out of turn (a crash, systemd) runs what ran before.
/// Refuses a version step etcd does not support (a downgrade, a skipped minor, a minor
/// from too early a patch release) from what runs on this unit now, before anything of the
/// new version is put in place.
pub fn install_archive(
    tarball: &Path,
    expected_sha256: Option<&str>,
    label: &str,
    defer_switch: bool,
) -> Result<Installed> {
    let mut inst = install_or_reuse(tarball, expected_sha256, label, defer_switch)?;
    // The same tarball's binaries may wait staged for the unit's rolling turn: asked for
    // no deferral, they are put in place now.
    if !defer_switch {
        switch_staged_now(&mut inst)?;
    }
    Ok(inst)
}

/// `install_archive` before its switch: the record of this very tarball when it is
/// installed already (staged or switched in), else its binaries put in place.
fn install_or_reuse(
    tarball: &Path,
    expected_sha256: Option<&str>,
    label: &str,
    defer_switch: bool,
) -> Result<Installed> {
    // The same file as last time (and the same expected sha256): already verified and installed.
    let stamp = stamp(tarball);
    if let Some(cur) = installed_from(&stamp, expected_sha256) {
        return Ok(cur);
    }
    let sha = sha256_file(tarball).map_err(io(format!("reading {label}")))?;
    if let Some(want) = expected_sha256 {
        if want != sha {
            return Err(InstallError::Bad(format!("{label}: sha256 {sha} does not match archive_sha256 {want}; attach the right tarball or fix the config")));
        }
    }
    if let Some(mut cur) = Installed::load() {
        if cur.delivery == Delivery::Archive
            && cur.source_sha256.as_deref() == Some(sha.as_str())
            && Path::new(&cur.etcd()).exists()
        {
            cur.source_stamp = stamp;
            cur.save()?;
            return Ok(cur);
        }
    }
    let (_staging, bin) = unpack_release(tarball, label)?;
    let version = binary_version(&bin.join("etcd"))?;
    // Every path, the install action's too (M6): a downgrade or a skipped minor is refused
    // before anything of it is put in place.
    refuse_bad_step(&Path::new(OPT_DIR).join("current/etcd"), &version, label)?;
    let final_dir = Path::new(OPT_DIR).join(&version);
    // Move the verified binaries into place; an older copy of the same version is set aside
    // and removed only once the new one is in place.
    let aside = Path::new(OPT_DIR).join(format!(".{version}.old"));
    let _ = std::fs::remove_dir_all(&aside);
    if final_dir.exists() {
        std::fs::rename(&final_dir, &aside).map_err(io("setting the old version aside"))?;
    }
    std::fs::rename(&bin, &final_dir).map_err(io(format!(
        "moving etcd {version} into {}",
        final_dir.display()
    )))?;
    let running = std::fs::read_link(Path::new(OPT_DIR).join("current")).ok();
    let staged = if defer_switch && running.as_deref().is_some_and(|r| r != final_dir) {
        Some(final_dir.display().to_string())
    } else {
        switch_current(&final_dir)?;
        None
    };
    let _ = std::fs::remove_dir_all(&aside);
    let inst = Installed {
        delivery: Delivery::Archive,
        version,
        bin_dir: format!("{OPT_DIR}/current"),
        source_sha256: Some(sha),
        source_stamp: stamp,
        staged,
        rolled_back: None,
        package: None,
        previous: None,
    };
    inst.save()?;
    Ok(inst)
}

/// The install record, when it says this very file (and expected sha256) is what runs.
fn installed_from(stamp: &Option<String>, expected_sha256: Option<&str>) -> Option<Installed> {
    let cur = Installed::load()?;
    let expected_ok = expected_sha256
        .map(|w| cur.source_sha256.as_deref() == Some(w))
        .unwrap_or(true);
    (cur.delivery == Delivery::Archive
        && stamp.is_some()
        && cur.source_stamp == *stamp
        && expected_ok
        && Path::new(&cur.etcd()).exists())
    .then_some(cur)
}

/// The release unpacked defensively into a staging directory under /opt/etcd (removed when
/// the returned guard drops), and the directory holding its binaries, checked complete.
fn unpack_release(tarball: &Path, label: &str) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    std::fs::create_dir_all(OPT_DIR).map_err(io(OPT_DIR))?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(OPT_DIR)
        .map_err(io("staging dir"))?;
    unpack_safely(tarball, staging.path()).map_err(|e| {
        InstallError::Bad(format!(
            "{label} refused: {e}; attach an upstream etcd-vX.Y.Z-linux-amd64.tar.gz"
        ))
    })?;
    let bin = find_bin_dir(staging.path()).ok_or_else(|| InstallError::Bad(format!("{label} is not an etcd release tarball (no etcd binary inside); attach an upstream etcd-vX.Y.Z-linux-amd64.tar.gz")))?;
    if !bin.join("etcdctl").is_file() {
        return Err(InstallError::Bad(format!(
            "{label} has no etcdctl; attach a complete upstream etcd release tarball"
        )));
    }
    Ok((staging, bin))
}

/// Switches staged binaries (of the archive delivery) in at once, outside a rolling turn:
/// `install_archive` not deferred (the install action) on a unit whose roll staged the same
/// tarball. No `previous` is recorded: the caller keeps the way back. Nothing staged:
/// nothing happens.
fn switch_staged_now(inst: &mut Installed) -> Result<()> {
    let Some(dir) = inst.staged.clone() else {
        return Ok(());
    };
    switch_current(Path::new(&dir))?;
    inst.staged = None;
    inst.save()
}

/// Points /opt/etcd/current at `dir` atomically (a new link renamed over the old one).
pub fn switch_current(dir: &Path) -> Result<()> {
    let link = Path::new(OPT_DIR).join("current");
    let tmp = Path::new(OPT_DIR).join(".current.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(dir, &tmp).map_err(io("creating the current link"))?;
    std::fs::rename(&tmp, &link).map_err(io("switching the current link"))
}
