//! The controller's loops: the deployer and update-status.

use super::names::*;
use super::runtime::*;
use crate::state::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Ctl {
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
