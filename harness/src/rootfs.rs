//! A machine's root filesystem as the agent prepares it before anything runs there: the
//! host's directories as overlays, the machine's identity, and the hook tools.

use crate::proto::{MACHINE_TOOLS_BIN, TOOL_NAMES};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The host directories a machine sees as its own writable overlays.
pub const OVERLAID: &[&str] = &["/etc", "/usr", "/var", "/opt", "/home", "/root", "/srv"];

pub fn mount(
    src: &str,
    target: &str,
    fstype: Option<&str>,
    flags: nix::mount::MsFlags,
    data: Option<&str>,
) -> Result<()> {
    nix::mount::mount(Some(src), target, fstype, flags, data)
        .with_context(|| format!("mount {src} on {target}"))
}

/// The host's /etc, /usr, /var, ... as writable overlays under `root`, their upper layers
/// (the machine's disk, kept across reboots) in `layers`.
pub fn mount_overlays(layers: &Path, root: &Path) -> Result<()> {
    for d in OVERLAID {
        if !Path::new(d).is_dir() {
            continue;
        }
        let name = d.trim_start_matches('/');
        let upper = layers.join("upper").join(name);
        let work = layers.join("work").join(name);
        std::fs::create_dir_all(&upper)?;
        std::fs::create_dir_all(&work)?;
        let opts = format!(
            "lowerdir={d},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        let target = root.join(name);
        mount(
            "overlay",
            &target.to_string_lossy(),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(&opts),
        )?;
    }
    Ok(())
}

/// The machine's name in /etc/hostname and its address in /etc/hosts, under `root`.
pub fn write_identity(root: &Path, hostname: &str, address: &str) -> Result<()> {
    std::fs::write(root.join("etc/hostname"), format!("{hostname}\n"))?;
    let hosts_file = root.join("etc/hosts");
    let hosts = std::fs::read_to_string(&hosts_file).unwrap_or_default();
    let line = format!("{address}\t{hostname}\n");
    if !hosts.contains(&line) {
        std::fs::write(&hosts_file, format!("{hosts}{line}"))?;
    }
    Ok(())
}

/// Hook tools under `root`: the controller's binary as `charm-harness`, linked under every
/// tool name and as `jujud` (charmhelpers asks it for the version). Returns the binary's path.
pub fn install_tools(root: &Path, machine: u32) -> Result<PathBuf> {
    let tools = root.join(format!("var/lib/juju/tools/machine-{machine}"));
    let bin_dir = root.join(MACHINE_TOOLS_BIN.trim_start_matches('/'));
    std::fs::create_dir_all(&tools)?;
    std::fs::create_dir_all(&bin_dir)?;
    let exe = tools.join("charm-harness");
    let tmp = tools.join("charm-harness.new");
    std::fs::copy("/proc/self/exe", &tmp)?;
    std::fs::rename(&tmp, &exe)?;
    let inside = Path::new("/").join(exe.strip_prefix(root)?);
    let jujud = tools.join("jujud");
    // Absent is fine; a link that cannot be replaced makes the symlink below fail.
    let _ = std::fs::remove_file(&jujud);
    std::os::unix::fs::symlink(&inside, &jujud)?;
    for t in TOOL_NAMES.iter().chain(["jujud"].iter()) {
        let link = bin_dir.join(t);
        // As above: the symlink reports a link that cannot be replaced.
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&inside, &link)?;
    }
    Ok(exe)
}
