//! Machines made of Linux namespaces.
//!
//! Host side (called by the controller): a bridge per model with a /24 from 10.213.0.0/16, a
//! named network namespace per machine joined to the bridge by a veth pair, and the machine
//! agent started inside it with fresh mount, UTS and PID namespaces (`nsenter` + `unshare`
//! from util-linux). The agent is PID 1 of its machine: killing it ends every process there.
//!
//! Agent side (`charm-harness machine-agent`): writable overlays over the host's /etc, /usr,
//! /var, /opt, /home, /root and /srv whose upper layers live under the controller's home,
//! private /tmp and /run, its own hostname, the hook tools, and a unix socket on which the
//! controller asks it to run processes. Nothing here knows any charm.

use crate::proto::{AgentReply, AgentRequest, MACHINE_SOCKET_DIR};
use crate::rootfs::{install_tools, mount, mount_overlays, write_identity};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a machine boots (model config `harness-machine`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The machine agent is PID 1: fastest, no init system.
    #[default]
    Namespace,
    /// systemd is PID 1 and the machine agent one of its services, as on a cloud image.
    Systemd,
    /// A systemd machine that installs snapd (and the seed snaps) at its first boot.
    Snapd,
}

impl Kind {
    pub const NAMES: &'static str = "namespace, systemd or snapd";

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "namespace" => Some(Kind::Namespace),
            "systemd" => Some(Kind::Systemd),
            "snapd" => Some(Kind::Snapd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Systemd => "systemd",
            Kind::Snapd => "snapd",
        }
    }

    /// systemd is PID 1.
    pub fn boots_systemd(self) -> bool {
        self != Kind::Namespace
    }
}

/// Names of everything the host side creates for one model's network.
#[derive(Clone, Debug)]
pub struct Net {
    pub index: u8,
}

impl Net {
    pub fn bridge(&self) -> String {
        format!("chb{}", self.index)
    }
    pub fn host_address(&self) -> String {
        format!("10.213.{}.1", self.index)
    }
    pub fn machine_address(&self, machine: u32) -> String {
        format!("10.213.{}.{}", self.index, 10 + machine)
    }
    /// The machine's IPv6 unique-local address on eth0, beside its IPv4 one: what LXD's
    /// default bridge (`ipv6.address=auto`) and dual-stack clouds give every machine.
    pub fn machine_address6(&self, machine: u32) -> String {
        format!("fd42:213:{:x}::{:x}", self.index, 10 + machine)
    }
    /// The /64 the machines' IPv6 addresses are in.
    pub fn subnet6(&self) -> String {
        format!("fd42:213:{:x}::/64", self.index)
    }
    /// The address of a machine's second interface (`eth1`, model config
    /// `harness-second-interface`): a second NIC in the same space, as on MAAS.
    pub fn second_address(&self, machine: u32) -> String {
        format!("10.214.{}.{}", self.index, 10 + machine)
    }
    pub fn netns(&self, machine: u32) -> String {
        format!("chb{}m{}", self.index, machine)
    }
    pub fn host_veth(&self, machine: u32) -> String {
        format!("chb{}m{}h", self.index, machine)
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Claims a free bridge index: creating the bridge is the atomic claim, so two controllers
/// never share a subnet.
pub fn create_bridge(preferred: Option<u8>) -> Result<Net> {
    if let Some(i) = preferred {
        let net = Net { index: i };
        if !link_exists(&net.bridge()) {
            setup_bridge(&net)?;
        }
        return Ok(net);
    }
    // Start at a random index so a name just released by one controller is rarely reused at
    // once by another (tests run several controllers side by side).
    let start: u16 = rand::random::<u16>() % 250;
    for k in 0..250u16 {
        let net = Net {
            index: ((start + k) % 250 + 1) as u8,
        };
        if link_exists(&net.bridge()) {
            continue;
        }
        // Creating the bridge is the claim; a concurrent controller's claim fails here.
        if setup_bridge(&net).is_ok() {
            return Ok(net);
        }
    }
    bail!("no free subnet in 10.213.0.0/16: remove unused chb* bridges (ip link del chbN)")
}

fn setup_bridge(net: &Net) -> Result<()> {
    ip(&["link", "add", &net.bridge(), "type", "bridge"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", net.host_address()),
        "dev",
        &net.bridge(),
    ])?;
    ip(&["link", "set", &net.bridge(), "up"])
}

pub fn delete_bridge(net: &Net) {
    let _ = ip(&["link", "del", &net.bridge()]);
}

/// The network namespace and veth of one machine, with an IPv4 and an IPv6 unique-local
/// address on eth0 and, when `second_nic`, a second interface eth1 with an address of its
/// own. Safe to call again: existing parts are kept.
///
/// `hold`, for tests (model config `harness-hold-at=veth`): once the veth pair exists on the
/// host, and before it moves into the namespace, the file is created and creation waits
/// (up to a minute) until it is gone: a moment too short to hit by timing.
pub fn create_netns(net: &Net, machine: u32, second_nic: bool, hold: Option<&Path>) -> Result<()> {
    let ns = net.netns(machine);
    let host = net.host_veth(machine);
    if Path::new("/run/netns").join(&ns).exists() && link_exists(&host) {
        return Ok(());
    }
    delete_netns(net, machine);
    let peer = format!("chb{}m{}c", net.index, machine);
    ip(&["netns", "add", &ns])?;
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
    if let Some(hold) = hold {
        hold_at(hold)?;
    }
    ip(&["link", "set", &peer, "netns", &ns])?;
    ip(&["link", "set", &host, "master", &net.bridge(), "up"])?;
    ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{}/24", net.machine_address(machine)),
        "dev",
        "eth0",
    ])?;
    // nodad: the address is usable at once (no duplicate detection on a bridge we own).
    ip(&[
        "-n",
        &ns,
        "-6",
        "addr",
        "add",
        &format!("{}/64", net.machine_address6(machine)),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    if second_nic {
        // A veth pair inside the machine (the kernel may lack the dummy driver): an address
        // in the binding like a second NIC's, which nothing outside the machine routes to
        // (the charm must not depend on it).
        ip(&[
            "-n", &ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth1p", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", net.second_address(machine)),
            "dev",
            "eth1",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth1", "up"])?;
    }
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates `file` and waits until something removes it (a test's hold point), or a minute.
/// The file's directory is the model's: never made here (a destroyed model's stays gone).
pub fn hold_at(file: &Path) -> Result<()> {
    std::fs::write(file, b"")
        .with_context(|| format!("creating the hold point {}", file.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

pub fn delete_netns(net: &Net, machine: u32) {
    let _ = ip(&["link", "del", &net.host_veth(machine)]);
    let _ = ip(&["netns", "del", &net.netns(machine)]);
}

/// Removes what the host holds for a machine whose processes are gone: its network
/// namespace and veth, and its cgroups.
pub fn remove_host_parts(net: &Net, machine: u32) {
    delete_netns(net, machine);
    if let Err(e) = crate::cgroups::remove(&net.netns(machine)) {
        eprintln!("machine {machine}: {e:#}");
    }
}

/// Cuts a machine off the network (both ways) or heals it.
pub fn set_link(net: &Net, machine: u32, up: bool) -> Result<()> {
    ip(&[
        "link",
        "set",
        &net.host_veth(machine),
        if up { "up" } else { "down" },
    ])
}

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

/// Entry of `charm-harness machine-agent`: runs as PID 1 of the machine.
pub fn agent_main(
    dir: PathBuf,
    home: PathBuf,
    hostname: String,
    address: String,
    machine: u32,
    kind: Kind,
) -> Result<()> {
    use nix::mount::MsFlags;
    mount(
        "none",
        "/",
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    if kind.boots_systemd() {
        return crate::boot::boot(&dir, &home, &hostname, &address, machine);
    }
    mount_overlays(&dir.join("layers"), Path::new("/"))?;
    nix::unistd::sethostname(&hostname)?;
    write_identity(Path::new("/"), &hostname, &address)?;
    // The controller's socket directory, visible inside as MACHINE_SOCKET_DIR.
    std::fs::create_dir_all(MACHINE_SOCKET_DIR)?;
    let run = home.join("run");
    mount(
        &run.to_string_lossy(),
        MACHINE_SOCKET_DIR,
        None,
        MsFlags::MS_BIND,
        None,
    )?;
    install_tools(Path::new("/"), machine)?;
    // The agent socket is bound before /tmp is hidden, so it stays reachable from the host.
    let sock = dir.join("agent.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    mount(
        "tmpfs",
        "/tmp",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=1777"),
    )?;
    mount(
        "tmpfs",
        "/run",
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )?;
    std::fs::create_dir_all("/run/lock")?;
    // PID 1 reaps orphans; its child serves the controller.
    match unsafe { nix::unistd::fork()? } {
        nix::unistd::ForkResult::Child => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(serve(listener))
        }
        nix::unistd::ForkResult::Parent { child } => loop {
            match nix::sys::wait::waitpid(None, None) {
                Ok(status) => {
                    if status.pid() == Some(child) {
                        std::process::exit(0);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => std::process::exit(0),
            }
        },
    }
}

/// `charm-harness machine-agent --serve SOCKET`: the agent as a service of the machine's
/// systemd (systemd machines), answering the controller on SOCKET.
pub fn serve_main(socket: &Path) -> Result<()> {
    // A stale socket from the last boot; if it cannot go, bind below says so.
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(listener))
}

async fn serve(listener: std::os::unix::net::UnixListener) -> Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let counter = counter.clone();
        tokio::spawn(async move {
            let _ = handle(stream, counter).await;
        });
    }
}

async fn handle(
    stream: tokio::net::UnixStream,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(r).read_line(&mut line).await?;
    let req: AgentRequest = serde_json::from_str(&line)?;
    let reply = match req {
        AgentRequest::Ping => AgentReply::default(),
        AgentRequest::Run { argv, env, cwd } => {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            run_process(&argv, &env, &cwd, n).await
        }
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    Ok(())
}

/// Runs one process with output captured to files, not pipes: a daemon the process leaves
/// behind keeps its inherited descriptors, and the run must still end when the process does.
async fn run_process(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &str,
    n: u64,
) -> AgentReply {
    let out_path = PathBuf::from(format!("/run/harness-run-{n}.out"));
    let err_path = PathBuf::from(format!("/run/harness-run-{n}.err"));
    let result = async {
        let out = std::fs::File::create(&out_path)?;
        let err = std::fs::File::create(&err_path)?;
        let Some((prog, args)) = argv.split_first() else {
            bail!("empty command")
        };
        let child = std::process::Command::new(prog)
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot run {prog}"))?;
        // wait4, not wait: the process's own peak memory comes with its exit status.
        let pid = child.id() as i32;
        let (status, max_rss_kb) = tokio::task::spawn_blocking(move || loop {
            let mut status = 0;
            // SAFETY: rusage is plain data that wait4 fills in.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                return Ok((status, ru.ru_maxrss.max(0) as u64));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        })
        .await??;
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Ok::<(i32, u64), anyhow::Error>((code, max_rss_kb))
    }
    .await;
    let read = |p: &Path| {
        let b = std::fs::read(p).unwrap_or_default();
        let _ = std::fs::remove_file(p);
        String::from_utf8_lossy(&b).into_owned()
    };
    let stdout = read(&out_path);
    let stderr = read(&err_path);
    match result {
        Ok((code, max_rss_kb)) => AgentReply {
            code,
            stdout,
            stderr,
            error: None,
            max_rss_kb: Some(max_rss_kb),
        },
        Err(e) => AgentReply {
            code: -1,
            stdout,
            stderr,
            error: Some(format!("{e:#}")),
            max_rss_kb: None,
        },
    }
}

/// Asks a machine agent something, from the controller (async).
pub async fn agent_call(socket: &Path, req: &AgentRequest) -> Result<(AgentReply, Option<u32>)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map(|p| p as u32);
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut buf = String::new();
    tokio::io::BufReader::new(r).read_line(&mut buf).await?;
    if buf.is_empty() {
        bail!("the machine agent closed the connection (machine down?)");
    }
    Ok((serde_json::from_str(&buf)?, pid))
}

/// The direct children of a process (host view), e.g. the PID 1 that `unshare --fork` started.
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}
