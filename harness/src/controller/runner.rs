//! Running hooks, actions and execs in a unit's context: commit or failure with back-off, what runs after.

use super::context::*;
use super::machines::*;
use super::names::*;
use super::runtime::*;
use super::transitions::{After, Ran};
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
        let Some((ctx, handler, env)) = self.begin_hook(model, unit, &ev) else {
            return;
        };
        let charm = charm_dir_in_machine(unit);
        let started = Instant::now();
        // A subordinate's charm arrives on its principal's running machine here.
        let attaching = async {
            self.deploy_charm_change(model, unit).await?;
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
        self.log_hook(model, unit, &ev.hook, &result, started);
        let after = self.mutate(|w| {
            let m = w.models.get_mut(model)?;
            let ran = match &result {
                Ok((r, _)) if r.code == 0 && r.error.is_none() => Ran::Succeeded,
                Err(_) if !m.machine_up(unit) => Ran::NotRun,
                _ => Ran::Failed,
            };
            Some((m.hook_ended(unit, &ev, &ctx, ran, now_ms()), ran))
        });
        let Some((after, ran)) = after else {
            return;
        };
        self.after_hook(model, unit, &ev, &ctx, ran == Ran::Succeeded, after)
            .await;
    }

    /// The unit starts running `ev` (`Model::hook_started`): its context, handler and
    /// environment. None when the unit or its application is gone.
    fn begin_hook(
        &self,
        model: &str,
        unit: &str,
        ev: &Event,
    ) -> Option<(HookCtx, Option<String>, BTreeMap<String, String>)> {
        self.mutate(|w| {
            let m = w.models.get(model)?;
            let charm_dir = m.apps.get(app_of(unit))?.charm_dir.clone();
            let ctx = self.new_context(w, model, unit, ev, None, false)?;
            let m = w.models.get_mut(model)?;
            m.hook_started(unit, ev)?;
            let handler = Self::handler(&charm_dir, "hooks", &ev.hook);
            let dispatch = format!("hooks/{}", ev.hook);
            let env = self.environment(m, unit, &ctx.id, Some(ev), &dispatch);
            Some((ctx, handler, env))
        })
    }

    /// The hook's output in the model's debug-log, as the unit agent logs it.
    fn log_hook(
        &self,
        model: &str,
        unit: &str,
        name: &str,
        result: &Result<(proto::AgentReply, Option<u32>)>,
        started: Instant,
    ) {
        let tag = format!("unit-{}", unit.replace('/', "-"));
        match result {
            Ok((r, _)) => {
                for line in r.stdout.lines() {
                    self.log(model, &format!("{tag}: DEBUG {name}: {line}"));
                }
                for line in r.stderr.lines() {
                    self.log(model, &format!("{tag}: WARNING {name}: {line}"));
                }
                if let Some(e) = &r.error {
                    self.log(model, &format!("{tag}: ERROR {name}: {e}"));
                }
                self.log_ran(model, unit, &format!("{name:?} hook"), r, started);
            }
            Err(e) => self.log(model, &format!("{tag}: ERROR {name}: {e:#}")),
        }
    }

    /// What follows a hook outside the model: the firewall for ports it opened or closed,
    /// a detached volume released, a removed unit finalized, a reboot it asked for.
    async fn after_hook(
        self: &Arc<Self>,
        model: &str,
        unit: &str,
        ev: &Event,
        ctx: &HookCtx,
        hook_ok: bool,
        after: After,
    ) {
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
        if after.finalize {
            self.finalize_unit(model, unit).await;
        }
        if after.reboot {
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
        let Some((ctx, argv, env)) = self.begin_task(model, unit, task_id) else {
            return;
        };
        if argv.is_empty() {
            self.mutate(|w| {
                if let Some(m) = w.models.get_mut(model) {
                    m.task_not_implemented(unit, task_id);
                }
            });
            return;
        }
        let what = match env.get("JUJU_ACTION_NAME") {
            Some(name) => format!("{name:?} action"),
            None => "exec".to_string(),
        };
        let started = Instant::now();
        let (result, ctx) = self.run_in_context(model, unit, ctx, argv, env).await;
        if let Ok((r, _)) = &result {
            self.log_ran(model, unit, &what, r, started);
        }
        let result = result.map(|(r, _)| r).map_err(|e| format!("{e:#}"));
        self.mutate(|w| {
            if let Some(m) = w.models.get_mut(model) {
                m.task_ended(unit, task_id, &ctx, result);
            }
        });
        if !ctx.ports.is_empty() {
            if let Err(e) = self.refresh_firewall(model) {
                self.log(model, &format!("controller: ERROR firewall: {e:#}"));
            }
        }
    }

    /// The task starts (`Model::task_started`): its context, argv (empty: the charm has no
    /// such action) and environment: an exec's command line through bash, or the action's
    /// handler with the JUJU_ACTION_* variables.
    fn begin_task(
        &self,
        model: &str,
        unit: &str,
        task_id: u64,
    ) -> Option<(HookCtx, Vec<String>, BTreeMap<String, String>)> {
        self.mutate(|w| {
            let m = w.models.get(model)?;
            let t = m.tasks.get(&task_id)?.clone();
            let charm_dir = m.apps.get(app_of(unit))?.charm_dir.clone();
            let ev = Event::default();
            let ctx = self.new_context(w, model, unit, &ev, Some(task_id), t.command.is_none())?;
            let m = w.models.get_mut(model)?;
            let (argv, env) = match &t.command {
                Some(cmd) => {
                    let env = self.environment(m, unit, &ctx.id, None, "juju-exec");
                    let argv = vec!["/bin/bash".to_string(), "-c".to_string(), cmd.join(" ")];
                    (argv, env)
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
            m.task_started(unit, task_id)?;
            Some((ctx, argv, env))
        })
    }
}
