//! Booting a machine whose PID 1 is systemd, as on a cloud image.
//!
//! The launcher (`charm-harness machine-agent --kind systemd`) starts as PID 1 of fresh mount,
//! PID, UTS, IPC, network and cgroup namespaces. It builds the machine's root on a tmpfs: the
//! host's /etc, /usr, /var, /opt, /home, /root and /srv as writable overlays (the same upper
//! layers as a `namespace` machine, so the disk survives reboots), the usual top-level links,
//! read-only proc-backed /sys, a cgroup tree of its own (systemd's hierarchies writable), a
//! small /dev, tmpfs /run and /tmp; then masks the host's services that have no place on a
//! fresh machine, installs the machine agent as a systemd service, pivots into the new root
//! and execs systemd. The agent service answers the controller on the same socket as a
//! `namespace` machine's agent does. Facts behind each step: shared/machines.md.

use crate::proto::{MACHINE_DIR, MACHINE_SOCKET_DIR};
use crate::rootfs::{install_tools, mount, mount_overlays, write_identity};
use anyhow::{Context, Result};
use nix::mount::MsFlags;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Host units that are enabled on this host's image but have no place on a fresh machine
/// (no console, no display, no database), or would race the tests (apt timers).
const MASKED: &[&str] = &[
    "console-getty.service",
    "getty@tty1.service",
    "postgresql.service",
    "systemd-timesyncd.service",
    "systemd-pstore.service",
    "e2scrub_reap.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "man-db.timer",
];

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the machine's root and execs systemd (in a mount namespace whose mounts are
/// already private). Returns only on failure.
pub fn boot(dir: &Path, home: &Path, hostname: &str, address: &str, machine: u32) -> Result<()> {
    let root = dir.join("rootfs");
    make_root(dir, &root)?;
    mount_kernel_filesystems(&root)?;
    // The controller's socket, and this machine's directory (the agent's socket).
    for (src, inside) in [
        (home.join("run"), MACHINE_SOCKET_DIR),
        (dir.to_path_buf(), MACHINE_DIR),
    ] {
        let target = root.join(inside.trim_start_matches('/'));
        std::fs::create_dir_all(&target)?;
        mount(path(&src), path(&target), None, MsFlags::MS_BIND, None)?;
    }
    let agent = install_tools(&root, machine)?;
    nix::unistd::sethostname(hostname)?;
    write_identity(&root, hostname, address)?;
    let machine_id = root.join("etc/machine-id");
    if !dir.join("layers/upper/etc/machine-id").exists() {
        let id: u128 = rand::random();
        std::fs::write(&machine_id, format!("{id:032x}\n"))?;
    }
    configure_systemd(&root, &agent)?;
    exec_systemd(&root)
}

/// The machine's root: a tmpfs with the top-level directories, the host's relative links
/// (bin -> usr/bin and the like), the overlays of the host's system dirs, and /snap of its own
/// (snapd keeps its mounts' targets there across reboots).
fn make_root(dir: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(root)?;
    mount(
        "tmpfs",
        path(root),
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )?;
    for d in [
        "etc", "usr", "var", "opt", "home", "root", "srv", "proc", "sys", "dev", "run", "tmp",
        "mnt", "media", "boot", "snap",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    for e in std::fs::read_dir("/")?.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            if target.is_relative() {
                let at = root.join(e.file_name());
                symlink(&target, &at).with_context(|| format!("linking {}", at.display()))?;
            }
        }
    }
    let layers = dir.join("layers");
    mount_overlays(&layers, root)?;
    let snap = layers.join("snap");
    std::fs::create_dir_all(&snap)?;
    mount(
        path(&snap),
        path(&root.join("snap")),
        None,
        MsFlags::MS_BIND,
        None,
    )?;
    Ok(())
}

/// /proc, /sys (read-only) with the machine's cgroup tree, /dev, and fresh /run and /tmp.
fn mount_kernel_filesystems(root: &Path) -> Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount("proc", path(&root.join("proc")), Some("proc"), nodev, None)?;
    mount(
        "sysfs",
        path(&root.join("sys")),
        Some("sysfs"),
        nodev | MsFlags::MS_RDONLY,
        None,
    )?;
    mount_cgroups(&root.join("sys/fs/cgroup"))?;
    make_dev(&root.join("dev"))?;
    let private = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        "tmpfs",
        path(&root.join("run")),
        Some("tmpfs"),
        private,
        Some("mode=755"),
    )?;
    mount(
        "tmpfs",
        path(&root.join("tmp")),
        Some("tmpfs"),
        private,
        Some("mode=1777"),
    )?;
    Ok(())
}

/// Into the new root (pivoted with the old root stacked under it, which is then detached)
/// and systemd as this process: it does not return.
fn exec_systemd(root: &Path) -> Result<()> {
    nix::unistd::chdir(root)?;
    nix::unistd::pivot_root(".", ".").context("pivot_root into the machine's root")?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .context("detaching the host's root")?;
    nix::unistd::chdir("/")?;
    let prog = std::ffi::CString::new("/lib/systemd/systemd")?;
    let env = [
        std::ffi::CString::new("container=charm-harness")?,
        std::ffi::CString::new(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )?,
    ];
    nix::unistd::execve(&prog, std::slice::from_ref(&prog), &env)
        .context("exec /lib/systemd/systemd")?;
    unreachable!()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or("/nonexistent")
}

/// A tmpfs with every hierarchy this namespace sees, rooted at the machine's own cgroups.
/// systemd's own hierarchies (`name=systemd`, the unified one) and the freezer and devices
/// controllers (snapd's) are writable; the others read-only. A pure v2 host gets cgroup2.
fn mount_cgroups(target: &Path) -> Result<()> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let v1 = text.lines().any(|l| !l.starts_with("0::"));
    if !v1 {
        return mount(
            "cgroup2",
            path(target),
            Some("cgroup2"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        );
    }
    mount(
        "tmpfs",
        path(target),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls)) = (parts.next(), parts.next()) else {
            continue;
        };
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if ctrls.is_empty() {
            let d = target.join("unified");
            std::fs::create_dir_all(&d)?;
            mount("cgroup2", path(&d), Some("cgroup2"), flags, None)?;
            continue;
        }
        let d = target.join(ctrls.trim_start_matches("name="));
        std::fs::create_dir_all(&d)?;
        let writable = ctrls
            .split(',')
            .any(|c| matches!(c, "name=systemd" | "freezer" | "devices"));
        let flags = if writable {
            flags
        } else {
            flags | MsFlags::MS_RDONLY
        };
        mount("cgroup", path(&d), Some("cgroup"), flags, Some(ctrls))?;
    }
    // Co-mounted controllers have links such as cpu -> cpu,cpuacct on a server; nothing to
    // add here, as each line above names its own directory.
    mount(
        "none",
        path(target),
        None,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
}

/// A small /dev: the host's harmless character devices bound in, a private devpts, shm and
/// mqueue, and loop device nodes (the kernel's loop devices are shared by the host; snapd
/// finds free ones through /dev/loop-control).
fn make_dev(dev: &Path) -> Result<()> {
    mount(
        "tmpfs",
        path(dev),
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755"),
    )?;
    for d in DEVICES {
        let t = dev.join(d);
        std::fs::write(&t, b"")?;
        mount(&format!("/dev/{d}"), path(&t), None, MsFlags::MS_BIND, None)?;
    }
    std::fs::create_dir_all(dev.join("pts"))?;
    mount(
        "devpts",
        path(&dev.join("pts")),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )?;
    symlink("pts/ptmx", dev.join("ptmx"))?;
    std::fs::create_dir_all(dev.join("shm"))?;
    mount(
        "tmpfs",
        path(&dev.join("shm")),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    std::fs::create_dir_all(dev.join("mqueue"))?;
    // Optional: systemd mounts mqueue itself where this fails, and nothing here needs it.
    let _ = mount(
        "mqueue",
        path(&dev.join("mqueue")),
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    );
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        symlink(target, dev.join(name))?;
    }
    // Loop device nodes, as a cloud machine has them (snapd mounts snaps on them).
    {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let perm = Mode::from_bits_truncate(0o660);
        mknod(
            &dev.join("loop-control"),
            SFlag::S_IFCHR,
            perm,
            makedev(10, 237),
        )?;
        for i in 0..64u64 {
            mknod(
                &dev.join(format!("loop{i}")),
                SFlag::S_IFBLK,
                perm,
                makedev(7, i),
            )?;
        }
    }
    Ok(())
}

/// The machine's systemd configuration: multi-user as the default target, the host's
/// out-of-place units masked, and the machine agent as a service.
fn configure_systemd(root: &Path, agent: &Path) -> Result<()> {
    let etc = root.join("etc/systemd/system");
    std::fs::create_dir_all(etc.join("multi-user.target.wants"))?;
    let link = |target: &str, at: PathBuf| -> Result<()> {
        if std::fs::read_link(&at)
            .map(|t| t != Path::new(target))
            .unwrap_or(true)
        {
            // Absent is fine; any other failure makes the symlink below fail, with its path.
            let _ = std::fs::remove_file(&at);
            symlink(target, &at).with_context(|| format!("linking {}", at.display()))?;
        }
        Ok(())
    };
    link(
        "/lib/systemd/system/multi-user.target",
        etc.join("default.target"),
    )?;
    for unit in MASKED {
        link("/dev/null", etc.join(unit))?;
    }
    // What this kind of machine needs for snapd (shared/machines.md §3): udev runs although
    // /sys is read-only (udevd gets no host uevents anyway), and snapd gives up on the
    // unreachable store at once and stops within 10 s.
    for unit in [
        "systemd-udevd.service",
        "systemd-udevd-control.socket",
        "systemd-udevd-kernel.socket",
    ] {
        let d = etc.join(format!("{unit}.d"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(
            d.join("harness.conf"),
            "[Unit]\nConditionPathIsReadWrite=\n",
        )?;
    }
    let d = etc.join("snapd.service.d");
    std::fs::create_dir_all(&d)?;
    std::fs::write(
        d.join("harness.conf"),
        "[Service]\nTimeoutStopSec=10s\nEnvironment=SNAPPY_TESTING=1 SNAPD_CATALOG_REFRESH=0\n",
    )?;
    let inside = Path::new("/").join(agent.strip_prefix(root)?);
    let unit = format!(
        "[Unit]\n\
         Description=charm-harness machine agent (runs hooks, actions and exec for the controller)\n\
         After=local-fs.target\n\n\
         [Service]\n\
         ExecStart={} machine-agent --serve {MACHINE_DIR}/agent.sock\n\
         Restart=always\n\
         RestartSec=1s\n\
         # Hooks start daemons of their own; restarting the agent must not end them.\n\
         KillMode=process\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        inside.display()
    );
    std::fs::write(etc.join("harness-agent.service"), unit)?;
    link(
        "/etc/systemd/system/harness-agent.service",
        etc.join("multi-user.target.wants/harness-agent.service"),
    )
}
