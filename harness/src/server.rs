//! The controller daemon: its socket, and what arrives there: the CLI's commands
//! (`cli`), the hook tools' calls from machines (`tools`) and shutdown.

use crate::controller::{model_dir, state_path, Ctl};
use crate::machine::{self, Net};
use crate::proto::{self, AgentRequest, Reply, Request};
use crate::state::World;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Serves the controller socket until shutdown.
pub async fn serve(ctl: Arc<Ctl>, listener: tokio::net::UnixListener) -> Result<()> {
    // Resume: machines whose agents died come back (workers for every unit: the deployer
    // loop below).
    let machines: Vec<(String, u32, bool)> = ctl.read(|w| {
        w.models
            .values()
            .flat_map(|m| {
                m.machines
                    .values()
                    .map(|x| (m.name.clone(), x.id, x.status == "started"))
            })
            .collect()
    });
    let nets: Vec<Net> = ctl.read(|w| w.models.values().map(|m| m.net()).collect());
    for n in nets {
        // After a controller restart the bridge usually still exists (the claim fails, as it
        // should); a bridge that is really missing shows when its machines are provisioned.
        let _ = machine::create_bridge(Some(n.index));
    }
    ctl.mutate(|w| {
        for m in w.models.values_mut() {
            for u in m.units.values_mut() {
                if let Some(ev) = u.running.take() {
                    u.queue.push_front(ev);
                }
            }
        }
    });
    for (model, machine_id, started) in machines {
        let sock = machine::agent_socket(&model_dir(&ctl.home, &model), machine_id);
        let alive = started
            && machine::agent_call(&sock, &AgentRequest::Ping)
                .await
                .is_ok();
        if !alive {
            ctl.mutate(|w| {
                if let Some(m) = w
                    .models
                    .get_mut(&model)
                    .and_then(|m| m.machines.get_mut(&machine_id))
                {
                    m.status = "pending".into();
                }
            });
            ctl.provision(&model, machine_id);
        }
    }
    tokio::spawn(ctl.clone().update_status_loop());
    tokio::spawn(ctl.clone().deployer_loop());
    loop {
        tokio::select! {
            _ = ctl.shutdown.notified() => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let ctl = ctl.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_conn(ctl, stream).await {
                        eprintln!("connection error: {e:#}");
                    }
                });
            }
        }
    }
}

async fn handle_conn(ctl: Arc<Ctl>, stream: tokio::net::UnixStream) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let peer_pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .map(|p| p as u32);
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(r).read_line(&mut line).await?;
    if line.trim().is_empty() {
        // A liveness probe: connected and went away.
        return Ok(());
    }
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let reply = Reply::err(2, format!("bad request: {e}"));
            w.write_all(format!("{}\n", serde_json::to_string(&reply)?).as_bytes())
                .await?;
            return Ok(());
        }
    };
    let reply = match req {
        Request::Tool {
            tool,
            args,
            context,
            stdin,
        } => crate::tools::handle(&ctl, &tool, &args, &context, stdin.as_deref(), peer_pid),
        Request::Cli {
            args,
            cwd,
            model,
            charmhub,
            client,
        } => {
            let juju29 = client.as_deref().is_some_and(|c| c.starts_with("2.9"));
            crate::cli::handle(&ctl, args, &cwd, model, charmhub, juju29).await
        }
        Request::Shutdown => {
            let models: Vec<String> = ctl.read(|w| w.models.keys().cloned().collect());
            for m in models {
                ctl.destroy_model(&m).await;
            }
            // A machine caught starting (its processes spawned, not yet recorded) is ended
            // by its start, which finds its model gone: the controller must outlive it.
            // 90 s: longer than any step of a start (a test's hold point waits up to 60 s).
            ctl.starts_done(Duration::from_secs(90)).await;
            // Every model is destroyed: an absent file is the same empty state.
            let _ = std::fs::remove_file(state_path(&ctl.home));
            ctl.shutdown.notify_one();
            Reply::ok("")
        }
    };
    w.write_all(format!("{}\n", serde_json::to_string(&reply)?).as_bytes())
        .await?;
    Ok(())
}

/// The home's lock, held for as long as the returned file is open: `None` when another
/// process (a running controller) holds it.
fn own_home(home: &std::path::Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.join("controller.lock"))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(Some(held)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::anyhow!(
            "locking {}: {e}",
            home.join("controller.lock").display()
        )),
    }
}

/// `kill-controller` when no controller answers (it was killed, or the host rebooted): as a
/// real Juju then destroys the machines through the cloud's API, every machine of every
/// model the state names is destroyed from the host (its processes, found by their network
/// namespace; its namespace, veth and cgroups; the model's bridge and directories), then the
/// state goes. Refused while a controller is starting in the same home.
pub fn destroy_unreachable(home: &std::path::Path) -> Result<()> {
    if !home.exists() {
        return Ok(());
    }
    let Some(_lock) = own_home(home)? else {
        anyhow::bail!(
            "a controller is starting in {}: run kill-controller again once it answers",
            home.display()
        );
    };
    let world = World::load(&state_path(home))?;
    for (name, m) in &world.models {
        let net = m.net();
        let machines: Vec<u32> = m.machines.keys().copied().collect();
        for id in &machines {
            machine::kill_namespace_processes(&net, *id)?;
        }
        crate::controller::remove_model_remains(home, name, Some(&net), &machines);
    }
    match std::fs::remove_file(state_path(home)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// `charm-harness bootstrap`: runs the daemon in the foreground (the CLI starts it detached).
pub fn bootstrap(home: PathBuf) -> Result<()> {
    for d in crate::rootfs::OVERLAID {
        if home.starts_with(d) {
            anyhow::bail!("CHARM_HARNESS_HOME {} is under {d}, which machines overlay; choose a directory outside {:?} (default /tmp/charm-harness)", home.display(), crate::rootfs::OVERLAID);
        }
    }
    std::fs::create_dir_all(home.join("run"))?;
    let Some(lock) = own_home(&home)? else {
        // Another controller owns this home.
        return Ok(());
    };
    let sock = proto::controller_socket(&home);
    // A stale socket of an earlier controller; if it cannot go, bind below says so.
    let _ = std::fs::remove_file(&sock);
    let world = World::load(&state_path(&home))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::bind(&sock)?;
        std::fs::write(
            home.join("run").join("controller.pid"),
            std::process::id().to_string(),
        )?;
        let ctl = Ctl::new(home.clone(), world);
        serve(ctl, listener).await?;
        // Tidying on exit: the next bootstrap removes a leftover socket anyway.
        let _ = std::fs::remove_file(&sock);
        Ok::<(), anyhow::Error>(())
    })?;
    drop(lock);
    Ok(())
}
