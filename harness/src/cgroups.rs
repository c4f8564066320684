//! Per-machine cgroups for machines whose PID 1 is systemd.
//!
//! systemd needs a cgroup tree of its own. The controller makes one directory per machine in
//! every hierarchy the host mounts (below the controller's own cgroup there, in a
//! `charm-harness/` folder), moves the machine's launcher into them, and the launcher enters a
//! cgroup namespace, so the machine's systemd sees its directory as the root. The directories
//! are removed (deepest first) once the machine's processes are gone.

use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
/// The folder, in every hierarchy, that holds the controllers' machine cgroups.
pub const FOLDER: &str = "charm-harness";

/// One mounted hierarchy: its mount point and where this process sits in it.
#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    own: String,
}

/// The hierarchies of this process (from /proc/self/cgroup) that are mounted at the usual
/// places: `/sys/fs/cgroup/<controllers>` for v1, `/sys/fs/cgroup/unified` (hybrid) or
/// `/sys/fs/cgroup` (pure v2) for v2. `cpuset` is left out: a new cpuset cgroup has no CPUs
/// until configured, and the machine needs no cpuset of its own.
fn hierarchies() -> Result<Vec<Hierarchy>> {
    let text = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let mut out = vec![];
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if ctrls.is_empty() {
            let hybrid = Path::new(ROOT).join("unified");
            if hybrid.join("cgroup.procs").exists() {
                hybrid
            } else {
                PathBuf::from(ROOT)
            }
        } else {
            if ctrls.split(',').any(|c| c == "cpuset") {
                continue;
            }
            Path::new(ROOT).join(ctrls.trim_start_matches("name="))
        };
        if mount.join("cgroup.procs").exists() {
            out.push(Hierarchy {
                mount,
                own: path.trim_start_matches('/').to_string(),
            });
        }
    }
    Ok(out)
}

/// The directories of one machine, one per hierarchy.
pub fn machine_dirs(name: &str) -> Result<Vec<PathBuf>> {
    Ok(hierarchies()?
        .into_iter()
        .map(|h| h.mount.join(&h.own).join(FOLDER).join(name))
        .collect())
}

/// Creates a machine's cgroups and opens their `cgroup.procs` for the launcher to join.
pub fn create(name: &str) -> Result<Vec<OwnedFd>> {
    let mut fds = vec![];
    for dir in machine_dirs(name)? {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating cgroup {}", dir.display()))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .with_context(|| format!("opening {}/cgroup.procs", dir.display()))?;
        fds.push(OwnedFd::from(f));
    }
    Ok(fds)
}

/// Moves the calling process into the cgroups whose `cgroup.procs` are open in `fds`.
/// Only raw `write` calls: this runs between fork and exec of a multi-threaded process.
pub fn join_raw(fds: &[i32]) -> std::io::Result<()> {
    for fd in fds {
        // "0" names the writing process, in v1 and v2 alike.
        let r = unsafe { libc::write(*fd, b"0".as_ptr().cast(), 1) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn raw_fds(fds: &[OwnedFd]) -> Vec<i32> {
    fds.iter().map(|f| f.as_raw_fd()).collect()
}

/// Removes a machine's cgroups, children first. Waits (a few seconds at most) for the
/// kernel to let go of processes that were just killed.
pub fn remove(name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = machine_dirs(name)?;
    // A controller that ran in another cgroup (one killed, then cleaned up from elsewhere)
    // made the machine's directories below its own path, not this process's.
    for h in hierarchies()? {
        find_folders(&h.mount, name, 8, &mut found);
    }
    found.sort();
    found.dedup();
    for dir in found {
        if !dir.exists() {
            continue;
        }
        let mut dirs = vec![];
        collect_dirs(&dir, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            loop {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(e).with_context(|| format!("removing cgroup {}", d.display()))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
    Ok(())
}

/// Every `charm-harness/<name>` directory below `dir`, down to `depth` levels (the
/// machines' own trees below those folders are not walked).
fn find_folders(dir: &Path, name: &str, depth: u32, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let path = e.path();
        if e.file_name() == FOLDER {
            let machine = path.join(name);
            if machine.is_dir() {
                out.push(machine);
            }
        } else {
            find_folders(&path, name, depth - 1, out);
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
        }
    }
}
