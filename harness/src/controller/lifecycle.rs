//! The model's state machine, pure, continued: units and relations going, leadership, a hook's commit, storage, secrets, statuses.

use super::context::*;
use super::model::*;
use super::names::*;
use crate::state::*;

impl Model {
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
        self.leave_scopes(unit);
        let app = app_of(unit).to_string();
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

    /// A dying `unit` leaves the scope of every relation it is in: it and each remote unit
    /// in scope hear the other depart.
    fn leave_scopes(&mut self, unit: &str) {
        let app = app_of(unit).to_string();
        let rels: Vec<u32> = self
            .relations
            .values()
            .filter(|r| r.scope.contains(unit))
            .map(|r| r.id)
            .collect();
        for rel in rels {
            let remotes = self.remote_units_in_scope(rel, unit);
            let Some(r) = self.relations.get_mut(&rel) else {
                continue;
            };
            r.scope.remove(unit);
            let ep_of = |r: &Relation, a: &str| {
                r.endpoint_of(a).map(|e| e.name.clone()).unwrap_or_default()
            };
            let my_ep = ep_of(r, &app);
            for v in remotes {
                let their_ep = ep_of(&self.relations[&rel], app_of(&v));
                let departed = |hook: String, remote: &str| Event {
                    hook,
                    relation: Some(rel),
                    remote_unit: Some(remote.into()),
                    remote_app: Some(app_of(remote).into()),
                    departing: Some(unit.into()),
                    ..Default::default()
                };
                self.push(&v, departed(format!("{their_ep}-relation-departed"), unit));
                self.push(unit, departed(format!("{my_ep}-relation-departed"), &v));
            }
        }
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

    pub(crate) fn apply_secret(&mut self, op: &SecretOp, unit: &str) {
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
                    self.new_secret_revision(id, c.clone(), unit);
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
                self.grant_secret(id, *relation, unit.as_deref())
            }
            SecretOp::Revoke { id, relation, unit } => {
                let grants = self
                    .secrets
                    .get_mut(id)
                    .and_then(|s| s.grants.get_mut(relation));
                if let Some(g) = grants {
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

    /// A new revision of secret `id` with `content`, set by `unit`: every other consumer
    /// tracking an older revision hears about it (secret-changed).
    fn new_secret_revision(&mut self, id: &str, content: Bag, unit: &str) {
        let Some(s) = self.secrets.get_mut(id) else {
            return;
        };
        let rev = s.latest() + 1;
        s.revisions.insert(rev, content);
        let behind: Vec<String> = self
            .units
            .values()
            .filter(|u| u.name != unit && u.tracked.get(id).is_some_and(|r| *r < rev))
            .map(|u| u.name.clone())
            .collect();
        for c in behind {
            self.push(
                &c,
                Event {
                    hook: "secret-changed".into(),
                    secret: Some(id.to_string()),
                    secret_revision: Some(rev),
                    ..Default::default()
                },
            );
        }
    }

    /// Secret `id` granted over `relation` to `unit`, or to the relation's remote
    /// application.
    fn grant_secret(&mut self, id: &str, relation: u32, unit: Option<&str>) {
        let target = match unit {
            Some(u) => u.to_string(),
            None => {
                let Some(r) = self.relations.get(&relation) else {
                    return;
                };
                let owner_app = self
                    .secrets
                    .get(id)
                    .map(|s| s.owner.split('/').next().unwrap_or("").to_string())
                    .unwrap_or_default();
                r.remote_app_of(&owner_app).unwrap_or("").to_string()
            }
        };
        if let Some(s) = self.secrets.get_mut(id) {
            s.grants.entry(relation).or_default().insert(target);
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
