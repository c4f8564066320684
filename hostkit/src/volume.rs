//! A block device the machine is given (a cloud volume, a loop device): what it holds, a
//! filesystem made on it only when it holds nothing, mounted at a directory, and named in
//! /etc/fstab by its filesystem's UUID (a device's name may change at the next boot).
//!
//! Probing and formatting are util-linux's `blkid` and e2fsprogs' `mkfs.ext4`, the tools
//! every Ubuntu image has; mounting is the mount(2) call itself.

use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, umount, MsFlags};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

pub const FSTAB: &str = "/etc/fstab";

/// What `blkid --probe` finds on a device.
#[derive(Debug, Default, PartialEq)]
pub struct Probe {
    /// `ext4`, `xfs`, `LVM2_member`, `dos` …; empty when the device holds nothing
    pub kind: String,
    /// `filesystem`, `raid`, `crypto`, `other` …
    pub usage: String,
    pub uuid: String,
}

impl Probe {
    pub fn blank(&self) -> bool {
        self.kind.is_empty() && self.usage.is_empty()
    }
    pub fn filesystem(&self) -> bool {
        self.usage == "filesystem" && !self.kind.is_empty() && !self.uuid.is_empty()
    }
}

/// Reads `blkid -o export` output (`KEY=value` lines).
pub fn parse_probe(text: &str) -> Probe {
    let mut p = Probe::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("TYPE", v)) => p.kind = v.to_string(),
            Some(("USAGE", v)) => p.usage = v.to_string(),
            Some(("UUID", v)) => p.uuid = v.to_string(),
            // A partition table says so in PTTYPE: not blank either.
            Some(("PTTYPE", v)) if p.kind.is_empty() => {
                p.kind = v.to_string();
                p.usage = "partition table".into();
            }
            _ => {}
        }
    }
    p
}

/// The device `dev` must be a block device.
fn block_device(dev: &str) -> Result<std::fs::Metadata> {
    let md = std::fs::metadata(dev).with_context(|| format!("reading {dev}"))?;
    if !md.file_type().is_block_device() {
        bail!("{dev} is not a block device");
    }
    Ok(md)
}

/// What the device holds, read from the device itself (not udev's cache). blkid's exit
/// status 2 is "nothing found": a blank device.
pub fn probe(dev: &str) -> Result<Probe> {
    block_device(dev)?;
    let out = Command::new("blkid")
        .args(["--probe", "-o", "export", dev])
        .output()
        .context("running blkid")?;
    match out.status.code() {
        Some(0) => Ok(parse_probe(&String::from_utf8_lossy(&out.stdout))),
        Some(2) => Ok(Probe::default()),
        _ => bail!(
            "blkid could not read {dev}: {}",
            crate::text::bounded(String::from_utf8_lossy(&out.stderr).trim(), 300)
        ),
    }
}

/// Makes an ext4 filesystem on `dev`, which must be blank (probed again right before: a
/// device that holds anything is never formatted).
pub fn format_ext4(dev: &str, label: &str) -> Result<Probe> {
    let before = probe(dev)?;
    if !before.blank() {
        bail!(
            "{dev} is not blank (it holds {} {}): it is not formatted",
            before.usage,
            before.kind
        );
    }
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-L", label, dev])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running mkfs.ext4")?;
    if !out.status.success() {
        bail!(
            "mkfs.ext4 {dev} failed: {}",
            crate::text::bounded(String::from_utf8_lossy(&out.stderr).trim(), 300)
        );
    }
    let after = probe(dev)?;
    if !after.filesystem() {
        bail!("{dev} holds no filesystem after mkfs.ext4");
    }
    Ok(after)
}

/// Whether `dir` is the root of a mount (its device differs from its parent's).
pub fn is_mount_point(dir: &Path) -> Result<bool> {
    let md = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let pmd = std::fs::metadata(parent).with_context(|| format!("reading {}", parent.display()))?;
    Ok(md.dev() != pmd.dev() || md.ino() == pmd.ino())
}

/// Whether `dir` is mounted from the block device `dev`.
pub fn mounted_from(dir: &Path, dev: &str) -> Result<bool> {
    let rdev = block_device(dev)?.rdev();
    Ok(is_mount_point(dir)? && std::fs::metadata(dir)?.dev() == rdev)
}

/// Mounts the filesystem `fstype` of `dev` at `dir` (made if missing).
pub fn mount_at(dev: &str, dir: &Path, fstype: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    mount(
        Some(Path::new(dev)),
        dir,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting {dev} at {}", dir.display()))
}

/// Unmounts `dir` (nothing when it is no mount point). A filesystem still in use is an
/// error (EBUSY), never a lazy unmount.
pub fn unmount(dir: &Path) -> Result<()> {
    if !is_mount_point(dir)? {
        return Ok(());
    }
    umount(dir).with_context(|| format!("unmounting {}", dir.display()))
}

/// `fstab` with `dir` mounted from the filesystem `uuid`: a line for `dir` naming another
/// source is replaced, one naming the same UUID is kept as it is (whoever wrote it), and
/// every other line is untouched. `nofail`: a volume missing at boot does not hold the
/// boot up (what needs it says so with `RequiresMountsFor=`).
pub fn fstab_with(fstab: &str, uuid: &str, dir: &str, fstype: &str) -> String {
    let mine = format!("UUID={uuid} {dir} {fstype} defaults,nofail 0 2");
    let mut out = String::new();
    let mut placed = false;
    for line in fstab.lines() {
        match fstab_entry(line) {
            Some((src, at)) if at == dir => {
                if !placed {
                    if src == format!("UUID={uuid}") {
                        out.push_str(line);
                    } else {
                        out.push_str(&mine);
                    }
                    out.push('\n');
                    placed = true;
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !placed {
        out.push_str(&mine);
        out.push('\n');
    }
    out
}

/// `fstab` without any line that mounts something at `dir`.
pub fn fstab_without(fstab: &str, dir: &str) -> String {
    let mut out = String::new();
    for line in fstab.lines() {
        if fstab_entry(line).is_some_and(|(_, at)| at == dir) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The source and mount point of an fstab line (None for comments and blank lines).
fn fstab_entry(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut f = line.split_whitespace();
    Some((f.next()?, f.next()?))
}

/// Rewrites /etc/fstab with `change` applied (atomically, 0644), when that changes it.
pub fn edit_fstab(change: impl FnOnce(&str) -> String) -> Result<()> {
    let text = match std::fs::read_to_string(FSTAB) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).context("reading /etc/fstab"),
    };
    let new = change(&text);
    if new != text {
        crate::fs::write_file(Path::new(FSTAB), new.as_bytes(), 0o644)
            .map_err(|e| anyhow!("writing /etc/fstab: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkid_answers_are_read_and_a_partition_table_is_not_blank() {
        let p = parse_probe(
            "DEVNAME=/dev/loop3\nUUID=1b2c\nVERSION=1.0\nTYPE=ext4\nUSAGE=filesystem\n",
        );
        assert!(p.filesystem() && !p.blank());
        assert_eq!((p.kind.as_str(), p.uuid.as_str()), ("ext4", "1b2c"));
        let p = parse_probe("DEVNAME=/dev/vdb\nPTUUID=ab\nPTTYPE=gpt\n");
        assert!(!p.blank() && !p.filesystem(), "{p:?}");
        let p = parse_probe("DEVNAME=/dev/vdb\nTYPE=LVM2_member\nUSAGE=raid\nUUID=x\n");
        assert!(!p.blank() && !p.filesystem());
        assert!(parse_probe("").blank());
    }

    #[test]
    fn fstab_gets_one_line_for_the_mount_point_and_keeps_every_other() {
        let base =
            "# /etc/fstab\nUUID=root / ext4 errors=remount-ro 0 1\n\n/swap none swap sw 0 0\n";
        let with = fstab_with(base, "abc", "/media/etcd", "ext4");
        assert_eq!(
            with,
            format!("{base}UUID=abc /media/etcd ext4 defaults,nofail 0 2\n")
        );
        // Again: nothing changes.
        assert_eq!(fstab_with(&with, "abc", "/media/etcd", "ext4"), with);
        // Another writer's line for the same filesystem is kept as it is; one for another
        // source is replaced, and a duplicate goes.
        let theirs = format!("{base}UUID=abc /media/etcd ext4 defaults 0 0\n");
        assert_eq!(fstab_with(&theirs, "abc", "/media/etcd", "ext4"), theirs);
        let stale = format!("{base}/dev/vdb /media/etcd ext4 defaults 0 0\nUUID=old /media/etcd ext4 defaults 0 0\n");
        assert_eq!(fstab_with(&stale, "abc", "/media/etcd", "ext4"), with);
        assert_eq!(fstab_without(&with, "/media/etcd"), base);
        assert_eq!(fstab_without(base, "/media/etcd"), base);
        // A mount point only starting the same is another.
        let other = format!("{base}UUID=z /media/etcd2 ext4 defaults 0 0\n");
        assert_eq!(fstab_without(&other, "/media/etcd"), other);
    }

    #[test]
    fn a_file_is_no_block_device_and_the_root_is_a_mount_point() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = probe(f.path().to_str().unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("is not a block device"), "{e:#}");
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(!is_mount_point(Path::new("/nonexistent/dir")).unwrap());
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("x");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mount_point(&sub).unwrap());
    }

    /// A loop device over a temporary image, detached when dropped (root only).
    struct Loop(String, tempfile::TempDir);
    impl Loop {
        fn new() -> Loop {
            let d = tempfile::tempdir().unwrap();
            let img = d.path().join("img");
            std::fs::File::create(&img)
                .unwrap()
                .set_len(32 << 20)
                .unwrap();
            let out = Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&img)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Loop(String::from_utf8(out.stdout).unwrap().trim().to_string(), d)
        }
    }
    impl Drop for Loop {
        fn drop(&mut self) {
            // A test's cleanup: a device it could not detach is named by tests/run.sh's
            // check for what the tests left behind.
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }

    /// A real device: a blank one is formatted and mounted; one that holds a filesystem is
    /// never formatted again (its UUID, and so its data, stays).
    #[test]
    fn a_blank_device_is_formatted_once_and_a_formatted_one_never_again() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: loop devices need root");
            return;
        }
        let dev = Loop::new();
        assert!(probe(&dev.0).unwrap().blank());
        let made = format_ext4(&dev.0, "test").unwrap();
        assert_eq!(made.kind, "ext4");
        let e = format_ext4(&dev.0, "test").unwrap_err();
        assert!(format!("{e:#}").contains("is not blank"), "{e:#}");
        assert_eq!(probe(&dev.0).unwrap().uuid, made.uuid, "formatted again");
        let at = dev.1.path().join("mnt");
        assert!(!mounted_from(&at, &dev.0).unwrap());
        mount_at(&dev.0, &at, "ext4").unwrap();
        let unmounted = scopeguard(&at);
        assert!(mounted_from(&at, &dev.0).unwrap() && is_mount_point(&at).unwrap());
        // In use: no lazy unmount.
        let busy = std::fs::File::create(at.join("f")).unwrap();
        assert!(unmount(&at).is_err());
        drop(busy);
        unmount(&at).unwrap();
        assert!(!is_mount_point(&at).unwrap());
        unmount(&at).unwrap();
        drop(unmounted);
    }

    /// Unmounts `at` when the test ends early.
    fn scopeguard(at: &Path) -> impl Drop + '_ {
        struct G<'a>(&'a Path);
        impl Drop for G<'_> {
            fn drop(&mut self) {
                // Only for a test that ended early: its own unmounts are asserted, and
                // here a mount already gone is the normal case.
                let _ = umount(self.0);
            }
        }
        G(at)
    }
}
