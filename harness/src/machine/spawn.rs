//! A machine's processes: its agent spawned in its namespaces, its directories and socket,
//! and its processes ended.

use crate::net::Net;
use crate::state::Kind;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Spawned {
    pub pid: u32,
}

/// Starts the machine agent inside fresh namespaces. Returns the host PID of the `unshare`
/// parent; SIGKILL to it takes the whole machine down (its child, PID 1, dies with it).
pub fn spawn_agent(
    home: &Path,
    model_dir: &Path,
    net: &Net,
    machine: u32,
    hostname: &str,
    kind: Kind,
) -> Result<Spawned> {
    let dir = machine_dir(model_dir, machine);
    // A systemd machine gets cgroups of its own, joined between fork and exec.
    let cgroups = if kind.boots_systemd() {
        crate::cgroups::create(&net.netns(machine))?
    } else {
        vec![]
    };
    let cgroup_fds = crate::cgroups::raw_fds(&cgroups);
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", net.netns(machine)))
        .args([
            "--",
            "unshare",
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
        ])
        .args(if kind.boots_systemd() {
            &["--ipc", "--cgroup"][..]
        } else {
            &[]
        })
        .arg("--")
        .arg(&exe)
        .arg("machine-agent")
        .arg("--dir")
        .arg(&dir)
        .arg("--home")
        .arg(home)
        .arg("--hostname")
        .arg(hostname)
        .arg("--address")
        .arg(net.machine_address(machine))
        .arg("--machine")
        .arg(machine.to_string())
        .arg("--kind")
        .arg(kind.name())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    use std::os::unix::process::CommandExt;
    // Detach from the controller's session so a controller restart does not end machines.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            crate::cgroups::join_raw(&cgroup_fds)
        });
    }
    let child = cmd
        .spawn()
        .context("starting the machine agent (nsenter, unshare from util-linux)")?;
    drop(cgroups);
    let pid = child.id();
    // The agent is reaped by a thread so it never lingers as a zombie of the controller.
    std::thread::spawn(move || {
        let mut c = child;
        let _ = c.wait();
    });
    Ok(Spawned { pid })
}

/// A machine's directory in its model's (its agent's socket and log).
pub fn machine_dir(model_dir: &Path, machine: u32) -> PathBuf {
    model_dir.join("machines").join(machine.to_string())
}

pub fn agent_socket(model_dir: &Path, machine: u32) -> PathBuf {
    machine_dir(model_dir, machine).join("agent.sock")
}

/// Kills every process of a machine by killing its PID 1 (and the unshare parent).
pub fn kill_machine(unshare_pid: Option<u32>, init_pid: Option<u32>) {
    for pid in [init_pid, unshare_pid].into_iter().flatten() {
        if pid > 1 {
            // ESRCH: already gone, which is the aim.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
    }
}

/// Kills every process that lives in a machine's network namespace, found by the
/// namespace itself rather than by remembered PIDs (which may have been reused since the
/// controller that knew them went away). Waits until they are gone (10 s at most).
pub fn kill_namespace_processes(net: &Net, machine: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ns_path = Path::new("/run/netns").join(net.netns(machine));
    let ns = match std::fs::metadata(&ns_path) {
        Ok(m) => (m.dev(), m.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", ns_path.display())),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut killed = std::collections::BTreeSet::new();
    loop {
        let inside: Vec<i32> = std::fs::read_dir("/proc")
            .context("listing /proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .map(|m| (m.dev(), m.ino()) == ns)
                    .unwrap_or(false)
            })
            .collect();
        if inside.is_empty() {
            // Dead, and reaped too unless their new parent is slow about it (a zombie holds
            // nothing of the machine's).
            while killed
                .iter()
                .any(|p| Path::new(&format!("/proc/{p}")).exists())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "processes {inside:?} of machine {machine} ({}) outlived SIGKILL for 10 s",
                net.netns(machine)
            );
        }
        for pid in inside {
            killed.insert(pid);
            // A process gone meanwhile is fine; one that stays fails the deadline above.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `pid` runs (not PID 0 or 1, not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    pid > 1 && hostkit::process::alive(pid)
}

// ---------------------------------------------------------------------------------------
// Agent side

/// The direct children of a process (host view), e.g. the PID 1 that `unshare --fork` started.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}
