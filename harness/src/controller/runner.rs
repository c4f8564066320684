//! Running hooks, actions and execs in a unit's context: commit or failure with back-off, what runs after.

use super::context::*;
use super::machines::*;
use super::names::*;
use super::runtime::*;
use crate::machine::{self};
use crate::proto::{self, AgentRequest};
use crate::state::*;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

impl Ctl {
    /// Runs a process on the unit's machine, in the charm dir, while `ctx` is the live hook
    /// context its tools talk to; returns how it ended and the context with its buffered
    /// changes.
    pub(crate) async fn run_in_context(
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

    pub(crate) async fn run_hook(self: &Arc<Self>, model: &str, unit: &str, ev: Event) {
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
    pub(crate) fn log_ran(
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

    pub(crate) async fn run_task(self: &Arc<Self>, model: &str, unit: &str, task_id: u64) {
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
}
