//! The machine agent: PID 1 of its machine (or a systemd service there), serving the
//! controller's requests to run processes on a unix socket; and the controller's call to it.

use crate::proto::{AgentReply, AgentRequest, MACHINE_SOCKET_DIR};
use crate::rootfs::{install_tools, mount, mount_overlays, write_identity};
use crate::state::Kind;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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
    // A stale socket from the last boot; if it cannot go, bind below says so.
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
            // One request's failure ends its connection: the controller's call sees it.
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
        // A capture file left in the machine's /tmp costs nothing and goes with it.
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
