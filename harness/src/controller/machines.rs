//! Machines: provisioning, starting, installing the charm, apt and snapd, running a command inside, crashing, removing, rebooting, and what a destroyed model leaves.

use super::names::*;
use super::runtime::*;
use crate::machine::{self, Net};
use crate::proto::AgentRequest;
use crate::state::*;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ends a machine's processes: PID 1 first (`unshare` reaps it and exits, so no zombie is
/// left behind), then the `unshare` parent if it lingers; waits for both, up to 10 s. A PID 1
/// not recorded yet (the machine was still starting) is found as the parent's child.
pub(crate) async fn end_processes(spawn: Option<u32>, init: Option<u32>) {
    let init = init.or_else(|| spawn.and_then(|p| machine::children_of(p).first().copied()));
    machine::kill_machine(None, init);
    let deadline = Instant::now() + Duration::from_secs(10);
    while init
        .map(|p| Path::new(&format!("/proc/{p}")).exists())
        .unwrap_or(false)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if spawn.map(machine::pid_alive).unwrap_or(false) {
        machine::kill_machine(spawn, None);
    }
    while spawn.map(machine::pid_alive).unwrap_or(false) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the host keeps of a destroyed model once its machines' processes are gone: each
/// machine's namespace, veth and cgroups, the model's bridge (`net`, when known), and the
/// model's directories under the controller's home. A directory that will not go is said
/// and left (files only: nothing runs from it any more).
pub fn remove_model_remains(home: &Path, model: &str, net: Option<&Net>, machines: &[u32]) {
    if let Some(net) = net {
        for id in machines {
            machine::remove_host_parts(net, *id);
        }
        machine::delete_bridge(net);
    }
    for dir in [
        model_dir(home, model),
        home.join("charms").join(model),
        home.join("resources").join(model),
    ] {
        remove_tree(&dir);
    }
}

/// What the host and the controller's home hold for a machine whose processes are gone:
/// its namespace, links and cgroups, and its directory in the model's.
pub(crate) fn remove_machine_remains(home: &Path, model: &str, net: &Net, machine: u32) {
    machine::remove_host_parts(net, machine);
    remove_tree(&machine::machine_dir(&model_dir(home, model), machine));
}

/// Copies a directory tree, keeping file modes and symlinks.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if ft.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(target, &to)?;
        } else {
            // Written beside it and renamed over: a file in use (a charm binary a hook or
            // a job runs) is replaced, never written into (ETXTBSY), and a reader sees the
            // old file or the new one whole.
            let mut name = std::ffi::OsString::from(".");
            name.push(entry.file_name());
            name.push(".new");
            let tmp = dst.join(name);
            std::fs::copy(entry.path(), &tmp)
                .with_context(|| format!("copying {}", entry.path().display()))?;
            std::fs::rename(&tmp, &to).with_context(|| format!("replacing {}", to.display()))?;
        }
    }
    Ok(())
}

impl Ctl {
    /// A machine that started after its model (or itself) was destroyed is nobody's: its
    /// processes are ended and what the host holds for it removed, here, by the starter.
    pub(crate) async fn end_orphan(
        &self,
        model: &str,
        net: &machine::Net,
        machine: u32,
        spawn: u32,
    ) -> anyhow::Error {
        end_processes(Some(spawn), None).await;
        let (home, model_name, net) = (self.home.clone(), model.to_string(), net.clone());
        // remove_machine_remains reports its own failures; the join fails only if it
        // panicked, and the error below is returned either way.
        let _ = tokio::task::spawn_blocking(move || {
            remove_machine_remains(&home, &model_name, &net, machine)
        })
        .await;
        // Spawning made the machine's directory, and the model's if it had gone already.
        self.forget_model_dir_if_gone(model);
        anyhow::anyhow!("machine {machine} was destroyed while it started")
    }

    /// Creates the machine of a unit and installs the charm in it.
    pub fn provision(self: &Arc<Self>, model: &str, machine: u32) {
        let ctl = self.clone();
        let model = model.to_string();
        tokio::spawn(async move {
            let r = ctl.start_machine(&model, machine).await;
            if let Err(e) = r {
                ctl.log(&model, &format!("machine-{machine}: cannot start: {e:#}"));
                ctl.update_machine(&model, machine, |m| m.status = format!("error: {e:#}"));
                // A start that failed because its model went may have made the model's
                // directory again (the machine's log): nothing of the model stays.
                ctl.forget_model_dir_if_gone(&model);
            }
        });
    }

    /// Waits until no machine start is under way (a start whose model was destroyed ends
    /// what it spawned on its own), up to `limit`; says in controller.log when some are
    /// still under way then (their machines may be left: kill-controller again ends them).
    pub async fn starts_done(&self, limit: Duration) {
        let mut rx = self.starts.subscribe();
        let zero = async { rx.wait_for(|n| *n == 0).await.map(|_| ()) };
        match tokio::time::timeout(limit, zero).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => eprintln!("machine starts: their counter is gone"),
            Err(_) => eprintln!(
                "{} machine start(s) still under way after {limit:?}: exiting without them",
                *self.starts.borrow()
            ),
        }
    }

    pub async fn start_machine(self: &Arc<Self>, model: &str, machine: u32) -> Result<()> {
        let _counted = StartGuard::new(&self.starts);
        let found = self.read(|w| {
            let m = w.models.get(model)?;
            let mach = m.machines.get(&machine)?;
            let units = m.units_on(machine);
            let mirror = m
                .config_str("apt-mirror")
                .unwrap_or_else(default_apt_mirror);
            Some((
                m.net(),
                mach.hostname.clone(),
                units,
                mach.kind,
                (!mach.provisioned).then_some(mirror),
                mach.second_nic,
                m.config_str("harness-hold-at"),
            ))
        });
        let Some((net, hostname, units, kind, provision, second_nic, hold_at)) = found else {
            anyhow::bail!("machine {machine} of model {model:?} no longer exists");
        };
        let mdir = model_dir(&self.home, model);
        let sock = machine::agent_socket(&mdir, machine);
        let _ = std::fs::remove_file(&sock);
        let firewall = self
            .read(|w| {
                w.models
                    .get(model)
                    .map(|m| crate::firewall::for_machine(m, machine))
            })
            .unwrap_or_default();
        let spawn = Spawn {
            home: self.home.clone(),
            mdir,
            net: net.clone(),
            machine,
            second_nic,
            hostname,
            kind,
            firewall,
            hold_at,
        };
        let spawned = tokio::task::spawn_blocking(move || spawn.run()).await??;
        // Recorded at once, under the world's lock: a destroy-model from now on finds the
        // process; one that came first left no machine record, and the machine is ended.
        if !self.update_machine(model, machine, |mach| mach.spawn_pid = Some(spawned.pid)) {
            return Err(self.end_orphan(model, &net, machine, spawned.pid).await);
        }
        self.wait_for_agent(model, machine, &sock, spawned.pid)
            .await?;
        let init = machine::children_of(spawned.pid).first().copied();
        // Known at once: a crash or kill-controller during provisioning must find the machine.
        let kept = self.update_machine(model, machine, |mach| {
            mach.spawn_pid = Some(spawned.pid);
            mach.init_pid = init;
        });
        if !kept {
            return Err(self.end_orphan(model, &net, machine, spawned.pid).await);
        }
        if let Some(mirror) = provision {
            self.first_boot(model, machine, &mirror, kind).await?;
        }
        self.prepare_units(model, &units).await?;
        let cut = self.mutate(|w| {
            let m = w.models.get_mut(model)?;
            m.machine_started(machine).then(|| m.net())
        });
        // A link cut before the reboot is cut again; a cut that fails leaves the machine
        // reachable, which the controller's log says (the machine itself is up).
        if let Some(net) = cut {
            if let Err(e) = machine::set_link(&net, machine, false) {
                self.log(
                    model,
                    &format!("controller: ERROR cutting machine {machine}'s link again: {e:#}"),
                );
            }
        }
        Ok(())
    }

    /// The units of a booting machine: their charm in place, and the volumes attached
    /// before this boot mounted again before any hook runs.
    async fn prepare_units(&self, model: &str, units: &[String]) -> Result<()> {
        for unit in units {
            self.install_charm(model, unit).await?;
            let attached: Vec<String> = self.read(|w| {
                w.models
                    .get(model)
                    .and_then(|m| m.units.get(unit.as_str()))
                    .map(|u| u.storage.clone())
                    .unwrap_or_default()
            });
            for id in attached {
                self.prepare_storage(model, unit, &id).await?;
            }
        }
        Ok(())
    }

    /// Waits (30 s at most) for a spawned machine's agent to answer on its socket.
    async fn wait_for_agent(&self, model: &str, machine: u32, sock: &Path, pid: u32) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if machine::agent_call(sock, &AgentRequest::Ping).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline || !machine::pid_alive(pid) {
                anyhow::bail!(
                    "the machine agent did not come up; see {}",
                    machine::agent_socket(&model_dir(&self.home, model), machine)
                        .with_file_name("agent.log")
                        .display()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// First boot: what cloud-init does on a cloud: the `ubuntu` user with its home (where
    /// actions leave files for `juju scp`), apt sources pointing at the mirror, snapd on a
    /// machine of that kind.
    async fn first_boot(
        &self,
        model: &str,
        machine: u32,
        mirror: &str,
        kind: machine::Kind,
    ) -> Result<()> {
        self.run_on_machine(
            model,
            machine,
            "adding the ubuntu user",
            // As cloud-init's default user on Ubuntu images: passwordless sudo, which is how
            // `juju ssh` users act as root.
            "id ubuntu >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ubuntu; \
             mkdir -p /etc/sudoers.d && \
             echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users && \
             chmod 0440 /etc/sudoers.d/90-cloud-init-users"
                .into(),
        )
        .await?;
        if !mirror.is_empty() {
            self.configure_apt(model, machine, mirror).await?;
        }
        if kind == machine::Kind::Snapd {
            self.install_snapd(model, machine).await?;
        }
        self.update_machine(model, machine, |mach| mach.provisioned = true);
        Ok(())
    }

    /// Installs the unit's charm into its agent directory on its machine (kept across
    /// reboots), unless it is there: at boot for the units on the machine, and before the
    /// first hooks of a subordinate that arrives on a running machine (a unit whose install
    /// hook ran has it).
    pub(crate) async fn install_charm(&self, model: &str, unit: &str) -> Result<()> {
        let found = self.read(|w| {
            let m = w.models.get(model)?;
            let u = m.units.get(unit)?;
            let mach = m.machines.get(&u.machine)?;
            let charm = m.apps.get(&u.app)?.charm_dir.clone();
            Some((u.installed, mach.init_pid.or(mach.spawn_pid), charm))
        });
        let (pid, charm_dir) = match found {
            Some((true, _, _)) => return Ok(()),
            Some((false, Some(pid), charm)) => (pid, charm),
            _ => anyhow::bail!("unit {unit}: its machine is not running"),
        };
        let target = PathBuf::from(format!("/proc/{pid}/root"))
            .join(charm_dir_in_machine(unit).trim_start_matches('/'));
        if target.join("metadata.yaml").exists() {
            return Ok(());
        }
        let src = PathBuf::from(&charm_dir);
        tokio::task::spawn_blocking(move || copy_tree(&src, &target)).await??;
        self.mutate(|w| {
            if let Some(u) = w.models.get_mut(model).and_then(|m| m.units.get_mut(unit)) {
                u.charm_from = Some(charm_dir);
            }
        });
        Ok(())
    }

    /// Points a new machine's apt at the model's mirror and reads its index, as cloud-init's
    /// `apt` and `package_update` do: the host's sources are hidden from the machine, so a
    /// package comes from the mirror or not at all.
    pub(crate) async fn configure_apt(
        &self,
        model: &str,
        machine: u32,
        mirror: &str,
    ) -> Result<()> {
        let source = if let Some(dir) = mirror.strip_prefix("file:") {
            if !Path::new(dir).join("Packages").exists() {
                anyhow::bail!("apt-mirror {mirror}: no Packages index in {dir}; index the .deb files there (dpkg-scanpackages . > Packages)");
            }
            format!("deb [trusted=yes] file:{dir} ./")
        } else {
            format!("deb [trusted=yes] {mirror} ./")
        };
        let script = format!(
            "set -e; rm -f /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; \
             echo '{source}' > /etc/apt/sources.list; \
             apt-get update -qq -o Acquire::Languages=none"
        );
        let what = format!("configuring apt-mirror {mirror}");
        self.run_on_machine(model, machine, &what, script).await
    }

    /// A `snapd` machine's first boot: snapd from the apt mirror, then the seed snaps.
    pub(crate) async fn install_snapd(&self, model: &str, machine: u32) -> Result<()> {
        let mut script = String::from(
            "set -e; apt-get install -y -qq --no-install-recommends snapd >/dev/null; \
             systemctl start systemd-udevd.service snapd.socket snapd.service; \
             timeout 120 snap wait system seed.loaded; ",
        );
        if let Some(seed) = snap_seed() {
            let mut snaps: Vec<PathBuf> = std::fs::read_dir(&seed)
                .with_context(|| format!("reading the snap seed {}", seed.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "snap"))
                .collect();
            // Bases and snapd first: other snaps need them.
            snaps.sort_by_key(|p| {
                let n = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                (
                    !(n.starts_with("bare_") || n.starts_with("core") || n.starts_with("snapd_")),
                    n,
                )
            });
            for s in snaps {
                script.push_str(&format!(
                    "timeout 120 snap install --dangerous '{}' >/dev/null; ",
                    s.display()
                ));
            }
        }
        self.run_on_machine(model, machine, "installing snapd", script)
            .await
    }

    /// Runs a root shell script on a machine outside any hook (provisioning); a non-zero
    /// exit is an error that says `what` failed, with the script's stderr.
    pub(crate) async fn run_on_machine(
        &self,
        model: &str,
        machine: u32,
        what: &str,
        script: String,
    ) -> Result<()> {
        let sock = machine::agent_socket(&model_dir(&self.home, model), machine);
        let env = BTreeMap::from([
            (
                "PATH".to_string(),
                "/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin".to_string(),
            ),
            ("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ]);
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        let (reply, _) = machine::agent_call(
            &sock,
            &AgentRequest::Run {
                argv,
                env,
                cwd: "/".into(),
            },
        )
        .await?;
        if reply.code != 0 {
            anyhow::bail!(
                "{what} on machine {machine} failed: {}{}",
                reply.stderr.trim(),
                reply.error.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Kills a machine's processes and waits until they are gone.
    pub async fn crash_machine(&self, model: &str, machine: u32) {
        let (spawn, init) = self.mutate(|w| {
            let Some(m) = w
                .models
                .get_mut(model)
                .and_then(|m| m.machines.get_mut(&machine))
            else {
                return (None, None);
            };
            m.status = "down".into();
            let r = (m.spawn_pid.take(), m.init_pid.take());
            for u in w.models.get_mut(model).unwrap().units.values_mut() {
                if u.machine == machine {
                    u.agent = Status::new("lost", "agent is not communicating with the server");
                }
            }
            r
        });
        end_processes(spawn, init).await;
    }

    /// Removes an empty machine: its record first, so a start still under way ends itself
    /// (`end_orphan`), then its processes and what the host holds for it.
    pub async fn remove_machine(&self, model: &str, machine: u32) {
        let removed = self.mutate(|w| {
            let m = w.models.get_mut(model)?;
            let mach = m.machines.remove(&machine)?;
            Some((m.net(), mach.spawn_pid, mach.init_pid))
        });
        let Some((net, spawn, init)) = removed else {
            return;
        };
        end_processes(spawn, init).await;
        let (home, model) = (self.home.clone(), model.to_string());
        // remove_machine_remains reports its own failures; the join fails only if it panicked.
        let _ = tokio::task::spawn_blocking(move || {
            remove_machine_remains(&home, &model, &net, machine)
        })
        .await;
    }

    /// Destroys a model: its record goes first, in one step under the world's lock, so a
    /// machine still starting either was recorded before (and is ended here) or finds
    /// itself gone and ends itself (`end_orphan`); then every machine's processes and what
    /// the host holds for them.
    pub async fn destroy_model(&self, model: &str) {
        let removed = self.mutate(|w| {
            if w.current_model.as_deref() == Some(model) {
                w.current_model = None;
            }
            w.models.remove(model)
        });
        let Some(m) = removed else {
            return;
        };
        let machines: Vec<u32> = m.machines.keys().copied().collect();
        for mach in m.machines.values() {
            end_processes(mach.spawn_pid, mach.init_pid).await;
        }
        remove_model_remains(&self.home, model, Some(&m.net()), &machines);
    }

    pub async fn reboot(self: &Arc<Self>, model: &str, machine: u32) -> Result<()> {
        let (kind, init) = self.read(|w| {
            w.models
                .get(model)
                .and_then(|m| m.machines.get(&machine))
                .map(|m| (m.kind, m.init_pid))
                .unwrap_or_default()
        });
        if let Some(pid) = init.filter(|p| kind.boots_systemd() && machine::pid_alive(*p)) {
            // A clean reboot: systemd stops every unit (SIGRTMIN+5 is its reboot request),
            // then asks the kernel to reboot, which ends a PID namespace's init.
            // (nix's Signal has no real-time signals.)
            unsafe { libc::kill(pid as i32, libc::SIGRTMIN() + 5) };
            let deadline = Instant::now() + Duration::from_secs(120);
            while machine::pid_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.crash_machine(model, machine).await;
        self.start_machine(model, machine).await?;
        self.mutate(|w| {
            if let Some(m) = w.models.get_mut(model) {
                for u in m.units_on(machine) {
                    m.push(&u, Event::hook("start"));
                }
            }
        });
        Ok(())
    }
}

/// What a machine's processes are started from: its namespace and link, firewall and agent.
struct Spawn {
    home: PathBuf,
    mdir: PathBuf,
    net: machine::Net,
    machine: u32,
    second_nic: bool,
    hostname: String,
    kind: machine::Kind,
    /// the nft ruleset of its namespace
    firewall: String,
    hold_at: Option<String>,
}

impl Spawn {
    /// Blocking: the namespace with its link and firewall, then the machine's agent.
    fn run(self) -> Result<machine::Spawned> {
        let (net, machine) = (&self.net, self.machine);
        let hold = (self.hold_at.as_deref() == Some("veth"))
            .then(|| self.mdir.join(format!("hold-veth-{machine}")));
        let r = machine::create_netns(net, machine, self.second_nic, hold.as_deref())
            .and_then(|()| crate::firewall::apply(&net.netns(machine), &self.firewall))
            .and_then(|()| {
                machine::spawn_agent(
                    &self.home,
                    &self.mdir,
                    net,
                    machine,
                    &self.hostname,
                    self.kind,
                )
            });
        // The second hold point (harness-hold-at=spawned): the machine's processes run and
        // nothing in the world records them yet. A model already gone makes no hold: the
        // start goes on and finds it gone.
        if r.is_ok() && self.hold_at.as_deref() == Some("spawned") {
            let _ = machine::hold_at(&self.mdir.join(format!("hold-spawned-{machine}")));
        }
        // A step that failed half-way (a destroy-model deleting the namespace while the veth
        // pair was being moved into it) leaves no link or namespace behind.
        if r.is_err() {
            machine::remove_host_parts(net, machine);
        }
        r
    }
}
