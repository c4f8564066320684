//! The per-unit worker: events in Juju's order, one hook at a time per machine.

use super::names::*;
use super::runtime::*;
use crate::state::*;
use std::sync::Arc;
use std::time::Duration;

impl Ctl {
    pub(crate) async fn worker(self: &Arc<Self>, model: &str, unit: &str) {
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
}
