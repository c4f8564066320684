//! Storage pools, as Juju's machine agent provides them: `rootfs` (a directory on the
//! machine's disk) and `loop` (a sparse file of the asked size, attached as a loop block
//! device). A `filesystem` store on `loop` is formatted ext4 once and mounted at the
//! storage's location inside the machine before its `<name>-storage-attached` hook runs;
//! a `block` store is handed to the charm as Juju's loop provider hands it one, a raw
//! device never formatted or mounted here: a node in the machine's /dev (`/dev/loop3`, what
//! `storage-get location` answers), kept attached by a holder process inside the machine
//! that ends with the machine or the storage's removal. The image file lives in the model's
//! directory on the host; the mount lives in the machine's mount namespace, and the loop
//! device is set to clear itself when that mount goes (the machine stops, crashes or the
//! storage is removed), so nothing outlives the machine but the image, which goes with the
//! model.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pools this controller offers: (name, provider).
pub const POOLS: &[(&str, &str)] = &[("loop", "loop"), ("rootfs", "rootfs")];
pub use crate::state::DEFAULT_SIZE_MIB;

/// A storage directive `pool,size,count` (each optional, any order): `loop,1G`, `10G`,
/// `rootfs`, `2`. An unknown pool is refused here, naming the pools that exist.
pub fn parse_directive(spec: &str) -> Result<(Option<String>, Option<u64>, Option<u32>)> {
    let (mut pool, mut size, mut count) = (None, None, None);
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        if let Ok(n) = part.parse::<u32>() {
            count = Some(n);
        } else if let Some(mib) = parse_size(part) {
            size = Some(mib);
        } else if POOLS.iter().any(|(n, _)| *n == part) {
            pool = Some(part.to_string());
        } else if part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!(
                "pool {part:?} not found: this controller's pools are {} (juju storage-pools)",
                POOLS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            );
        } else {
            bail!(
                "storage directive {spec:?}: {part:?} is not a pool, a size (e.g. 1G) or a count"
            );
        }
    }
    Ok((pool, size, count))
}

/// `512M`, `1G`, `1.5G`, `2T` in MiB (Juju's units are powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let mult = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "M" => 1.0,
        "G" => 1024.0,
        "T" => 1024.0 * 1024.0,
        _ => return None,
    };
    (n > 0.0).then(|| (n * mult).ceil() as u64)
}

/// The host file behind a loop volume.
pub fn image(model_dir: &Path, id: &str) -> PathBuf {
    model_dir
        .join("storage")
        .join(format!("{}.img", id.replace('/', "-")))
}

fn run(what: &str, c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn in_machine(init_pid: u32, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &init_pid.to_string(), "-m", "--"]).args(args);
    c
}

/// Whether `location` is a mount point in the machine whose PID 1 is `init_pid`.
pub fn mounted(init_pid: u32, location: &str) -> Result<bool> {
    let info = std::fs::read_to_string(format!("/proc/{init_pid}/mountinfo"))
        .with_context(|| format!("reading the mounts of machine process {init_pid}"))?;
    Ok(info.lines().any(|l| l.split(' ').nth(4) == Some(location)))
}

/// Attaches `image` (made `size_mib` large when new) to a loop device and runs `use_it` with
/// the device, its minor number and whether the image is new; then marks the device to clear
/// itself (`losetup -d`): it stays while whatever `use_it` left holding it (a mount, a
/// process) does, and goes at once when nothing does.
fn with_loop_device(
    image: &Path,
    size_mib: u64,
    use_it: impl FnOnce(&str, &str, bool) -> Result<()>,
) -> Result<String> {
    if let Some(dir) = image.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let fresh = !image.exists();
    if fresh {
        let f = std::fs::File::create(image)
            .with_context(|| format!("creating {}", image.display()))?;
        f.set_len(size_mib * 1024 * 1024)?;
    }
    let dev = run(
        "losetup",
        Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image),
    )?;
    let result = dev
        .strip_prefix("/dev/loop")
        .ok_or_else(|| anyhow!("losetup answered {dev:?}, not a /dev/loopN"))
        .and_then(|minor| use_it(&dev, minor, fresh));
    let detached = run("losetup -d", Command::new("losetup").args(["-d", &dev]));
    result?;
    detached.map(|_| dev)
}

/// The shell line that makes the loop device's node in a machine's /dev when it lacks one.
fn mknod_line(dev: &str, minor: &str) -> String {
    format!("[ -b {dev} ] || mknod {dev} b 7 {minor}")
}

/// Mounts the loop volume `image` (made `size_mib` large and formatted on first use) at
/// `location` in the machine. Does nothing when it is mounted already.
pub fn attach_loop(init_pid: u32, image: &Path, size_mib: u64, location: &str) -> Result<()> {
    if mounted(init_pid, location)? {
        return Ok(());
    }
    // Mounted, the device clears itself when the mount goes.
    with_loop_device(image, size_mib, |dev, minor, fresh| {
        if fresh {
            run(
                "mkfs.ext4",
                Command::new("mkfs.ext4").args(["-q", "-F", "-E", "nodiscard", dev]),
            )?;
        }
        run(
            "mkdir in the machine",
            &mut in_machine(init_pid, &["mkdir", "-p", location]),
        )?;
        run(
            "mknod in the machine",
            &mut in_machine(init_pid, &["sh", "-c", &mknod_line(dev, minor)]),
        )?;
        run(
            "mount in the machine",
            &mut in_machine(init_pid, &["mount", dev, location]),
        )?;
        Ok(())
    })
    .map(|_| ())
}

/// The process name of the holder that keeps a block volume's loop device attached.
fn holder_name(id: &str) -> String {
    format!("juju-storage-{}", id.replace('/', "-"))
}

/// A shell script run in the machine's mount and PID namespaces (what it starts in the
/// background ends with the machine).
fn machine_shell(init_pid: u32, script: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.args([
        "-t",
        &init_pid.to_string(),
        "-m",
        "-p",
        "--",
        "sh",
        "-c",
        script,
    ]);
    c
}

/// The loop device (`loop3`) `image` is attached to whose node the machine has: a block
/// volume already in place. None when there is none.
fn block_in_place(init_pid: u32, image: &Path) -> Option<String> {
    let out = run("losetup -j", Command::new("losetup").arg("-j").arg(image)).ok()?;
    // Lines such as "/dev/loop3: [0021]:7504142 (/path/to/image)".
    let dev = out.lines().next()?.split(':').next()?.to_string();
    let in_machine_too = in_machine(init_pid, &["test", "-b", &dev])
        .status()
        .is_ok_and(|s| s.success());
    in_machine_too.then(|| dev.trim_start_matches("/dev/").to_string())
}

/// Attaches the loop volume `image` (made `size_mib` large on first use, never formatted)
/// as a raw block device of the machine, as Juju's loop provider does for a block store
/// (internal/storage/provider/loop.go `attachVolume`: a loop device, its name the
/// attachment's `DeviceName`; a filesystem is made only for a filesystem store,
/// managedfs.go). Returns the device's name (`loop3`); one in place is kept.
pub fn attach_block(init_pid: u32, image: &Path, size_mib: u64, id: &str) -> Result<String> {
    if let Some(dev) = block_in_place(init_pid, image) {
        return Ok(dev);
    }
    // The holder keeps the device open from inside the machine's PID namespace, so it ends
    // (and the device clears itself) when the machine does.
    let dev = with_loop_device(image, size_mib, |dev, minor, _| {
        let script = format!(
            "{}; setsid bash -c 'exec -a {holder} sleep infinity' < {dev} >/dev/null 2>&1 &",
            mknod_line(dev, minor),
            holder = holder_name(id)
        );
        run(
            "attaching the block device in the machine",
            &mut machine_shell(init_pid, &script),
        )
        .map(|_| ())
    })?;
    Ok(dev.trim_start_matches("/dev/").to_string())
}

/// Releases a block volume: its holder ended (the loop device clears itself once nothing
/// in the machine holds it: a mount the charm left holds it until the machine ends).
pub fn detach_block(init_pid: u32, id: &str) -> Result<()> {
    let script = format!(
        "pkill -x -f '{holder} infinity' || true",
        holder = holder_name(id)
    );
    run(
        "releasing the block device in the machine",
        &mut machine_shell(init_pid, &script),
    )
    .map(|_| ())
}

/// Unmounts the volume at `location` in the machine (its loop device then clears itself).
pub fn detach(init_pid: u32, location: &str) -> Result<()> {
    if mounted(init_pid, location)? {
        run(
            "umount in the machine",
            &mut in_machine(init_pid, &["umount", location]),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_name_pool_size_and_count_in_any_order() {
        assert_eq!(
            parse_directive("loop,1G").unwrap(),
            (Some("loop".into()), Some(1024), None)
        );
        assert_eq!(
            parse_directive("512M,2").unwrap(),
            (None, Some(512), Some(2))
        );
        let e = parse_directive("ebs-ssd,10G").unwrap_err().to_string();
        assert!(
            e.contains("pool \"ebs-ssd\" not found") && e.contains("loop, rootfs"),
            "{e}"
        );
        assert!(parse_directive("loop,1Q!").is_err());
        assert_eq!(parse_size("1.5G"), Some(1536));
        assert_eq!(parse_size("10GiB"), Some(10240));
        assert_eq!(parse_size("0G"), None);
    }
}
