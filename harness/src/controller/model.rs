//! The model's state machine, pure: placing and adding units and machines, relation scopes, what a unit sees. No processes, no sockets.

use super::names::*;
use crate::net::Net;
use crate::state::*;
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// Whether units `a` and `b` share a machine (a container-scoped relation's scope).
pub(crate) fn same_machine(units: &BTreeMap<String, Unit>, a: &str, b: &str) -> bool {
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

impl Model {
    /// The ports one machine's firewall lets in (see `firewall::for_machine`): those opened
    /// by the units of exposed applications on it, in `firewall-mode: instance` (the
    /// default); None (no firewall) in `none`.
    pub fn open_ports(&self, machine: u32) -> Option<Vec<String>> {
        let mode = self.config.get("firewall-mode").and_then(Value::as_str);
        if mode == Some("none") {
            return None;
        }
        Some(
            self.units
                .values()
                .filter(|u| u.machine == machine)
                .filter(|u| self.apps.get(&u.app).is_some_and(|a| a.exposed))
                .flat_map(|u| u.ports.iter().cloned())
                .collect(),
        )
    }

    pub fn net(&self) -> Net {
        Net {
            index: self.net_index,
        }
    }

    /// The application's units that are alive (not dying).
    pub fn alive_units(&self, app: &str) -> Vec<String> {
        self.units
            .values()
            .filter(|u| u.app == app && u.life == Life::Alive)
            .map(|u| u.name.clone())
            .collect()
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
    /// A new application, with a relation of its own for each of its charm's peer
    /// endpoints (Juju creates peer relations with the application).
    pub fn add_application(&mut self, app: App) {
        let name = app.name.clone();
        let peers = app.meta.peers.clone();
        self.apps.insert(name.clone(), app);
        for (ep, iface) in peers {
            let endpoint = Endpoint {
                app: name.clone(),
                name: ep,
                interface: iface,
            };
            self.insert_relation(vec![endpoint], false);
        }
    }

    /// A new relation between `endpoints` (one: a peer relation), with no one in its scope
    /// yet; its id.
    pub fn insert_relation(&mut self, endpoints: Vec<Endpoint>, container: bool) -> u32 {
        let id = self.next_relation;
        self.next_relation += 1;
        let relation = Relation {
            id,
            peer: endpoints.len() == 1,
            endpoints,
            app_data: Default::default(),
            unit_data: Default::default(),
            scope: Default::default(),
            dying: false,
            container,
        };
        self.relations.insert(id, relation);
        id
    }

    /// A new relation's units hear of it (relation-created); the installed ones join it at
    /// once, the others when installed (Juju's createdRelationsResolver).
    pub fn relation_created(&mut self, id: u32) {
        let Some(r) = self.relations.get(&id) else {
            return;
        };
        let sides: Vec<(String, String, Option<String>)> = r
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.app.clone(),
                    e.name.clone(),
                    r.remote_app_of(&e.app).map(String::from),
                )
            })
            .collect();
        let mut joining = vec![];
        for (app, ep, remote) in sides {
            let units: Vec<(String, bool)> = self
                .units
                .values()
                .filter(|u| u.app == app && u.life == Life::Alive)
                .map(|u| (u.name.clone(), u.installed))
                .collect();
            for (u, installed) in units {
                self.push(
                    &u,
                    Event {
                        hook: format!("{ep}-relation-created"),
                        relation: Some(id),
                        remote_app: remote.clone(),
                        ..Default::default()
                    },
                );
                if installed {
                    joining.push(u);
                }
            }
        }
        for u in joining {
            let addr = self
                .machines
                .get(&self.units[&u].machine)
                .map(|x| x.address.clone())
                .unwrap_or_default();
            self.enter_relation_scope(id, &u, &addr);
        }
    }

    /// `juju config app k=v … --reset k,…`: a value equal to its default is stored as unset
    /// (as Juju does), a reset goes back to the default; the units hear config-changed when
    /// anything changed.
    pub fn set_config(
        &mut self,
        app: &str,
        new: BTreeMap<String, Value>,
        resets: &[String],
    ) -> Result<()> {
        let a = self
            .apps
            .get_mut(app)
            .with_context(|| format!("application \"{app}\" not found"))?;
        let before = a.config.clone();
        for (k, v) in new {
            let default = a.meta.options.get(&k).and_then(|d| d.default.clone());
            if Some(&v) == default.as_ref() {
                a.config.remove(&k);
            } else {
                a.config.insert(k, v);
            }
        }
        for r in resets {
            a.config.remove(r);
        }
        if a.config != before {
            for u in self.alive_units(app) {
                self.push(&u, Event::hook("config-changed"));
            }
        }
        Ok(())
    }

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
            .and_then(|k| Kind::parse(&k))
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
    pub(crate) fn add_subordinate(&mut self, app: &str, principal: &str) -> Result<String> {
        let machine = self
            .units
            .get(principal)
            .map(|u| u.machine)
            .context("principal unit not found")?;
        self.place_unit(app, machine, Some(principal.to_string()))
    }

    /// The unit record and its first hooks (storage, install, relations created,
    /// leadership, config, start), on `machine`.
    pub(crate) fn place_unit(
        &mut self,
        app: &str,
        machine: u32,
        principal: Option<String>,
    ) -> Result<String> {
        let a = self.apps.get_mut(app).context("application not found")?;
        let name = format!("{}/{}", app, a.next_unit);
        a.next_unit += 1;
        let storage_reqs: Vec<(String, u32, Option<Volume>)> =
            a.meta
                .storage
                .iter()
                .map(|(k, d)| {
                    (
                        k.clone(),
                        *a.storage_requests.get(k).unwrap_or(&d.min),
                        // A block store is a device: without a directive, a loop volume.
                        a.storage_volumes.get(k).cloned().or_else(|| {
                            (d.kind == "block").then(|| Volume::loop_of(DEFAULT_SIZE_MIB))
                        }),
                    )
                })
                .collect();
        let is_leader = a.leader.is_none();
        if is_leader {
            a.leader = Some(name.clone());
        }
        let storage = self.allocate_storage(storage_reqs);
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
                charm_from: None,
                started: false,
                views: Default::default(),
                storage: storage.clone(),
                state: Default::default(),
                tracked: Default::default(),
                workload_set: false,
                principal,
            },
        );
        self.queue_first_hooks(&name, &storage, is_leader);
        Ok(name)
    }

    /// Storage instances for a new unit: `count` of each store, named `<store>/<n>` with a
    /// model-wide counter, each on the volume its application was deployed with, if any.
    fn allocate_storage(&mut self, reqs: Vec<(String, u32, Option<Volume>)>) -> Vec<String> {
        let mut storage = vec![];
        for (sname, count, volume) in reqs {
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
        storage
    }

    /// A new unit's first hooks, in Juju's order: storage-attached, install,
    /// relation-created for each relation of its application, leader-elected (or
    /// leader-settings-changed), config-changed, start.
    fn queue_first_hooks(&mut self, name: &str, storage: &[String], is_leader: bool) {
        let app = app_of(name).to_string();
        for s in storage {
            self.push(
                name,
                Event {
                    hook: format!("{}-storage-attached", s.split('/').next().unwrap_or("")),
                    storage: Some(s.clone()),
                    ..Default::default()
                },
            );
        }
        self.push(name, Event::hook("install"));
        for rel in self.relations_of_app(&app) {
            let ep = self.relations[&rel]
                .endpoint_of(&app)
                .map(|e| e.name.clone())
                .unwrap_or_default();
            self.push(
                name,
                Event {
                    hook: format!("{ep}-relation-created"),
                    relation: Some(rel),
                    remote_app: self.relations[&rel].remote_app_of(&app).map(String::from),
                    ..Default::default()
                },
            );
        }
        let leadership = if is_leader {
            "leader-elected"
        } else {
            "leader-settings-changed"
        };
        self.push(name, Event::hook(leadership));
        self.push(name, Event::hook("config-changed"));
        self.push(name, Event::hook("start"));
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
}
