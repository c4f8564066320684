//! The model's transitions around one hook, pure (no machine, no process, no clock of its
//! own): what starting it changes in its unit, and what its outcome commits. The runtime
//! (`runner.rs`) runs the hook between the two. Unit-tested below without root.
//!
//! Follows Juju's uniter: the event leaves the queue while it runs
//! (internal/worker/uniter/operation/runhook.go), a failed hook is retried with a doubling
//! back-off up to 5 minutes (internal/worker/uniter/resolver.go, `retryHookTimerStart`), and
//! once installed the unit joins its relations (relation/resolver.go).

use super::context::HookCtx;
use crate::state::*;

/// How a hook's process ended, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    /// exit 0 and no error
    Succeeded,
    /// it ran and failed, or could not be run on a machine that is up
    Failed,
    /// it could not be run: the machine went down under it
    NotRun,
}

/// What the runtime does once the model took a hook's outcome.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct After {
    /// the unit is gone: its machine's share of it is cleaned up
    pub finalize: bool,
    /// the hook asked for its machine's reboot (`juju-reboot`)
    pub reboot: bool,
}

/// What a unit's worker does next.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    /// the unit (or its model) is gone: the worker ends
    Gone,
    /// nothing to run until the state changes, or this long at most
    Wait(Option<std::time::Duration>),
    Hook(Event),
    Task(u64),
}

/// The first retry of a failed hook, in ms; each next one doubles, up to `RETRY_MAX`.
const RETRY_FIRST: u64 = 5_000;
const RETRY_MAX: u64 = 300_000;

impl Model {
    /// `unit` starts running `ev`: it leaves the queue (a change committed meanwhile queues
    /// a fresh event instead of coalescing with one that already read the old data), and a
    /// relation's joined or departed unit enters or leaves the unit's view of it.
    pub(crate) fn hook_started(&mut self, unit: &str, ev: &Event) -> Option<()> {
        let u = self.units.get_mut(unit)?;
        if u.queue.front() == Some(ev) {
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
        Some(())
    }

    /// `unit`'s hook `ev` ended as `ran` at `now` (ms): committed when it succeeded (and
    /// what its name means done: installed, started, removed); else queued again, with a
    /// back-off when it failed.
    pub(crate) fn hook_ended(
        &mut self,
        unit: &str,
        ev: &Event,
        ctx: &HookCtx,
        ran: Ran,
        now: u64,
    ) -> After {
        let mut after = After::default();
        if !self.units.contains_key(unit) {
            return after;
        }
        if ran == Ran::Succeeded {
            self.commit(ctx);
        }
        let Some(u) = self.units.get_mut(unit) else {
            return after;
        };
        u.running = None;
        match ran {
            // The machine went down under the hook: it runs again when the machine is back.
            Ran::NotRun => u.queue.push_front(ev.clone()),
            Ran::Failed => {
                u.queue.push_front(ev.clone());
                let attempts = u.error.as_ref().map_or(1, |e| e.attempts + 1);
                let delay = (RETRY_FIRST << (attempts - 1).min(6)).min(RETRY_MAX);
                u.error = Some(HookError {
                    hook: ev.hook.clone(),
                    retry_at: Some(now + delay),
                    attempts,
                });
                u.agent = Status::new("idle", "");
            }
            Ran::Succeeded => {
                u.error = None;
                u.agent = Status::new("idle", "");
                after.reboot = ctx.reboot;
                match ev.hook.as_str() {
                    // Once installed, the unit joins its relations (EnterScope), before
                    // relation-created, leader-elected, config-changed and start; its peers
                    // see it while it starts.
                    "install" => {
                        u.installed = true;
                        if u.life == Life::Alive {
                            self.enter_scope(unit);
                        }
                    }
                    "start" if !u.started => {
                        u.started = true;
                        if !u.workload_set {
                            u.workload = Status::new("unknown", "");
                        }
                    }
                    "remove" => after.finalize = true,
                    _ => {}
                }
            }
        }
        after
    }

    /// `unit` starts running the task (an action or an exec).
    pub(crate) fn task_started(&mut self, unit: &str, task_id: u64) -> Option<()> {
        let task = self.tasks.get_mut(&task_id)?;
        task.status = "running".into();
        task.started = now_juju();
        let doing = format!("running action {}", task.action);
        self.units.get_mut(unit)?.agent = Status::new("executing", &doing);
        Some(())
    }

    /// The charm has no handler for the task's action: failed as Juju says it.
    pub(crate) fn task_not_implemented(&mut self, unit: &str, task_id: u64) {
        if let Some(t) = self.tasks.get_mut(&task_id) {
            t.status = "failed".into();
            t.message = format!("action not implemented on unit \"{unit}\"");
            t.completed = now_juju();
        }
        if let Some(u) = self.units.get_mut(unit) {
            u.agent = Status::new("idle", "");
        }
    }

    /// The task's process ended (`Err`: it could not be run): its changes committed when it
    /// exited 0 with no error; the task completed, or failed with the reason (an
    /// `action-fail`, an exit status, the error).
    pub(crate) fn task_ended(
        &mut self,
        unit: &str,
        task_id: u64,
        ctx: &HookCtx,
        result: Result<crate::proto::AgentReply, String>,
    ) {
        if matches!(&result, Ok(r) if r.code == 0 && r.error.is_none()) {
            self.commit(ctx);
        }
        if let Some(u) = self.units.get_mut(unit) {
            u.agent = Status::new("idle", "");
        }
        let Some(t) = self.tasks.get_mut(&task_id) else {
            return;
        };
        t.completed = now_juju();
        match result {
            Ok(r) => {
                t.return_code = Some(r.code);
                t.stdout = r.stdout;
                t.stderr = r.stderr;
                if let Some(e) = r.error {
                    t.status = "failed".into();
                    t.message = e;
                } else if t.status == "failing" || r.code != 0 {
                    if t.status != "failing" && t.message.is_empty() {
                        t.message = format!("exit status {}", r.code);
                    }
                    t.status = "failed".into();
                } else {
                    t.status = "completed".into();
                }
            }
            Err(e) => {
                t.status = "failed".into();
                t.message = e;
            }
        }
    }

    /// What `unit`'s worker runs next at `now` (ms), and whether deciding it changed the
    /// model. Hooks and tasks take turns when both wait (`task_turn`: a task goes first),
    /// so a unit whose hooks keep coming still runs `juju exec` and actions; a unit in
    /// error runs tasks, and its failed hook again once its back-off is over (when the
    /// model retries hooks); stale events are dropped; a principal's remove waits for its
    /// subordinates to go.
    pub(crate) fn next_for(&mut self, unit: &str, task_turn: bool, now: u64) -> (Next, bool) {
        let mut changed = self.reap_relations();
        if !self.units.contains_key(unit) {
            return (Next::Gone, changed);
        }
        if !self.machine_up(unit) {
            return (Next::Wait(None), changed);
        }
        let retry = self.config_bool("automatically-retry-hooks", true);
        let Some(u) = self.units.get_mut(unit) else {
            return (Next::Gone, changed);
        };
        if let Some(e) = &u.error {
            if let Some(t) = u.actions.pop_front() {
                return (Next::Task(t), true);
            }
            let next = match e.retry_at {
                Some(at) if retry && now >= at => u
                    .queue
                    .front()
                    .cloned()
                    .map_or(Next::Wait(None), Next::Hook),
                Some(at) if retry => Next::Wait(Some(std::time::Duration::from_millis(at - now))),
                _ => Next::Wait(None),
            };
            return (next, changed);
        }
        if task_turn {
            if let Some(t) = u.actions.pop_front() {
                return (Next::Task(t), true);
            }
        }
        while let Some(ev) = self.units[unit].queue.front().cloned() {
            if self.event_is_stale(&ev) {
                if let Some(u) = self.units.get_mut(unit) {
                    u.queue.pop_front();
                }
                changed = true;
                continue;
            }
            let waits_for_subordinates = ev.hook == "remove"
                && self
                    .units
                    .values()
                    .any(|s| s.principal.as_deref() == Some(unit));
            if waits_for_subordinates {
                return (Next::Wait(None), changed);
            }
            return (Next::Hook(ev), changed);
        }
        match self.units.get_mut(unit).and_then(|u| u.actions.pop_front()) {
            Some(t) => (Next::Task(t), true),
            None => (Next::Wait(None), changed),
        }
    }

    /// `machine`'s agent answers and its units are ready: started, its units' agents idle,
    /// a unit not installed yet installing. Returns whether the machine's link is to be cut
    /// again (it was cut before the reboot).
    pub(crate) fn machine_started(&mut self, machine: u32) -> bool {
        let Some(mach) = self.machines.get_mut(&machine) else {
            return false;
        };
        mach.status = "started".into();
        let cut = mach.cut;
        for u in self.units.values_mut().filter(|u| u.machine == machine) {
            if u.agent.current == "allocating" || u.agent.current == "lost" {
                u.agent = Status::new("idle", "");
            }
            if !u.workload_set && !u.installed {
                u.workload = Status::new("maintenance", "installing charm software");
            }
        }
        cut
    }

    /// Whether `unit`'s machine is up (a hook that could not run there is not its fault).
    pub(crate) fn machine_up(&self, unit: &str) -> bool {
        self.units
            .get(unit)
            .and_then(|u| self.machines.get(&u.machine))
            .is_some_and(|x| x.status == "started")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> (Model, String) {
        let mut m = Model::new("m", "0123456789".into(), 1, Default::default());
        m.apps.insert(
            "etcd".into(),
            App::for_test(
                "etcd",
                CharmMeta {
                    name: "etcd".into(),
                    ..Default::default()
                },
            ),
        );
        let (u, _) = m.add_unit("etcd", None).unwrap();
        (m, u)
    }

    fn ctx(unit: &str, ev: &Event) -> HookCtx {
        HookCtx {
            id: "c1".into(),
            model: "m".into(),
            unit: unit.into(),
            app: "etcd".into(),
            event: ev.clone(),
            ..HookCtx::default()
        }
    }

    #[test]
    fn a_failed_hook_is_retried_later_and_later_up_to_five_minutes() {
        let (mut m, u) = model();
        let ev = Event::hook("config-changed");
        let mut delays = vec![];
        m.units.get_mut(&u).unwrap().queue.clear();
        for _ in 0..9 {
            m.units.get_mut(&u).unwrap().queue.push_front(ev.clone());
            m.hook_started(&u, &ev);
            assert!(
                m.units[&u].queue.is_empty(),
                "the event leaves the queue while it runs"
            );
            m.hook_ended(&u, &ev, &ctx(&u, &ev), Ran::Failed, 1_000);
            let e = m.units[&u].error.as_ref().unwrap();
            delays.push(e.retry_at.unwrap() - 1_000);
            assert_eq!(m.units[&u].queue.front(), Some(&ev), "queued again, first");
            m.units.get_mut(&u).unwrap().queue.clear();
        }
        assert_eq!(
            delays,
            [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000]
        );
        m.hook_started(&u, &ev);
        m.hook_ended(&u, &ev, &ctx(&u, &ev), Ran::Succeeded, 2_000);
        assert!(m.units[&u].error.is_none(), "a success clears the error");
    }

    #[test]
    fn a_hook_the_machine_could_not_run_is_queued_again_without_an_error() {
        let (mut m, u) = model();
        let ev = Event::hook("start");
        m.hook_started(&u, &ev);
        m.hook_ended(&u, &ev, &ctx(&u, &ev), Ran::NotRun, 0);
        assert!(m.units[&u].error.is_none());
        assert_eq!(m.units[&u].queue.front(), Some(&ev));
        assert!(!m.units[&u].started);
    }

    #[test]
    fn install_start_and_remove_mark_the_unit_and_a_reboot_is_asked_for() {
        let (mut m, u) = model();
        for (hook, reboot) in [("install", true), ("start", false)] {
            let ev = Event::hook(hook);
            let mut c = ctx(&u, &ev);
            c.reboot = reboot;
            m.hook_started(&u, &ev);
            let after = m.hook_ended(&u, &ev, &c, Ran::Succeeded, 0);
            assert_eq!(
                after,
                After {
                    finalize: false,
                    reboot
                }
            );
        }
        assert!(m.units[&u].installed && m.units[&u].started);
        assert_eq!(m.units[&u].workload.current, "unknown");
        let ev = Event::hook("remove");
        let after = m.hook_ended(&u, &ev, &ctx(&u, &ev), Ran::Succeeded, 0);
        assert!(after.finalize);
    }

    #[test]
    fn only_a_successful_hook_commits_its_changes() {
        let (mut m, u) = model();
        let ev = Event::hook("config-changed");
        let mut c = ctx(&u, &ev);
        c.state.push(("k".into(), Some("v".into())));
        m.hook_ended(&u, &ev, &c, Ran::Failed, 0);
        assert!(m.units[&u].state.get("k").is_none());
        m.hook_ended(&u, &ev, &c, Ran::Succeeded, 0);
        assert_eq!(m.units[&u].state.get("k").map(String::as_str), Some("v"));
    }

    #[test]
    fn a_task_ends_completed_or_failed_with_its_reason() {
        let (mut m, u) = model();
        let reply = |code: i32| crate::proto::AgentReply {
            code,
            ..Default::default()
        };
        let cases: [(&str, Result<crate::proto::AgentReply, String>, &str, &str); 4] = [
            ("running", Ok(reply(0)), "completed", ""),
            ("failing", Ok(reply(0)), "failed", "told by action-fail"),
            ("running", Ok(reply(2)), "failed", "exit status 2"),
            ("running", Err("no agent".into()), "failed", "no agent"),
        ];
        for (i, (status, result, want, message)) in cases.into_iter().enumerate() {
            let id = i as u64;
            let mut t: Task = serde_json::from_value(serde_json::json!({
                "id": id, "unit": u, "action": "snapshot", "params": {}, "status": status,
                "message": if status == "failing" { "told by action-fail" } else { "" },
                "results": {}, "log": [], "enqueued": "", "started": "", "completed": "",
                "return_code": null, "stdout": "", "stderr": ""
            }))
            .unwrap();
            t.id = id;
            m.tasks.insert(id, t);
            let ev = Event::default();
            m.task_ended(&u, id, &ctx(&u, &ev), result);
            assert_eq!(m.tasks[&id].status, want, "case {i}");
            assert_eq!(m.tasks[&id].message, message, "case {i}");
        }
    }

    #[test]
    fn a_worker_alternates_hooks_and_tasks_and_retries_a_failed_hook_after_its_back_off() {
        let (mut m, u) = model();
        let machine = m.units[&u].machine;
        assert_eq!(
            m.next_for(&u, false, 0).0,
            Next::Wait(None),
            "the machine is not up"
        );
        m.machines.get_mut(&machine).unwrap().status = "started".into();
        let first = m.units[&u].queue.front().cloned().unwrap();
        m.units.get_mut(&u).unwrap().actions.push_back(7);
        assert_eq!(m.next_for(&u, false, 0).0, Next::Hook(first.clone()));
        assert_eq!(m.next_for(&u, true, 0).0, Next::Task(7), "a task's turn");
        m.hook_started(&u, &first);
        m.hook_ended(&u, &first, &ctx(&u, &first), Ran::Failed, 1_000);
        assert_eq!(
            m.next_for(&u, false, 2_000).0,
            Next::Wait(Some(std::time::Duration::from_millis(4_000)))
        );
        m.units.get_mut(&u).unwrap().actions.push_back(8);
        assert_eq!(
            m.next_for(&u, false, 2_000).0,
            Next::Task(8),
            "tasks run in error"
        );
        assert_eq!(m.next_for(&u, false, 6_000).0, Next::Hook(first));
        m.units.remove(&u);
        assert_eq!(m.next_for(&u, false, 6_000).0, Next::Gone);
    }
}
