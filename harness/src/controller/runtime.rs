//! The runtime around the model: the world under its lock, the generation watch, waiting for a condition, the debug log, workers and storage sites.

use super::context::*;
use super::names::*;
use crate::state::*;
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

pub struct Ctl {
    pub home: PathBuf,
    pub world: Mutex<World>,
    pub contexts: Mutex<HashMap<String, HookCtx>>,
    pub(crate) gen: watch::Sender<u64>,
    pub(crate) workers: Mutex<HashSet<(String, String)>>,
    pub(crate) serial: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) last_update_status: Mutex<HashMap<String, Instant>>,
    /// Machine starts under way: a controller shutting down waits for them, as a start
    /// whose machine was destroyed ends the processes it spawned only as it goes on.
    pub(crate) starts: watch::Sender<usize>,
    pub shutdown: tokio::sync::Notify,
}

/// Counts one machine start for as long as it lives (`Ctl::starts`).
pub(crate) struct StartGuard<'a>(&'a watch::Sender<usize>);

impl<'a> StartGuard<'a> {
    pub(crate) fn new(starts: &'a watch::Sender<usize>) -> Self {
        starts.send_modify(|n| *n += 1);
        StartGuard(starts)
    }
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
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
        if !self.storage_is_block(model, unit, id) {
            return tokio::task::spawn_blocking(move || {
                crate::storage::attach_loop(init, &image, v.size_mib, &location)
            })
            .await?
            .with_context(|| format!("attaching storage {id} to {unit}"));
        }
        let sid = id.to_string();
        let device = tokio::task::spawn_blocking(move || {
            crate::storage::attach_block(init, &image, v.size_mib, &sid)
        })
        .await?
        .with_context(|| format!("attaching storage {id} to {unit}"))?;
        // The device the charm is told of, until the next attach (a boot may pick another).
        self.mutate(|w| {
            if let Some(vol) = w.models.get_mut(model).and_then(|m| m.volumes.get_mut(id)) {
                vol.device = Some(device);
            }
        });
        Ok(())
    }

    /// Whether storage `id` of `unit` is of a `block` store (a raw device for the charm).
    fn storage_is_block(&self, model: &str, unit: &str, id: &str) -> bool {
        self.read(|w| {
            let m = w.models.get(model)?;
            let app = &m.units.get(unit)?.app;
            let def = m.apps.get(app)?.meta.storage.get(id.split('/').next()?)?;
            Some(def.kind == "block")
        })
        .unwrap_or(false)
    }

    /// Where storage `id` of `unit` is mounted, and its machine's PID 1 (when running).
    pub(crate) fn storage_site(
        &self,
        model: &str,
        unit: &str,
        id: &str,
    ) -> Option<(String, Option<u32>)> {
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
            Some((storage_location(def, id, m.volumes.get(id)), init))
        })
    }

    /// After `remove-storage`'s detaching hook: unmounts the volume, forgets the instance
    /// and removes its image.
    pub async fn release_storage(&self, model: &str, unit: &str, id: &str) -> Result<()> {
        if let Some((location, Some(init))) = self.storage_site(model, unit, id) {
            let block = self.storage_is_block(model, unit, id);
            let sid = id.to_string();
            tokio::task::spawn_blocking(move || match block {
                true => crate::storage::detach_block(init, &sid),
                false => crate::storage::detach(init, &location),
            })
            .await??;
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
                        .map(|id| (m.net().netns(*id), crate::firewall::for_machine(m, *id)))
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
    pub(crate) fn update_machine(
        &self,
        model: &str,
        machine: u32,
        f: impl FnOnce(&mut Machine),
    ) -> bool {
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
    pub(crate) fn forget_model_dir_if_gone(&self, model: &str) {
        if !self.read(|w| w.models.contains_key(model)) {
            remove_tree(&model_dir(&self.home, model));
        }
    }

    pub(crate) fn serial_lock(&self, model: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
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
}
