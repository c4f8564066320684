//! What a hook tells the operator: the statuses its phases report (the most severe wins),
//! set only when they differ from what this unit last set, and, for a slow hook, how long
//! each part took.

use crate::juju;
use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// What this unit last set with `set` (its own status, and the application's while it
/// leads). A cache: when it cannot be read, it goes and the status is set again. It never names a
/// status other than the one set: a slot is emptied before its status changes and filled
/// only after.
const TOLD: &str = "/var/lib/etcd-charm/told-status.json";

#[derive(Default, Serialize, Deserialize, PartialEq)]
struct Told {
    unit: Option<(String, String)>,
    app: Option<(String, String)>,
}

impl Told {
    /// The record; none when there is none, and a record that cannot be read or parsed is
    /// removed (a stale one must never survive), its removal failing being an error.
    fn read() -> Result<Told> {
        match std::fs::read(TOLD) {
            Ok(b) => {
                if let Ok(told) = serde_json::from_slice(&b) {
                    return Ok(told);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Told::default()),
            Err(_) => {}
        }
        match std::fs::remove_file(TOLD) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing the unreadable {TOLD}"))
            }
            _ => Ok(Told::default()),
        }
    }

    fn store(&self) -> Result<()> {
        let json = serde_json::to_vec(self)?;
        hostkit::fs::write_file(Path::new(TOLD), &json, 0o644)
            .with_context(|| format!("recording the status set in {TOLD}"))
    }

    /// Empties a slot, recording that only when it held a status.
    fn forget(&mut self, app: bool) -> Result<()> {
        if self.slot(app).take().is_some() {
            self.store()?;
        }
        Ok(())
    }

    fn slot(&mut self, app: bool) -> &mut Option<(String, String)> {
        if app {
            &mut self.app
        } else {
            &mut self.unit
        }
    }
}

/// Sets this unit's status (`app`: the application's) unless it is the one this unit last
/// set this way: each status-set is a process, and most hooks (every update-status) would
/// set the same status again. Nothing else sets a unit's workload status once its charm
/// runs; a status this charm sets another way goes through `set_untracked`, and a leader
/// that was not leading forgets the application's (`forget_app`).
pub fn set(level: Level, msg: &str, app: bool) -> Result<()> {
    let mut told = Told::read()?;
    let want = Some((level.as_str().to_string(), msg.to_string()));
    if *told.slot(app) == want {
        return Ok(());
    }
    told.forget(app)?;
    juju::status_set(level.as_str(), msg, app)?;
    *told.slot(app) = want;
    // Not recorded: the slot stays empty and the next hook sets the status again.
    let _ = told.store();
    Ok(())
}

/// Sets this unit's status without the record (a hook that cannot trust its own files, a
/// unit that leaves): the unit's slot is emptied first, so the next `set` sets again.
pub fn set_untracked(level: Level, msg: &str) -> Result<()> {
    Told::read()?.forget(false)?;
    Ok(juju::status_set(level.as_str(), msg, false)?)
}

/// Forgets the application status this unit set: another unit may have set one since
/// (leadership moved away and back).
pub fn forget_app() -> Result<()> {
    Told::read()?.forget(true)
}

/// A workload status's level, least severe first (the order a board ranks them by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Active,
    Waiting,
    Maintenance,
    Blocked,
}

impl Level {
    /// The name `status-set` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Active => "active",
            Level::Waiting => "waiting",
            Level::Maintenance => "maintenance",
            Level::Blocked => "blocked",
        }
    }
}

/// Statuses reported by the parts of a hook; the most severe one wins (the last reported of
/// equals: a later phase knows more).
#[derive(Default)]
pub struct StatusBoard {
    entries: Vec<(Level, String)>,
}

impl StatusBoard {
    pub fn report(&mut self, level: Level, msg: impl Into<String>) {
        self.entries.push((level, msg.into()));
    }
    pub fn winner(&self) -> (Level, String) {
        let mut best: Option<&(Level, String)> = None;
        for e in &self.entries {
            if best.is_none_or(|b| e.0 >= b.0) {
                best = Some(e);
            }
        }
        best.cloned()
            .unwrap_or((Level::Waiting, "Waiting for the cluster".into()))
    }
}

thread_local! {
    static MARKS: std::cell::RefCell<Vec<(&'static str, Instant)>> = std::cell::RefCell::new(vec![("begin", Instant::now())]);
}

/// Records how long each part of a hook took; slow hooks log the breakdown.
pub(crate) fn mark(what: &'static str) {
    MARKS.with(|m| m.borrow_mut().push((what, Instant::now())));
}

pub(crate) fn log_slow_hook(hook: &str) {
    MARKS.with(|m| {
        let m = m.borrow();
        let total = m
            .last()
            .map(|l| l.1.duration_since(m[0].1))
            .unwrap_or_default();
        if total > Duration::from_millis(1500) {
            let parts: Vec<String> = m
                .windows(2)
                .map(|w| format!("{}={}ms", w[1].0, w[1].1.duration_since(w[0].1).as_millis()))
                .collect();
            juju::log(
                "INFO",
                &format!(
                    "slow {hook} hook ({} ms): {}",
                    total.as_millis(),
                    parts.join(" ")
                ),
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_severe_status_wins_and_the_last_of_equals() {
        let mut b = StatusBoard::default();
        assert_eq!(b.winner().0, Level::Waiting);
        b.report(Level::Active, "a");
        b.report(Level::Maintenance, "m1");
        b.report(Level::Waiting, "w");
        b.report(Level::Maintenance, "m2");
        assert_eq!(b.winner(), (Level::Maintenance, "m2".to_string()));
        b.report(Level::Blocked, "b");
        b.report(Level::Active, "a2");
        assert_eq!(b.winner(), (Level::Blocked, "b".to_string()));
    }
}
