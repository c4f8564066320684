//! The controller daemon: owns the model state, serves the unix socket, runs one worker per
//! unit that fires hooks in Juju's order (one at a time per machine), commits or discards
//! each hook's buffered changes, and runs the update-status timer.
//!
//! Hook sequencing lives in the `Model` methods here (`add_unit`, `enter_scope`, `remove_unit`,
//! `commit`, ...); the hook tools live in `tools.rs`, the `juju` commands in `cli.rs`.

use crate::machine::{self, Net};
use crate::proto::{self, AgentRequest};
use crate::state::*;
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const JUJU_VERSION: &str = "3.6.8";
/// Machines boot systemd unless the model says otherwise: a cloud image does, and the
/// charm's code paths for systemd are the ones operators run.
pub const DEFAULT_MACHINE_KIND: crate::machine::Kind = crate::machine::Kind::Systemd;

/// Snaps a `snapd` machine gets installed at its first boot, as a cloud image's seed would
/// hold them: the `.snap` files of the directory named by the controller's environment
/// `CHARM_HARNESS_SNAP_SEED` (bases first), installed with `--dangerous` as the store is
/// out of reach.
pub fn snap_seed() -> Option<PathBuf> {
    std::env::var_os("CHARM_HARNESS_SNAP_SEED")
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
}

/// The apt mirror machines use when the model does not set `apt-mirror`: the controller's
/// environment `CHARM_HARNESS_APT_MIRROR` (a `file:` directory with a flat Debian archive,
/// or an http URL on the model's bridge), else none (machines keep the host's sources).
pub fn default_apt_mirror() -> String {
    std::env::var("CHARM_HARNESS_APT_MIRROR").unwrap_or_default()
}

/// A running hook, action or exec: what the hook tools act on.
#[derive(Debug, Clone)]
pub struct HookCtx {
    pub id: String,
    pub model: String,
    pub unit: String,
    pub app: String,
    pub event: Event,
    pub task: Option<u64>,
    pub is_action: bool,
    pub machine_root: PathBuf,
    /// (relation id, unit or app name) → key → value ("" deletes)
    pub rel_writes: BTreeMap<(u32, String), Bag>,
    pub ports: Vec<(bool, String)>,
    pub secrets: Vec<SecretOp>,
    pub state: Vec<(String, Option<String>)>,
    pub storage_add: Vec<(String, u32)>,
    pub reboot: bool,
}

#[derive(Debug, Clone)]
pub enum SecretOp {
    Add(Secret),
    Set {
        id: String,
        content: Option<Bag>,
        label: Option<String>,
        description: Option<String>,
        expire: Option<String>,
        rotate: Option<String>,
    },
    Remove {
        id: String,
        revision: Option<u32>,
    },
    Grant {
        id: String,
        relation: u32,
        unit: Option<String>,
    },
    Revoke {
        id: String,
        relation: u32,
        unit: Option<String>,
    },
}

pub struct Ctl {
    pub home: PathBuf,
    pub world: Mutex<World>,
    pub contexts: Mutex<HashMap<String, HookCtx>>,
    gen: watch::Sender<u64>,
    workers: Mutex<HashSet<(String, String)>>,
    serial: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    last_update_status: Mutex<HashMap<String, Instant>>,
    /// Machine starts under way: a controller shutting down waits for them, as a start
    /// whose machine was destroyed ends the processes it spawned only as it goes on.
    starts: watch::Sender<usize>,
    pub shutdown: tokio::sync::Notify,
}

/// Counts one machine start for as long as it lives (`Ctl::starts`).
struct StartGuard<'a>(&'a watch::Sender<usize>);

impl<'a> StartGuard<'a> {
    fn new(starts: &'a watch::Sender<usize>) -> Self {
        starts.send_modify(|n| *n += 1);
        StartGuard(starts)
    }
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Locks a mutex even if a thread panicked while holding it: one failed request must not
/// make every later one panic too (the data is consistent between mutations, as each
/// mutation is a plain function of the world).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ends a machine's processes: PID 1 first (`unshare` reaps it and exits, so no zombie is
/// left behind), then the `unshare` parent if it lingers; waits for both, up to 10 s. A PID 1
/// not recorded yet (the machine was still starting) is found as the parent's child.
async fn end_processes(spawn: Option<u32>, init: Option<u32>) {
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

pub fn state_path(home: &Path) -> PathBuf {
    home.join("state.json")
}

pub fn model_dir(home: &Path, model: &str) -> PathBuf {
    home.join("models").join(model)
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

/// Removes one of the controller's directory trees; one already gone is fine, any other
/// failure goes to controller.log (what stays is then also seen by the host's leak check).
fn remove_tree(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("cannot remove {}: {e}", dir.display())
        }
        _ => {}
    }
}

/// What the host and the controller's home hold for a machine whose processes are gone:
/// its namespace, links and cgroups, and its directory in the model's.
fn remove_machine_remains(home: &Path, model: &str, net: &Net, machine: u32) {
    machine::remove_host_parts(net, machine);
    remove_tree(&machine::machine_dir(&model_dir(home, model), machine));
}

pub fn unit_dir_name(unit: &str) -> String {
    format!("unit-{}", unit.replace('/', "-"))
}

pub fn agent_dir_in_machine(unit: &str) -> String {
    format!("/var/lib/juju/agents/{}", unit_dir_name(unit))
}

pub fn charm_dir_in_machine(unit: &str) -> String {
    format!("{}/charm", agent_dir_in_machine(unit))
}

pub fn unit_number(unit: &str) -> u32 {
    unit.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub fn app_of(unit: &str) -> &str {
    unit.split('/').next().unwrap_or(unit)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses Go-style durations as Juju's model config takes them: "5m", "10s", "1h30m", "500ms".
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

impl Model {
    /// The nftables script for one machine's firewall (see `firewall`): the ports opened
    /// by the units of exposed applications on it, in `firewall-mode: instance` (the
    /// default); no firewall in `none`.
    pub fn firewall(&self, machine: u32) -> String {
        let mode = self.config.get("firewall-mode").and_then(Value::as_str);
        if mode == Some("none") {
            return crate::firewall::ruleset(&self.net().host_address(), None);
        }
        let open: Vec<String> = self
            .units
            .values()
            .filter(|u| u.machine == machine)
            .filter(|u| self.apps.get(&u.app).is_some_and(|a| a.exposed))
            .flat_map(|u| u.ports.iter().cloned())
            .collect();
        crate::firewall::ruleset(&self.net().host_address(), Some(&open))
    }

    pub fn net(&self) -> Net {
        Net {
            index: self.net_index,
        }
    }

    /// The units on a machine: its principal and their subordinates.
    pub fn units_on(&self, machine: u32) -> Vec<String> {
        self.units
            .values()
            .filter(|u| u.machine == machine)
            .map(|u| u.name.clone())
            .collect()
    }

    pub fn config_str(&self, key: &str) -> Option<String> {
        self.config.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    pub fn config_bool(&self, key: &str, default: bool) -> bool {
        match self.config.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => crate::flags::parse_go_bool(s).unwrap_or(default),
            _ => default,
        }
    }

    /// Queues an event on a unit, coalescing with an identical event still waiting.
    pub fn push(&mut self, unit: &str, ev: Event) {
        if let Some(u) = self.units.get_mut(unit) {
            if !u.queue.contains(&ev) {
                u.queue.push_back(ev);
            }
        }
    }

    pub fn relations_of_app(&self, app: &str) -> Vec<u32> {
        self.relations
            .values()
            .filter(|r| !r.dying && r.endpoint_of(app).is_some())
            .map(|r| r.id)
            .collect()
    }

    /// Units on the other side of `rel` from `unit` that are in scope.
    pub fn remote_units_in_scope(&self, rel: u32, unit: &str) -> Vec<String> {
        let Some(r) = self.relations.get(&rel) else {
            return vec![];
        };
        let app = app_of(unit);
        let remote_app = r.remote_app_of(app).unwrap_or("");
        r.scope
            .iter()
            .filter(|u| app_of(u) == remote_app && u.as_str() != unit)
            .filter(|u| !r.container || same_machine(&self.units, unit, u))
            .cloned()
            .collect()
    }

    /// A new unit of a principal application: on machine `to` when given (`--to N`, as
    /// Juju places it on an existing machine, one that hosted other units before included),
    /// else on a machine made for it. Returns the unit and whether its machine is new.
    pub fn add_unit(&mut self, app: &str, to: Option<u32>) -> Result<(String, bool)> {
        let a = self.apps.get(app).context("application not found")?;
        if a.meta.subordinate {
            anyhow::bail!(
                "cannot add unit to application \"{app}\": application is subordinate \
                 (its units come with the principal units it is related to)"
            );
        }
        if let Some(id) = to {
            if !self.machines.contains_key(&id) {
                anyhow::bail!("cannot add unit to application \"{app}\": machine {id} not found");
            }
            return Ok((self.place_unit(app, id, None)?, false));
        }
        let name = format!("{}/{}", app, a.next_unit);
        let id = self.new_machine(Some(name), false);
        Ok((self.place_unit(app, id, None)?, true))
    }

    /// A new machine record (provisioned by `Ctl::provision`): made for `unit`, or by
    /// `add-machine` (`kept`: it stays when its last unit goes, as Juju keeps machines it
    /// did not create for a unit).
    pub fn new_machine(&mut self, unit: Option<String>, kept: bool) -> u32 {
        let id = self.next_machine;
        self.next_machine += 1;
        let net = self.net();
        let kind = self
            .config_str("harness-machine")
            .and_then(|k| crate::machine::Kind::parse(&k))
            .unwrap_or(DEFAULT_MACHINE_KIND);
        let second_nic = self.config_bool("harness-second-interface", false);
        let constraints = unit
            .as_deref()
            .and_then(|u| self.apps.get(u.split('/').next().unwrap_or("")))
            .map(|a| a.constraints.clone())
            .unwrap_or_default();
        self.machines.insert(
            id,
            Machine {
                id,
                address: net.machine_address(id),
                hostname: format!("juju-{}-{}", &self.uuid[..6], id),
                spawn_pid: None,
                init_pid: None,
                status: "pending".into(),
                cut: false,
                unit,
                kind,
                provisioned: false,
                second_nic,
                kept,
                constraints,
            },
        );
        id
    }

    /// A unit of subordinate application `app` beside `principal`, on its machine: what
    /// Juju does when a principal unit enters a container-scoped relation's scope.
    fn add_subordinate(&mut self, app: &str, principal: &str) -> Result<String> {
        let machine = self
            .units
            .get(principal)
            .map(|u| u.machine)
            .context("principal unit not found")?;
        self.place_unit(app, machine, Some(principal.to_string()))
    }

    /// The unit record and its first hooks (storage, install, relations created,
    /// leadership, config, start), on `machine`.
    fn place_unit(&mut self, app: &str, machine: u32, principal: Option<String>) -> Result<String> {
        let a = self.apps.get_mut(app).context("application not found")?;
        let name = format!("{}/{}", app, a.next_unit);
        a.next_unit += 1;
        let storage_reqs: Vec<(String, u32, Option<Volume>)> = a
            .meta
            .storage
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    *a.storage_requests.get(k).unwrap_or(&d.min),
                    a.storage_volumes.get(k).cloned(),
                )
            })
            .collect();
        let is_leader = a.leader.is_none();
        if is_leader {
            a.leader = Some(name.clone());
        }
        let mut storage = vec![];
        for (sname, count, volume) in storage_reqs {
            for _ in 0..count {
                let n = self.next_storage.entry(sname.clone()).or_insert(0);
                let sid = format!("{sname}/{n}");
                *n += 1;
                if let Some(v) = &volume {
                    self.volumes.insert(sid.clone(), v.clone());
                }
                storage.push(sid);
            }
        }
        self.units.insert(
            name.clone(),
            Unit {
                name: name.clone(),
                app: app.into(),
                machine,
                life: Life::Alive,
                workload: Status::new("waiting", "waiting for machine"),
                agent: Status::new("allocating", ""),
                ports: Default::default(),
                queue: Default::default(),
                running: None,
                actions: Default::default(),
                error: None,
                installed: false,
                started: false,
                views: Default::default(),
                storage: storage.clone(),
                state: Default::default(),
                tracked: Default::default(),
                workload_set: false,
                principal,
            },
        );
        for s in &storage {
            self.push(
                &name,
                Event {
                    hook: format!("{}-storage-attached", s.split('/').next().unwrap_or("")),
                    storage: Some(s.clone()),
                    ..Default::default()
                },
            );
        }
        self.push(&name, Event::hook("install"));
        for rel in self.relations_of_app(app) {
            let ep = self.relations[&rel]
                .endpoint_of(app)
                .map(|e| e.name.clone())
                .unwrap_or_default();
            self.push(
                &name,
                Event {
                    hook: format!("{ep}-relation-created"),
                    relation: Some(rel),
                    remote_app: self.relations[&rel].remote_app_of(app).map(String::from),
                    ..Default::default()
                },
            );
        }
        self.push(
            &name,
            Event::hook(if is_leader {
                "leader-elected"
            } else {
                "leader-settings-changed"
            }),
        );
        self.push(&name, Event::hook("config-changed"));
        self.push(&name, Event::hook("start"));
        Ok(name)
    }

    /// Called once a unit's install hook has run: it joins every relation of its application.
    pub fn enter_scope(&mut self, unit: &str) {
        let app = app_of(unit).to_string();
        let address = self
            .units
            .get(unit)
            .and_then(|u| self.machines.get(&u.machine))
            .map(|m| m.address.clone())
            .unwrap_or_default();
        for rel in self.relations_of_app(&app) {
            self.enter_relation_scope(rel, unit, &address);
        }
    }

    pub fn enter_relation_scope(&mut self, rel: u32, unit: &str, address: &str) {
        let Some(r) = self.relations.get_mut(&rel) else {
            return;
        };
        if r.scope.contains(unit) {
            return;
        }
        let bag = r.unit_data.entry(unit.to_string()).or_default();
        bag.insert("private-address".into(), address.into());
        bag.insert("ingress-address".into(), address.into());
        bag.insert("egress-subnets".into(), format!("{address}/32"));
        let app = app_of(unit).to_string();
        let remote_app = r.remote_app_of(&app).unwrap_or("").to_string();
        let my_ep = r
            .endpoint_of(&app)
            .map(|e| e.name.clone())
            .unwrap_or_default();
        let others: Vec<String> = r
            .scope
            .iter()
            .filter(|u| app_of(u) == remote_app && u.as_str() != unit)
            .filter(|u| !r.container || same_machine(&self.units, unit, u))
            .cloned()
            .collect();
        r.scope.insert(unit.to_string());
        // A principal unit entering a container-scoped relation with a subordinate
        // application gets its own unit of it, on its machine.
        let wants_subordinate = r.container
            && self.apps.get(&app).is_some_and(|a| !a.meta.subordinate)
            && self
                .apps
                .get(&remote_app)
                .is_some_and(|a| a.meta.subordinate && !a.dying)
            && !self
                .units
                .values()
                .any(|u| u.app == remote_app && u.principal.as_deref() == Some(unit));
        if wants_subordinate {
            // Cannot fail: the application and this unit were both found just above.
            let _ = self.add_subordinate(&remote_app, unit);
        }
        for other in others {
            let their_ep = self.relations[&rel]
                .endpoint_of(&remote_app)
                .map(|e| e.name.clone())
                .unwrap_or_default();
            for (target, ep, remote) in [
                (other.as_str(), &their_ep, unit),
                (unit, &my_ep, other.as_str()),
            ] {
                for kind in ["joined", "changed"] {
                    self.push(
                        target,
                        Event {
                            hook: format!("{ep}-relation-{kind}"),
                            relation: Some(rel),
                            remote_unit: Some(remote.to_string()),
                            remote_app: Some(app_of(remote).to_string()),
                            ..Default::default()
                        },
                    );
                }
            }
        }
    }

    /// Starts removing a unit: departed hooks everywhere, then its own teardown hooks.
    pub fn remove_unit(&mut self, unit: &str) {
        let Some(u) = self.units.get_mut(unit) else {
            return;
        };
        if u.life == Life::Dying {
            return;
        }
        u.life = Life::Dying;
        // Its storage detaches first, before any other hook of its removal: Juju's uniter
        // consults the storage resolver before the dying unit's relation, stop and remove
        // hooks, and a dying unit's attachments are all set dying at once
        // (internal/worker/uniter/resolver.go NextOp; internal/worker/uniter/storage/
        // resolver.go, on `Life == Dying`: SetDying, then StorageDetaching; its tests in
        // resolver_test.go).
        for s in u.storage.clone().into_iter().rev() {
            let ev = Event {
                hook: format!("{}-storage-detaching", s.split('/').next().unwrap_or("")),
                storage: Some(s),
                ..Default::default()
            };
            u.queue.retain(|e| e != &ev);
            u.queue.push_front(ev);
        }
        // Its subordinates go with it (its own `remove` waits for them, see `worker`).
        let subordinates: Vec<String> = self
            .units
            .values()
            .filter(|s| s.principal.as_deref() == Some(unit))
            .map(|s| s.name.clone())
            .collect();
        for s in subordinates {
            self.remove_unit(&s);
        }
        let app = app_of(unit).to_string();
        let rels: Vec<u32> = self
            .relations
            .values()
            .filter(|r| r.scope.contains(unit))
            .map(|r| r.id)
            .collect();
        for rel in rels.iter().copied() {
            let remotes = self.remote_units_in_scope(rel, unit);
            let r = self.relations.get_mut(&rel).unwrap();
            r.scope.remove(unit);
            let my_ep = r
                .endpoint_of(&app)
                .map(|e| e.name.clone())
                .unwrap_or_default();
            for v in remotes {
                let their_ep = self.relations[&rel]
                    .endpoint_of(app_of(&v))
                    .map(|e| e.name.clone())
                    .unwrap_or_default();
                self.push(
                    &v,
                    Event {
                        hook: format!("{their_ep}-relation-departed"),
                        relation: Some(rel),
                        remote_unit: Some(unit.into()),
                        remote_app: Some(app.clone()),
                        departing: Some(unit.into()),
                        ..Default::default()
                    },
                );
                self.push(
                    unit,
                    Event {
                        hook: format!("{my_ep}-relation-departed"),
                        relation: Some(rel),
                        remote_unit: Some(v.clone()),
                        remote_app: Some(app_of(&v).into()),
                        departing: Some(unit.into()),
                        ..Default::default()
                    },
                );
            }
        }
        for rel in self.relations_of_app(&app) {
            let r = &self.relations[&rel];
            let my_ep = r
                .endpoint_of(&app)
                .map(|e| e.name.clone())
                .unwrap_or_default();
            let remote_app = r.remote_app_of(&app).map(String::from);
            self.push(
                unit,
                Event {
                    hook: format!("{my_ep}-relation-broken"),
                    relation: Some(rel),
                    remote_app,
                    ..Default::default()
                },
            );
        }
        self.push(unit, Event::hook("stop"));
        self.push(unit, Event::hook("remove"));
    }

    pub fn remove_relation(&mut self, rel: u32) {
        let Some(r) = self.relations.get_mut(&rel) else {
            return;
        };
        if r.dying {
            return;
        }
        r.dying = true;
        let scope: Vec<String> = r.scope.iter().cloned().collect();
        let endpoints = r.endpoints.clone();
        let container = r.container;
        r.scope.clear();
        // The subordinate units this relation brought go with it.
        if container {
            let apps: Vec<String> = endpoints.iter().map(|e| e.app.clone()).collect();
            let subordinates: Vec<String> = self
                .units
                .values()
                .filter(|u| apps.contains(&u.app))
                .filter(|u| {
                    u.principal
                        .as_deref()
                        .is_some_and(|p| apps.iter().any(|a| a == app_of(p)))
                })
                .map(|u| u.name.clone())
                .collect();
            for u in subordinates {
                self.remove_unit(&u);
            }
        }
        for u in scope {
            let app = app_of(&u).to_string();
            let ep = endpoints
                .iter()
                .find(|e| e.app == app)
                .map(|e| e.name.clone())
                .unwrap_or_default();
            let remote_app = self.relations[&rel].remote_app_of(&app).map(String::from);
            let view: Vec<String> = self
                .units
                .get(&u)
                .and_then(|x| x.views.get(&rel))
                .map(|v| v.iter().cloned().collect())
                .unwrap_or_default();
            for v in view {
                self.push(
                    &u,
                    Event {
                        hook: format!("{ep}-relation-departed"),
                        relation: Some(rel),
                        remote_unit: Some(v.clone()),
                        remote_app: remote_app.clone(),
                        departing: Some(v.clone()),
                        ..Default::default()
                    },
                );
            }
            self.push(
                &u,
                Event {
                    hook: format!("{ep}-relation-broken"),
                    relation: Some(rel),
                    remote_app,
                    ..Default::default()
                },
            );
        }
    }

    /// Gives the application a new leader (the lowest-numbered live unit) after the old one left.
    pub fn elect(&mut self, app: &str) {
        let mut candidates: Vec<&Unit> = self
            .units
            .values()
            .filter(|u| u.app == app && u.life == Life::Alive)
            .collect();
        candidates.sort_by_key(|u| unit_number(&u.name));
        let Some(new) = candidates.first().map(|u| u.name.clone()) else {
            if let Some(a) = self.apps.get_mut(app) {
                a.leader = None;
            }
            return;
        };
        let others: Vec<String> = candidates.iter().skip(1).map(|u| u.name.clone()).collect();
        if let Some(a) = self.apps.get_mut(app) {
            if a.leader.as_deref() == Some(new.as_str()) {
                return;
            }
            a.leader = Some(new.clone());
        }
        self.push(&new, Event::hook("leader-elected"));
        for o in others {
            self.push(&o, Event::hook("leader-settings-changed"));
        }
    }

    /// Applies a successful hook's buffered changes and fires what they cause.
    pub fn commit(&mut self, ctx: &HookCtx) {
        for ((rel, owner), writes) in &ctx.rel_writes {
            let Some(r) = self.relations.get_mut(rel) else {
                continue;
            };
            let is_app = !owner.contains('/');
            let bag = if is_app {
                r.app_data.entry(owner.clone()).or_default()
            } else {
                r.unit_data.entry(owner.clone()).or_default()
            };
            let mut changed = false;
            for (k, v) in writes {
                if v.is_empty() {
                    changed |= bag.remove(k).is_some();
                } else if bag.get(k) != Some(v) {
                    bag.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
            // A departing unit's writes are not published.
            let departing = self
                .units
                .get(&ctx.unit)
                .map(|u| u.life == Life::Dying)
                .unwrap_or(true);
            if !changed || r.dying || departing {
                continue;
            }
            let writer_app = app_of(&ctx.unit).to_string();
            let remote_app = r.remote_app_of(&writer_app).unwrap_or("").to_string();
            if !is_app && !r.scope.contains(owner) {
                continue;
            }
            let container = r.container;
            let targets: Vec<String> = r
                .scope
                .iter()
                .filter(|u| app_of(u) == remote_app && *u != &ctx.unit)
                .filter(|u| !container || same_machine(&self.units, &ctx.unit, u))
                .cloned()
                .collect();
            let ep = r
                .endpoint_of(&remote_app)
                .map(|e| e.name.clone())
                .unwrap_or_default();
            for t in targets {
                let ev = Event {
                    hook: format!("{ep}-relation-changed"),
                    relation: Some(*rel),
                    remote_unit: if is_app { None } else { Some(owner.clone()) },
                    remote_app: Some(writer_app.clone()),
                    ..Default::default()
                };
                self.push(&t, ev);
            }
        }
        if let Some(u) = self.units.get_mut(&ctx.unit) {
            for (open, p) in &ctx.ports {
                if *open {
                    u.ports.insert(p.clone());
                } else {
                    u.ports.remove(p);
                }
            }
            for (k, v) in &ctx.state {
                match v {
                    Some(v) => u.state.insert(k.clone(), v.clone()),
                    None => u.state.remove(k),
                };
            }
        }
        for op in &ctx.secrets {
            self.apply_secret(op, &ctx.unit);
        }
        for (name, count) in &ctx.storage_add {
            self.add_storage(&ctx.unit, name, *count, None);
        }
    }

    /// New instances of storage `name` for `unit` (in `volume`'s pool, else rootfs), each
    /// attached by a `<name>-storage-attached` hook. Returns their ids.
    pub fn add_storage(
        &mut self,
        unit: &str,
        name: &str,
        count: u32,
        volume: Option<Volume>,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let n = self.next_storage.entry(name.to_string()).or_insert(0);
            let id = format!("{name}/{n}");
            *n += 1;
            if let Some(v) = &volume {
                self.volumes.insert(id.clone(), v.clone());
            }
            if let Some(u) = self.units.get_mut(unit) {
                u.storage.push(id.clone());
            }
            self.push(
                unit,
                Event {
                    hook: format!("{name}-storage-attached"),
                    storage: Some(id.clone()),
                    ..Default::default()
                },
            );
            ids.push(id);
        }
        ids
    }

    fn apply_secret(&mut self, op: &SecretOp, unit: &str) {
        match op {
            SecretOp::Add(s) => {
                self.secrets.insert(s.id.clone(), s.clone());
            }
            SecretOp::Set {
                id,
                content,
                label,
                description,
                expire,
                rotate,
            } => {
                let Some(s) = self.secrets.get_mut(id) else {
                    return;
                };
                if let Some(l) = label {
                    s.label = Some(l.clone());
                }
                if let Some(d) = description {
                    s.description = Some(d.clone());
                }
                if expire.is_some() {
                    s.expire = expire.clone();
                }
                if rotate.is_some() {
                    s.rotate = rotate.clone();
                }
                if let Some(c) = content {
                    let rev = s.latest() + 1;
                    s.revisions.insert(rev, c.clone());
                    // Consumers tracking an older revision hear about the new one.
                    let consumers: Vec<(String, u32)> = self
                        .units
                        .values()
                        .filter_map(|u| u.tracked.get(id).map(|r| (u.name.clone(), *r)))
                        .collect();
                    let label = s.label.clone();
                    for (c, r) in consumers {
                        if r < rev && c != unit {
                            let cl = self.secrets[id]
                                .consumer_labels
                                .get(&c)
                                .cloned()
                                .or(label.clone());
                            let _ = cl;
                            self.push(
                                &c,
                                Event {
                                    hook: "secret-changed".into(),
                                    secret: Some(id.clone()),
                                    secret_revision: Some(rev),
                                    ..Default::default()
                                },
                            );
                        }
                    }
                }
            }
            SecretOp::Remove { id, revision } => match revision {
                Some(r) => {
                    if let Some(s) = self.secrets.get_mut(id) {
                        s.revisions.remove(r);
                    }
                }
                None => {
                    self.secrets.remove(id);
                }
            },
            SecretOp::Grant { id, relation, unit } => {
                let targets: Vec<String> = match unit {
                    Some(u) => vec![u.clone()],
                    None => {
                        let Some(r) = self.relations.get(relation) else {
                            return;
                        };
                        let owner_app = self
                            .secrets
                            .get(id)
                            .map(|s| s.owner.split('/').next().unwrap_or("").to_string())
                            .unwrap_or_default();
                        let remote = r.remote_app_of(&owner_app).unwrap_or("").to_string();
                        vec![remote]
                    }
                };
                if let Some(s) = self.secrets.get_mut(id) {
                    let latest = s.latest();
                    s.grants.entry(*relation).or_default().extend(targets);
                    let _ = latest;
                }
            }
            SecretOp::Revoke { id, relation, unit } => {
                if let Some(s) = self.secrets.get_mut(id) {
                    if let Some(g) = s.grants.get_mut(relation) {
                        match unit {
                            Some(u) => {
                                g.remove(u);
                            }
                            None => g.clear(),
                        }
                    }
                }
            }
        }
    }

    /// The unit-view of relation events that are stale (their relation is gone).
    pub fn event_is_stale(&self, ev: &Event) -> bool {
        match ev.relation {
            Some(rel) => {
                let gone = !self.relations.contains_key(&rel);
                let tail = ev.hook.ends_with("-relation-departed")
                    || ev.hook.ends_with("-relation-broken");
                gone || (self.relations[&rel].dying && !tail)
            }
            None => false,
        }
    }

    /// Removes dying relations that no unit still has hooks for.
    pub fn reap_relations(&mut self) -> bool {
        let mut changed = false;
        let dying: Vec<u32> = self
            .relations
            .values()
            .filter(|r| r.dying)
            .map(|r| r.id)
            .collect();
        for rel in dying {
            let busy = self.units.values().any(|u| {
                u.queue
                    .iter()
                    .chain(u.running.iter())
                    .any(|e| e.relation == Some(rel))
            });
            if !busy {
                changed = true;
                self.relations.remove(&rel);
                for u in self.units.values_mut() {
                    u.views.remove(&rel);
                }
            }
        }
        changed
    }

    /// The status Juju derives for an application whose leader never set one.
    pub fn app_status(&self, app: &str) -> Status {
        if let Some(s) = self.apps.get(app).and_then(|a| a.status.clone()) {
            return s;
        }
        let sev = |s: &str| match s {
            "error" => 100,
            "blocked" => 90,
            "maintenance" => 80,
            "waiting" => 70,
            "active" => 60,
            "terminated" => 50,
            _ => 40,
        };
        let mut best: Option<Status> = None;
        for u in self.units.values().filter(|u| u.app == app) {
            let s = unit_workload(u);
            if best
                .as_ref()
                .map(|b| sev(&s.current) > sev(&b.current))
                .unwrap_or(true)
            {
                best = Some(s);
            }
        }
        best.unwrap_or_else(|| Status::new("unknown", ""))
    }
}

/// Whether units `a` and `b` share a machine (a container-scoped relation's scope).
fn same_machine(units: &BTreeMap<String, Unit>, a: &str, b: &str) -> bool {
    match (units.get(a), units.get(b)) {
        (Some(x), Some(y)) => x.machine == y.machine,
        _ => false,
    }
}

/// A unit's workload status as Juju shows it: error while a hook is failing.
pub fn unit_workload(u: &Unit) -> Status {
    match &u.error {
        Some(e) => Status {
            current: "error".into(),
            message: format!("hook failed: \"{}\"", e.hook),
            since: u.workload.since.clone(),
        },
        None => u.workload.clone(),
    }
}

impl Ctl {
    /// Makes storage `id` of `unit` ready at its location before a hook sees it: a `loop`
    /// volume is mounted (see `storage`); `rootfs` needs nothing.
    pub async fn prepare_storage(&self, model: &str, unit: &str, id: &str) -> Result<()> {
        let (Some(v), Some((location, Some(init)))) = (
            self.read(|w| w.models.get(model)?.volumes.get(id).cloned()),
            self.storage_site(model, unit, id),
        ) else {
            return Ok(());
        };
        if v.pool != "loop" {
            return Ok(());
        }
        let image = crate::storage::image(&model_dir(&self.home, model), id);
        tokio::task::spawn_blocking(move || {
            crate::storage::attach_loop(init, &image, v.size_mib, &location)
        })
        .await?
        .with_context(|| format!("attaching storage {id} to {unit}"))
    }

    /// Where storage `id` of `unit` is mounted, and its machine's PID 1 (when running).
    fn storage_site(&self, model: &str, unit: &str, id: &str) -> Option<(String, Option<u32>)> {
        self.read(|w| {
            let m = w.models.get(model)?;
            let u = m.units.get(unit)?;
            let def = m
                .apps
                .get(&u.app)?
                .meta
                .storage
                .get(id.split('/').next()?)?;
            let init = m.machines.get(&u.machine).and_then(|x| x.init_pid);
            Some((storage_location(def, id), init))
        })
    }

    /// After `remove-storage`'s detaching hook: unmounts the volume, forgets the instance
    /// and removes its image.
    pub async fn release_storage(&self, model: &str, unit: &str, id: &str) -> Result<()> {
        if let Some((location, Some(init))) = self.storage_site(model, unit, id) {
            tokio::task::spawn_blocking(move || crate::storage::detach(init, &location)).await??;
        }
        self.mutate(|w| {
            if let Some(m) = w.models.get_mut(model) {
                m.volumes.remove(id);
                if let Some(u) = m.units.get_mut(unit) {
                    u.storage.retain(|s| s != id);
                }
            }
        });
        let image = crate::storage::image(&model_dir(&self.home, model), id);
        match std::fs::remove_file(&image) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Loads every machine's firewall of `model` again (after `open-port`/`close-port`,
    /// `expose`, `unexpose` or a `firewall-mode` change). Machines without a network
    /// namespace (down) get theirs when they start.
    pub fn refresh_firewall(&self, model: &str) -> Result<()> {
        let scripts: Vec<(String, String)> = self.read(|w| {
            w.models
                .get(model)
                .map(|m| {
                    m.machines
                        .keys()
                        .map(|id| (m.net().netns(*id), m.firewall(*id)))
                        .collect()
                })
                .unwrap_or_default()
        });
        for (netns, script) in scripts {
            if Path::new("/run/netns").join(&netns).exists() {
                crate::firewall::apply(&netns, &script)?;
            }
        }
        Ok(())
    }

    pub fn new(home: PathBuf, world: World) -> Arc<Ctl> {
        let (gen, _) = watch::channel(0);
        Arc::new(Ctl {
            home,
            world: Mutex::new(world),
            contexts: Mutex::new(HashMap::new()),
            gen,
            workers: Mutex::new(HashSet::new()),
            serial: Mutex::new(HashMap::new()),
            last_update_status: Mutex::new(HashMap::new()),
            starts: watch::channel(0).0,
            shutdown: tokio::sync::Notify::new(),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.gen.subscribe()
    }

    /// Runs `f` on the world, persists it, and wakes everyone waiting for a change.
    pub fn mutate<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut w = lock(&self.world);
        let r = f(&mut w);
        if let Err(e) = w.save(&state_path(&self.home)) {
            eprintln!("cannot persist state: {e:#}");
        }
        drop(w);
        self.gen.send_modify(|g| *g += 1);
        r
    }

    /// Like `mutate`, but persists and wakes waiters only when `f` says it changed something.
    pub fn mutate_if<R>(&self, f: impl FnOnce(&mut World) -> (R, bool)) -> R {
        let mut w = lock(&self.world);
        let (r, changed) = f(&mut w);
        if changed {
            if let Err(e) = w.save(&state_path(&self.home)) {
                eprintln!("cannot persist state: {e:#}");
            }
        }
        drop(w);
        if changed {
            self.gen.send_modify(|g| *g += 1);
        }
        r
    }

    /// Reads one model; an error, never a panic under the lock, if it is gone (a command can
    /// race a destroy-model).
    pub fn model<R>(&self, name: &str, f: impl FnOnce(&Model) -> R) -> Result<R> {
        self.read(|w| w.models.get(name).map(f))
            .ok_or_else(|| anyhow::anyhow!("model \"{name}\" not found"))
    }

    /// Changes one model; an error if it is gone.
    pub fn model_mut<R>(&self, name: &str, f: impl FnOnce(&mut Model) -> Result<R>) -> Result<R> {
        self.mutate(|w| match w.models.get_mut(name) {
            Some(m) => f(m),
            None => Err(anyhow::anyhow!("model \"{name}\" not found")),
        })
    }

    pub fn read<R>(&self, f: impl FnOnce(&World) -> R) -> R {
        f(&lock(&self.world))
    }

    /// Waits until `cond` holds or the deadline passes.
    pub async fn wait_for<R>(
        &self,
        deadline: Option<Instant>,
        mut cond: impl FnMut(&World) -> Option<R>,
    ) -> Option<R> {
        let mut rx = self.subscribe();
        loop {
            if let Some(r) = self.read(&mut cond) {
                return Some(r);
            }
            let changed = rx.changed();
            match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() || tokio::time::timeout(left, changed).await.is_err() {
                        return self.read(&mut cond);
                    }
                }
                None => {
                    let _ = changed.await;
                }
            }
        }
    }

    pub fn log(&self, model: &str, line: &str) {
        use std::io::Write;
        // A model's directory is made by add-model: a line about a destroyed model (a start
        // that failed after it went) must not bring the directory back.
        let dir = model_dir(&self.home, model);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("debug.log"))
        {
            let ts = time::OffsetDateTime::now_utc();
            let _ = writeln!(
                f,
                "{:02}:{:02}:{:02} {}",
                ts.hour(),
                ts.minute(),
                ts.second(),
                line
            );
        }
    }

    /// Ensures a worker task runs for the unit.
    pub fn ensure_worker(self: &Arc<Self>, model: &str, unit: &str) {
        let key = (model.to_string(), unit.to_string());
        if !lock(&self.workers).insert(key.clone()) {
            return;
        }
        let ctl = self.clone();
        tokio::spawn(async move {
            ctl.worker(&key.0, &key.1).await;
            lock(&ctl.workers).remove(&key);
        });
    }

    /// Changes one machine's record; false when the machine (or its model) is gone.
    fn update_machine(&self, model: &str, machine: u32, f: impl FnOnce(&mut Machine)) -> bool {
        self.mutate(|w| {
            if let Some(m) = w
                .models
                .get_mut(model)
                .and_then(|m| m.machines.get_mut(&machine))
            {
                f(m);
                true
            } else {
                false
            }
        })
    }

    /// Removes the directory of a model that is no longer in the world: a machine's start
    /// under way when the model was destroyed may have made it again.
    fn forget_model_dir_if_gone(&self, model: &str) {
        if !self.read(|w| w.models.contains_key(model)) {
            remove_tree(&model_dir(&self.home, model));
        }
    }

    /// A machine that started after its model (or itself) was destroyed is nobody's: its
    /// processes are ended and what the host holds for it removed, here, by the starter.
    async fn end_orphan(
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
        let home = self.home.clone();
        let sock = machine::agent_socket(&mdir, machine);
        let _ = std::fs::remove_file(&sock);
        let firewall = self
            .read(|w| w.models.get(model).map(|m| m.firewall(machine)))
            .unwrap_or_default();
        let spawned = tokio::task::spawn_blocking({
            let net = net.clone();
            move || -> Result<machine::Spawned> {
                let hold = (hold_at.as_deref() == Some("veth"))
                    .then(|| mdir.join(format!("hold-veth-{machine}")));
                let r = machine::create_netns(&net, machine, second_nic, hold.as_deref())
                    .and_then(|()| crate::firewall::apply(&net.netns(machine), &firewall))
                    .and_then(|()| {
                        machine::spawn_agent(&home, &mdir, &net, machine, &hostname, kind)
                    });
                // The second hold point (harness-hold-at=spawned): the machine's processes
                // run and nothing in the world records them yet.
                // A model already gone makes no hold: the start goes on and finds it gone.
                if r.is_ok() && hold_at.as_deref() == Some("spawned") {
                    let _ = machine::hold_at(&mdir.join(format!("hold-spawned-{machine}")));
                }
                // A step that failed half-way (a destroy-model deleting the namespace while
                // the veth pair was being moved into it) leaves no link or namespace behind.
                if r.is_err() {
                    machine::remove_host_parts(&net, machine);
                }
                r
            }
        })
        .await??;
        // Recorded at once, under the world's lock: a destroy-model from now on finds the
        // process; one that came first left no machine record, and the machine is ended.
        if !self.update_machine(model, machine, |mach| mach.spawn_pid = Some(spawned.pid)) {
            return Err(self.end_orphan(model, &net, machine, spawned.pid).await);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if machine::agent_call(&sock, &AgentRequest::Ping)
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() > deadline || !machine::pid_alive(spawned.pid) {
                anyhow::bail!(
                    "the machine agent did not come up; see {}",
                    machine::agent_socket(&model_dir(&self.home, model), machine)
                        .with_file_name("agent.log")
                        .display()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let init = machine::children_of(spawned.pid).first().copied();
        // Known at once: a crash or kill-controller during provisioning must find the machine.
        let kept = self.update_machine(model, machine, |mach| {
            mach.spawn_pid = Some(spawned.pid);
            mach.init_pid = init;
        });
        if !kept {
            return Err(self.end_orphan(model, &net, machine, spawned.pid).await);
        }
        // First boot: what cloud-init does on a cloud: the `ubuntu` user with its home (where
        // actions leave files for `juju scp`), apt sources pointing at the mirror.
        if let Some(mirror) = provision {
            self.run_on_machine(
                model,
                machine,
                "adding the ubuntu user",
                // As cloud-init's default user on Ubuntu images: passwordless sudo, which
                // is how `juju ssh` users act as root.
                "id ubuntu >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ubuntu; \
                 mkdir -p /etc/sudoers.d && \
                 echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users && \
                 chmod 0440 /etc/sudoers.d/90-cloud-init-users"
                    .into(),
            )
            .await?;
            if !mirror.is_empty() {
                self.configure_apt(model, machine, &mirror).await?;
            }
            if kind == machine::Kind::Snapd {
                self.install_snapd(model, machine).await?;
            }
            self.update_machine(model, machine, |mach| mach.provisioned = true);
        }
        for unit in &units {
            self.install_charm(model, unit).await?;
            // Volumes attached before this boot are mounted again before any hook runs.
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
        self.mutate(|w| {
            if let Some(m) = w.models.get_mut(model) {
                if let Some(mach) = m.machines.get_mut(&machine) {
                    mach.status = "started".into();
                    if mach.cut {
                        let _ = machine::set_link(&m.net(), machine, false);
                    }
                }
                for u in m.units.values_mut().filter(|u| u.machine == machine) {
                    if u.agent.current == "allocating" || u.agent.current == "lost" {
                        u.agent = Status::new("idle", "");
                    }
                    if !u.workload_set && !u.installed {
                        u.workload = Status::new("maintenance", "installing charm software");
                    }
                }
            }
        });
        Ok(())
    }

    /// Installs the unit's charm into its agent directory on its machine (kept across
    /// reboots), unless it is there: at boot for the units on the machine, and before the
    /// first hooks of a subordinate that arrives on a running machine (a unit whose install
    /// hook ran has it).
    async fn install_charm(&self, model: &str, unit: &str) -> Result<()> {
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
        let src = PathBuf::from(charm_dir);
        tokio::task::spawn_blocking(move || copy_tree(&src, &target)).await?
    }

    /// Points a new machine's apt at the model's mirror and reads its index, as cloud-init's
    /// `apt` and `package_update` do: the host's sources are hidden from the machine, so a
    /// package comes from the mirror or not at all.
    async fn configure_apt(&self, model: &str, machine: u32, mirror: &str) -> Result<()> {
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
    async fn install_snapd(&self, model: &str, machine: u32) -> Result<()> {
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
    async fn run_on_machine(
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

    async fn worker(self: &Arc<Self>, model: &str, unit: &str) {
        let mut rx = self.subscribe();
        // Hooks and tasks take turns when both wait: a unit whose hooks keep coming (slow
        // update-status hooks on a short interval) still runs `juju exec` and actions.
        let mut task_turn = false;
        loop {
            enum Next {
                Gone,
                Wait(Option<Duration>),
                Hook(Event),
                Task(u64),
            }
            // Decide the next event; persist and wake others only if this changed the state
            // (otherwise every idle worker would wake every other one, forever).
            let next = self.mutate_if(|w| {
                let Some(m) = w.models.get_mut(model) else {
                    return (Next::Gone, false);
                };
                let mut changed = m.reap_relations();
                let Some(u) = m.units.get(unit) else {
                    return (Next::Gone, changed);
                };
                let ready = m
                    .machines
                    .get(&u.machine)
                    .map(|x| x.status == "started")
                    .unwrap_or(false);
                if !ready {
                    return (Next::Wait(None), changed);
                }
                let retry = m.config_bool("automatically-retry-hooks", true);
                let u = m.units.get_mut(unit).unwrap();
                if let Some(e) = &u.error {
                    if let Some(t) = u.actions.pop_front() {
                        return (Next::Task(t), true);
                    }
                    let next = match e.retry_at {
                        Some(at) if retry => {
                            let now = now_ms();
                            if now >= at {
                                u.queue
                                    .front()
                                    .cloned()
                                    .map(Next::Hook)
                                    .unwrap_or(Next::Wait(None))
                            } else {
                                Next::Wait(Some(Duration::from_millis(at - now)))
                            }
                        }
                        _ => Next::Wait(None),
                    };
                    return (next, changed);
                }
                if task_turn {
                    if let Some(t) = m.units.get_mut(unit).unwrap().actions.pop_front() {
                        return (Next::Task(t), true);
                    }
                }
                while let Some(ev) = m.units[unit].queue.front().cloned() {
                    if m.event_is_stale(&ev) {
                        m.units.get_mut(unit).unwrap().queue.pop_front();
                        changed = true;
                        continue;
                    }
                    // A principal is removed only after its subordinates have gone.
                    let waits_for_subordinates = ev.hook == "remove"
                        && m.units
                            .values()
                            .any(|s| s.principal.as_deref() == Some(unit));
                    if waits_for_subordinates {
                        return (Next::Wait(None), changed);
                    }
                    return (Next::Hook(ev), changed);
                }
                let u = m.units.get_mut(unit).unwrap();
                if let Some(t) = u.actions.pop_front() {
                    return (Next::Task(t), true);
                }
                (Next::Wait(None), changed)
            });
            match next {
                Next::Gone => return,
                Next::Wait(d) => {
                    let changed = rx.changed();
                    match d {
                        Some(d) => {
                            let _ = tokio::time::timeout(d, changed).await;
                        }
                        None => {
                            let _ = changed.await;
                        }
                    }
                }
                Next::Hook(ev) => {
                    let lock = self.serial_lock(model);
                    let _g = match &lock {
                        Some(l) => Some(l.lock().await),
                        None => None,
                    };
                    self.run_hook(model, unit, ev).await;
                    task_turn = true;
                }
                Next::Task(t) => {
                    task_turn = false;
                    let lock = self.serial_lock(model);
                    let _g = match &lock {
                        Some(l) => Some(l.lock().await),
                        None => None,
                    };
                    self.run_task(model, unit, t).await;
                }
            }
        }
    }

    fn serial_lock(&self, model: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let serial = self.read(|w| {
            w.models
                .get(model)
                .map(|m| m.config_bool("harness-serial", false))
                .unwrap_or(false)
        });
        if !serial {
            return None;
        }
        Some(
            lock(&self.serial)
                .entry(model.to_string())
                .or_default()
                .clone(),
        )
    }

    /// Builds the hook environment of juju-contract.md §2.
    fn environment(
        &self,
        m: &Model,
        unit: &str,
        ctx_id: &str,
        ev: Option<&Event>,
        dispatch: &str,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let charm = charm_dir_in_machine(unit);
        let u = &m.units[unit];
        let mut set = |k: &str, v: &str| {
            env.insert(k.to_string(), v.to_string());
        };
        set(
            "PATH",
            &format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                proto::MACHINE_TOOLS_BIN
            ),
        );
        set("CHARM_DIR", &charm);
        set("JUJU_CHARM_DIR", &charm);
        set("JUJU_CONTEXT_ID", ctx_id);
        set(
            "JUJU_AGENT_SOCKET_ADDRESS",
            &format!("{}/controller.sock", proto::MACHINE_SOCKET_DIR),
        );
        set("JUJU_AGENT_SOCKET_NETWORK", "unix");
        set("JUJU_UNIT_NAME", unit);
        if let Some(p) = &u.principal {
            set("JUJU_PRINCIPAL_UNIT", p);
        }
        set("JUJU_MODEL_UUID", &m.uuid);
        set("JUJU_MODEL_NAME", &m.name);
        set(
            "JUJU_API_ADDRESSES",
            &format!("{}:17070", m.net().host_address()),
        );
        set("JUJU_MACHINE_ID", &u.machine.to_string());
        if u.principal.is_none() {
            set("JUJU_PRINCIPAL_UNIT", "");
        }
        set("JUJU_AVAILABILITY_ZONE", "");
        set("JUJU_VERSION", JUJU_VERSION);
        set("CLOUD_API_VERSION", "");
        for p in ["HTTP", "HTTPS", "FTP", "NO"] {
            set(&format!("JUJU_CHARM_{p}_PROXY"), "");
        }
        set("JUJU_DISPATCH_PATH", dispatch);
        set("LANG", "C.UTF-8");
        set("DEBIAN_FRONTEND", "noninteractive");
        set("APT_LISTCHANGES_FRONTEND", "none");
        // Juju's ubuntuEnv (internal/worker/uniter/runner/context/env.go) sets TERM and no
        // HOME: a charm that needs a home must not count on one.
        set("TERM", "tmux-256color");
        set(
            "JUJU_HOOK_NAME",
            dispatch.strip_prefix("hooks/").unwrap_or(""),
        );
        if let Some(ev) = ev {
            if let Some(rel) = ev.relation {
                let r = m.relations.get(&rel);
                let ep = r
                    .and_then(|r| r.endpoint_of(app_of(unit)))
                    .map(|e| e.name.clone())
                    .unwrap_or_default();
                set("JUJU_RELATION", &ep);
                set("JUJU_RELATION_ID", &format!("{ep}:{rel}"));
                set("JUJU_REMOTE_APP", ev.remote_app.as_deref().unwrap_or(""));
                set("JUJU_REMOTE_UNIT", ev.remote_unit.as_deref().unwrap_or(""));
                if let Some(d) = &ev.departing {
                    set("JUJU_DEPARTING_UNIT", d);
                }
            }
            if let Some(s) = &ev.storage {
                let name = s.split('/').next().unwrap_or("");
                let def = m
                    .apps
                    .get(app_of(unit))
                    .and_then(|a| a.meta.storage.get(name))
                    .cloned()
                    .unwrap_or_default();
                set("JUJU_STORAGE_ID", s);
                set("JUJU_STORAGE_LOCATION", &storage_location(&def, s));
                set(
                    "JUJU_STORAGE_KIND",
                    if def.kind == "block" {
                        "block"
                    } else {
                        "filesystem"
                    },
                );
            }
            if let Some(sid) = &ev.secret {
                set("JUJU_SECRET_ID", sid);
                let label = m
                    .secrets
                    .get(sid)
                    .and_then(|s| s.consumer_labels.get(unit).cloned().or(s.label.clone()))
                    .unwrap_or_default();
                set("JUJU_SECRET_LABEL", &label);
                if let Some(r) = ev.secret_revision.filter(|r| *r > 0) {
                    set("JUJU_SECRET_REVISION", &r.to_string());
                }
            }
        }
        env
    }

    fn new_context(
        &self,
        w: &mut World,
        model: &str,
        unit: &str,
        ev: &Event,
        task: Option<u64>,
        is_action: bool,
    ) -> Option<HookCtx> {
        w.next_context += 1;
        let m = w.models.get(model)?;
        let init = m
            .units
            .get(unit)
            .and_then(|u| m.machines.get(&u.machine))
            .and_then(|x| x.init_pid)
            .unwrap_or(0);
        Some(HookCtx {
            id: format!(
                "{}-{}-{}",
                unit,
                if ev.hook.is_empty() {
                    "action"
                } else {
                    ev.hook.as_str()
                },
                w.next_context
            ),
            model: model.into(),
            unit: unit.into(),
            app: app_of(unit).into(),
            event: ev.clone(),
            task,
            is_action,
            machine_root: PathBuf::from(format!("/proc/{init}/root")),
            rel_writes: Default::default(),
            ports: vec![],
            secrets: vec![],
            state: vec![],
            storage_add: vec![],
            reboot: false,
        })
    }

    /// Which file Juju would run for this hook or action, if any.
    fn handler(charm_dir: &str, kind: &str, name: &str) -> Option<String> {
        let base = Path::new(charm_dir);
        if base.join("dispatch").exists() {
            return Some("dispatch".into());
        }
        let p = format!("{kind}/{name}");
        if base.join(&p).exists() {
            return Some(p);
        }
        None
    }

    /// Runs a process on the unit's machine, in the charm dir, while `ctx` is the live hook
    /// context its tools talk to; returns how it ended and the context with its buffered
    /// changes.
    async fn run_in_context(
        &self,
        model: &str,
        unit: &str,
        ctx: HookCtx,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
    ) -> (Result<(proto::AgentReply, Option<u32>)>, HookCtx) {
        let Some(machine_id) = self.read(|w| {
            w.models
                .get(model)
                .and_then(|m| m.units.get(unit))
                .map(|u| u.machine)
        }) else {
            let err = anyhow::anyhow!("unit {unit} of model {model} is gone");
            return (Err(err), ctx);
        };
        let sock = machine::agent_socket(&model_dir(&self.home, model), machine_id);
        lock(&self.contexts).insert(ctx.id.clone(), ctx.clone());
        let cwd = charm_dir_in_machine(unit);
        let result = machine::agent_call(&sock, &AgentRequest::Run { argv, env, cwd }).await;
        let ctx = lock(&self.contexts).remove(&ctx.id).unwrap_or(ctx);
        (result, ctx)
    }

    async fn run_hook(self: &Arc<Self>, model: &str, unit: &str, ev: Event) {
        let prep = self.mutate(|w| {
            let m = w.models.get(model)?;
            let charm_dir = m.apps.get(app_of(unit))?.charm_dir.clone();
            let ctx = self.new_context(w, model, unit, &ev, None, false)?;
            let m = w.models.get_mut(model)?;
            let u = m.units.get_mut(unit)?;
            // The event leaves the queue while it runs, so a change committed meanwhile queues
            // a fresh event instead of coalescing with one that already read the old data.
            if u.queue.front() == Some(&ev) {
                u.queue.pop_front();
            }
            u.running = Some(ev.clone());
            u.agent = Status::new("executing", &format!("running {} hook", ev.hook));
            if let (Some(rel), Some(remote)) = (ev.relation, &ev.remote_unit) {
                if ev.hook.ends_with("-relation-joined") {
                    u.views.entry(rel).or_default().insert(remote.clone());
                } else if ev.hook.ends_with("-relation-departed") {
                    u.views.entry(rel).or_default().remove(remote);
                }
            }
            let handler = Self::handler(&charm_dir, "hooks", &ev.hook);
            let dispatch = format!("hooks/{}", ev.hook);
            let env = self.environment(m, unit, &ctx.id, Some(&ev), &dispatch);
            Some((ctx, handler, env))
        });
        let Some((ctx, handler, env)) = prep else {
            return;
        };
        let charm = charm_dir_in_machine(unit);
        let started = Instant::now();
        // A subordinate's charm arrives on its principal's running machine here.
        let attaching = async {
            self.install_charm(model, unit).await?;
            match (&ev.storage, ev.hook.ends_with("-storage-attached")) {
                (Some(id), true) => self.prepare_storage(model, unit, id).await,
                _ => Ok(()),
            }
        }
        .await;
        let (result, ctx) = match (attaching, &handler) {
            // Storage that cannot be mounted fails its hook, which is retried.
            (Err(e), _) => (Err(e), ctx),
            (Ok(()), None) => (Ok((proto::AgentReply::default(), None)), ctx),
            (Ok(()), Some(h)) => {
                self.run_in_context(model, unit, ctx, vec![format!("{charm}/{h}")], env)
                    .await
            }
        };
        let name = ev.hook.clone();
        match &result {
            Ok((r, _)) => {
                for line in r.stdout.lines() {
                    self.log(
                        model,
                        &format!("unit-{}: DEBUG {name}: {line}", unit.replace('/', "-")),
                    );
                }
                for line in r.stderr.lines() {
                    self.log(
                        model,
                        &format!("unit-{}: WARNING {name}: {line}", unit.replace('/', "-")),
                    );
                }
                if let Some(e) = &r.error {
                    self.log(
                        model,
                        &format!("unit-{}: ERROR {name}: {e}", unit.replace('/', "-")),
                    );
                }
                self.log_ran(model, unit, &format!("{name:?} hook"), r, started);
            }
            Err(e) => self.log(
                model,
                &format!("unit-{}: ERROR {name}: {e:#}", unit.replace('/', "-")),
            ),
        }
        let hook_ok = matches!(&result, Ok((r, _)) if r.code == 0 && r.error.is_none());
        let mut finalize = false;
        let mut reboot = false;
        self.mutate(|w| {
            let Some(m) = w.models.get_mut(model) else {
                return;
            };
            let machine_up = m
                .units
                .get(unit)
                .and_then(|u| m.machines.get(&u.machine))
                .map(|x| x.status == "started")
                .unwrap_or(false);
            match result {
                Err(_) if !machine_up => {
                    // The machine went down under the hook: it runs again when the machine is back.
                    if let Some(u) = m.units.get_mut(unit) {
                        u.running = None;
                        u.queue.push_front(ev.clone());
                    }
                }
                Ok((r, _)) if r.code == 0 && r.error.is_none() => {
                    m.commit(&ctx);
                    let u = m.units.get_mut(unit).unwrap();
                    u.running = None;
                    u.error = None;
                    u.agent = Status::new("idle", "");
                    match name.as_str() {
                        // As Juju's createdRelationsResolver (internal/worker/uniter/relation/
                        // resolver.go; resolver_test.go): once installed, the unit joins its
                        // relations (EnterScope), before relation-created, leader-elected,
                        // config-changed and start; its peers see it while it starts.
                        "install" => {
                            u.installed = true;
                            if u.life == Life::Alive {
                                m.enter_scope(unit);
                            }
                        }
                        "start" if !u.started => {
                            u.started = true;
                            if !u.workload_set {
                                u.workload = Status::new("unknown", "");
                            }
                        }
                        "remove" => finalize = true,
                        _ => {}
                    }
                    reboot = ctx.reboot;
                }
                _ => {
                    let u = m.units.get_mut(unit).unwrap();
                    u.running = None;
                    u.queue.push_front(ev.clone());
                    let attempts = u.error.as_ref().map(|e| e.attempts + 1).unwrap_or(1);
                    let delay = (5_000u64 << (attempts - 1).min(6)).min(300_000);
                    u.error = Some(HookError {
                        hook: name.clone(),
                        retry_at: Some(now_ms() + delay),
                        attempts,
                    });
                    u.agent = Status::new("idle", "");
                }
            }
        });
        if !ctx.ports.is_empty() {
            if let Err(e) = self.refresh_firewall(model) {
                self.log(model, &format!("controller: ERROR firewall: {e:#}"));
            }
        }
        if let (Some(id), true) = (
            &ev.storage,
            hook_ok && ev.hook.ends_with("-storage-detaching"),
        ) {
            let removing = self.read(|w| {
                w.models
                    .get(model)
                    .and_then(|m| m.volumes.get(id))
                    .is_some_and(|v| v.removing)
            });
            if removing {
                if let Err(e) = self.release_storage(model, unit, id).await {
                    self.log(
                        model,
                        &format!("controller: ERROR removing storage {id}: {e:#}"),
                    );
                }
            }
        }
        if finalize {
            self.finalize_unit(model, unit).await;
        }
        if reboot {
            let machine = self.read(|w| {
                w.models
                    .get(model)
                    .and_then(|m| m.units.get(unit))
                    .map(|u| u.machine)
            });
            if let Some(id) = machine {
                let ctl = self.clone();
                let model = model.to_string();
                tokio::spawn(async move {
                    let _ = ctl.reboot(&model, id).await;
                });
            }
        }
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

    pub async fn finalize_unit(&self, model: &str, unit: &str) {
        let (machine, last_on_machine, root) = self
            .read(|w| {
                let m = w.models.get(model)?;
                let id = m.units.get(unit)?.machine;
                let root = m.machines.get(&id).and_then(|x| x.init_pid.or(x.spawn_pid));
                let kept = m.machines.get(&id).is_some_and(|x| x.kept);
                Some((Some(id), m.units_on(id).len() == 1 && !kept, root))
            })
            .unwrap_or((None, false, None));
        if !last_on_machine {
            // A subordinate leaves its principal's machine, or a unit a machine it was not
            // made for (Juju removes a machine with its last unit only if it made the
            // machine for a unit: not one from add-machine): its agent directory goes, the
            // machine stays, with whatever the charm left on it.
            if let Some(pid) = root {
                let dir = PathBuf::from(format!("/proc/{pid}/root"))
                    .join(agent_dir_in_machine(unit).trim_start_matches('/'));
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        self.log(
                            model,
                            &format!("controller: ERROR removing {}: {e}", dir.display()),
                        );
                    }
                }
            }
        }
        let machine = machine.filter(|_| last_on_machine);
        if let Some(id) = machine {
            self.crash_machine(model, id).await;
            let net = self.read(|w| w.models.get(model).map(|m| m.net()));
            match net {
                Some(net) => remove_machine_remains(&self.home, model, &net, id),
                None => remove_tree(&machine::machine_dir(&model_dir(&self.home, model), id)),
            }
        }
        self.mutate(|w| {
            let Some(m) = w.models.get_mut(model) else {
                return;
            };
            m.units.remove(unit);
            if let Some(id) = machine {
                m.machines.remove(&id);
            }
            let app = app_of(unit).to_string();
            let was_leader = m
                .apps
                .get(&app)
                .map(|a| a.leader.as_deref() == Some(unit))
                .unwrap_or(false);
            if was_leader {
                if let Some(a) = m.apps.get_mut(&app) {
                    a.leader = None;
                }
                m.elect(&app);
            }
            // An application whose last unit left while it was being removed goes too.
            let dying_app = m.apps.get(&app).is_some_and(|a| a.dying);
            if dying_app && !m.units.values().any(|u| u.app == app) {
                m.apps.remove(&app);
                let rels: Vec<u32> = m
                    .relations
                    .values()
                    .filter(|r| r.endpoint_of(&app).is_some())
                    .map(|r| r.id)
                    .collect();
                for r in rels {
                    m.remove_relation(r);
                }
            }
        });
    }

    /// `unit-etcd-0: INFO ran "start" hook (exit 0, 12 ms, peak RSS 9.1 MiB)`: what ran
    /// (a hook, an action, an exec), its exit, its time and the process's peak memory when
    /// the agent measured it.
    fn log_ran(
        &self,
        model: &str,
        unit: &str,
        what: &str,
        r: &proto::AgentReply,
        started: Instant,
    ) {
        let peak = r
            .max_rss_kb
            .map(|k| format!(", peak RSS {:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_default();
        self.log(
            model,
            &format!(
                "unit-{}: INFO ran {what} (exit {}, {} ms{peak})",
                unit.replace('/', "-"),
                r.code,
                started.elapsed().as_millis()
            ),
        );
    }

    async fn run_task(self: &Arc<Self>, model: &str, unit: &str, task_id: u64) {
        let prep = self.mutate(|w| {
            let m = w.models.get(model)?;
            let t = m.tasks.get(&task_id)?.clone();
            let charm_dir = m.apps.get(app_of(unit))?.charm_dir.clone();
            let ev = Event::default();
            let ctx = self.new_context(w, model, unit, &ev, Some(task_id), t.command.is_none())?;
            let m = w.models.get_mut(model)?;
            let (argv, env) = match &t.command {
                Some(cmd) => {
                    let env = self.environment(m, unit, &ctx.id, None, "juju-exec");
                    (
                        vec!["/bin/bash".to_string(), "-c".to_string(), cmd.join(" ")],
                        env,
                    )
                }
                None => {
                    let dispatch = format!("actions/{}", t.action);
                    let mut env = self.environment(m, unit, &ctx.id, None, &dispatch);
                    env.insert("JUJU_ACTION_NAME".into(), t.action.clone());
                    env.insert("JUJU_ACTION_UUID".into(), task_id.to_string());
                    env.insert("JUJU_ACTION_TAG".into(), format!("action-{task_id}"));
                    let charm = charm_dir_in_machine(unit);
                    match Self::handler(&charm_dir, "actions", &t.action) {
                        Some(h) => (vec![format!("{charm}/{h}")], env),
                        None => (vec![], env),
                    }
                }
            };
            let task = m.tasks.get_mut(&task_id)?;
            task.status = "running".into();
            task.started = now_juju();
            let u = m.units.get_mut(unit)?;
            u.agent = Status::new("executing", &format!("running action {}", t.action));
            Some((ctx, argv, env))
        });
        let Some((ctx, argv, env)) = prep else { return };
        if argv.is_empty() {
            self.mutate(|w| {
                if let Some(m) = w.models.get_mut(model) {
                    if let Some(t) = m.tasks.get_mut(&task_id) {
                        t.status = "failed".into();
                        t.message = format!("action not implemented on unit \"{unit}\"");
                        t.completed = now_juju();
                    }
                    if let Some(u) = m.units.get_mut(unit) {
                        u.agent = Status::new("idle", "");
                    }
                }
            });
            return;
        }
        let what = if argv.first().map(String::as_str) == Some("/bin/bash") {
            "exec".to_string()
        } else {
            format!(
                "{:?} action",
                env.get("JUJU_ACTION_NAME").cloned().unwrap_or_default()
            )
        };
        let started = Instant::now();
        let (result, ctx) = self.run_in_context(model, unit, ctx, argv, env).await;
        if let Ok((r, _)) = &result {
            self.log_ran(model, unit, &what, r, started);
        }
        self.mutate(|w| {
            let Some(m) = w.models.get_mut(model) else {
                return;
            };
            let ok = matches!(&result, Ok((r, _)) if r.error.is_none());
            if let Ok((r, _)) = &result {
                if r.code == 0 && r.error.is_none() {
                    m.commit(&ctx);
                }
            }
            if let Some(u) = m.units.get_mut(unit) {
                u.agent = Status::new("idle", "");
            }
            let Some(t) = m.tasks.get_mut(&task_id) else {
                return;
            };
            t.completed = now_juju();
            match result {
                Ok((r, _)) => {
                    t.return_code = Some(r.code);
                    t.stdout = r.stdout;
                    t.stderr = r.stderr;
                    if let Some(e) = r.error {
                        t.status = "failed".into();
                        t.message = e;
                    } else if t.status == "failing" {
                        t.status = "failed".into();
                    } else if r.code != 0 {
                        t.status = "failed".into();
                        if t.message.is_empty() {
                            t.message = format!("exit status {}", r.code);
                        }
                    } else {
                        t.status = "completed".into();
                    }
                }
                Err(e) => {
                    t.status = "failed".into();
                    t.message = format!("{e:#}");
                }
            }
            let _ = ok;
        });
        if !ctx.ports.is_empty() {
            if let Err(e) = self.refresh_firewall(model) {
                self.log(model, &format!("controller: ERROR firewall: {e:#}"));
            }
        }
    }

    /// Juju's deployer: every unit has a worker, including the subordinate units a
    /// relation creates inside a model change.
    pub async fn deployer_loop(self: Arc<Self>) {
        let mut rx = self.subscribe();
        loop {
            let units: Vec<(String, String)> = self.read(|w| {
                w.models
                    .iter()
                    .flat_map(|(name, m)| m.units.keys().map(move |u| (name.clone(), u.clone())))
                    .collect()
            });
            for (model, unit) in units {
                self.ensure_worker(&model, &unit);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Fires update-status on every settled unit of models whose interval has passed.
    pub async fn update_status_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let due: Vec<String> = {
                let models: Vec<(String, Duration)> = self.read(|w| {
                    w.models
                        .values()
                        .map(|m| {
                            (
                                m.name.clone(),
                                m.config_str("update-status-hook-interval")
                                    .and_then(|s| parse_duration(&s))
                                    .unwrap_or(Duration::from_secs(300)),
                            )
                        })
                        .collect()
                });
                let mut last = lock(&self.last_update_status);
                let now = Instant::now();
                models
                    .into_iter()
                    .filter(|(name, every)| {
                        let l = last.entry(name.clone()).or_insert(now);
                        if now.duration_since(*l) >= *every {
                            *l = now;
                            true
                        } else {
                            false
                        }
                    })
                    .map(|(n, _)| n)
                    .collect()
            };
            if due.is_empty() {
                continue;
            }
            self.mutate(|w| {
                for name in &due {
                    let Some(m) = w.models.get_mut(name) else {
                        continue;
                    };
                    let units: Vec<String> = m
                        .units
                        .values()
                        .filter(|u| u.started && u.life == Life::Alive && u.error.is_none())
                        .map(|u| u.name.clone())
                        .collect();
                    for u in units {
                        m.push(&u, Event::hook("update-status"));
                    }
                }
            });
        }
    }
}

pub fn storage_location(def: &StorageDef, id: &str) -> String {
    match &def.location {
        Some(l) => l.clone(),
        None => format!("/var/lib/juju/storage/{id}"),
    }
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
            std::fs::copy(entry.path(), &to)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
    }

    /// A model with principal `etcd` (two units, started) and subordinate `nrpe`, related
    /// through a container-scoped relation (id 0).
    fn subordinate_model() -> Model {
        let mut m = Model::new("m", "0123456789".into(), 1, Default::default());
        m.next_relation = 1;
        let ep = "nrpe-external-master".to_string();
        let principal = CharmMeta {
            name: "etcd".into(),
            provides: [(ep.clone(), "nrpe-external-master".into())].into(),
            container_endpoints: [ep.clone()].into(),
            ..Default::default()
        };
        let sub = CharmMeta {
            name: "nrpe".into(),
            requires: [(ep.clone(), "nrpe-external-master".into())].into(),
            container_endpoints: [ep.clone()].into(),
            subordinate: true,
            ..Default::default()
        };
        m.apps
            .insert("etcd".into(), App::for_test("etcd", principal));
        m.apps.insert("nrpe".into(), App::for_test("nrpe", sub));
        for _ in 0..2 {
            let (u, _) = m.add_unit("etcd", None).unwrap();
            m.units.get_mut(&u).unwrap().started = true;
        }
        let endpoint = |app: &str| Endpoint {
            app: app.into(),
            name: ep.clone(),
            interface: "nrpe-external-master".into(),
        };
        m.relations.insert(
            0,
            Relation {
                id: 0,
                endpoints: vec![endpoint("etcd"), endpoint("nrpe")],
                peer: false,
                app_data: Default::default(),
                unit_data: Default::default(),
                scope: Default::default(),
                dying: false,
                container: true,
            },
        );
        m
    }

    #[test]
    fn each_principal_unit_gets_its_own_subordinate_seeing_only_its_machine() {
        let mut m = subordinate_model();
        assert!(
            m.add_unit("nrpe", None).is_err(),
            "a subordinate has no units of its own"
        );
        m.enter_relation_scope(0, "etcd/0", "10.0.0.10");
        m.enter_relation_scope(0, "etcd/1", "10.0.0.11");
        let sub0 = &m.units["nrpe/0"];
        assert_eq!(sub0.principal.as_deref(), Some("etcd/0"));
        assert_eq!(sub0.machine, m.units["etcd/0"].machine);
        assert_eq!(m.units["nrpe/1"].principal.as_deref(), Some("etcd/1"));
        assert_eq!(m.machines.len(), 2, "no machine of their own");
        // Entering scope again adds no second subordinate.
        m.enter_relation_scope(0, "etcd/0", "10.0.0.10");
        assert_eq!(m.units.len(), 4);
        // The subordinate's scope is its machine.
        m.enter_relation_scope(0, "nrpe/0", "10.0.0.10");
        m.enter_relation_scope(0, "nrpe/1", "10.0.0.11");
        assert_eq!(m.remote_units_in_scope(0, "nrpe/0"), ["etcd/0"]);
        assert_eq!(m.remote_units_in_scope(0, "etcd/1"), ["nrpe/1"]);
        let heard_of_nrpe0 = |u: &str| {
            m.units[u]
                .queue
                .iter()
                .any(|e| e.remote_unit.as_deref() == Some("nrpe/0"))
        };
        assert!(heard_of_nrpe0("etcd/0"));
        assert!(!heard_of_nrpe0("etcd/1"), "another machine's subordinate");
    }

    #[test]
    fn subordinates_go_with_their_principal_and_with_the_relation() {
        let mut m = subordinate_model();
        m.enter_relation_scope(0, "etcd/0", "10.0.0.10");
        m.enter_relation_scope(0, "etcd/1", "10.0.0.11");
        m.remove_unit("etcd/0");
        assert_eq!(m.units["nrpe/0"].life, Life::Dying);
        assert_eq!(m.units["nrpe/1"].life, Life::Alive);
        m.remove_relation(0);
        assert_eq!(m.units["nrpe/1"].life, Life::Dying);
        assert_eq!(m.units["etcd/1"].life, Life::Alive, "the principal stays");
    }

    #[test]
    fn a_panic_under_a_lock_does_not_stop_later_commands() {
        let m = Arc::new(Mutex::new(1));
        let held = m.clone();
        let r = std::thread::spawn(move || {
            let _g = lock(&held);
            panic!("a command failed while holding the lock");
        })
        .join();
        assert!(r.is_err() && m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
