//! The per-unit worker: events in Juju's order, one hook at a time per machine.

use super::names::*;
use super::runtime::*;
use super::transitions::Next;
use std::sync::Arc;

impl Ctl {
    pub(crate) async fn worker(self: &Arc<Self>, model: &str, unit: &str) {
        let mut rx = self.subscribe();
        // Hooks and tasks take turns when both wait: a unit whose hooks keep coming (slow
        // update-status hooks on a short interval) still runs `juju exec` and actions.
        let mut task_turn = false;
        loop {
            // Decide the next event; persist and wake others only if this changed the state
            // (otherwise every idle worker would wake every other one, forever).
            let next = self.mutate_if(|w| match w.models.get_mut(model) {
                Some(m) => m.next_for(unit, task_turn, now_ms()),
                None => (Next::Gone, false),
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
