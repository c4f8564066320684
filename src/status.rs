//! What a hook tells the operator: the statuses its phases report (the most severe wins),
//! set only when they differ from what this unit last set, and, for a slow hook, how long
//! each part took.

use crate::juju;
use crate::pki;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// What this unit last set with `set` (its own status, and the application's while it
/// leads). A cache: when it cannot be read, the status is set again.
const TOLD: &str = "/var/lib/etcd-charm/told-status.json";

#[derive(Default, Serialize, Deserialize, PartialEq)]
struct Told {
    unit: Option<(String, String)>,
    app: Option<(String, String)>,
}

fn told() -> Told {
    std::fs::read(TOLD)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn remember(t: &Told) {
    let json = serde_json::to_vec(t).unwrap_or_default();
    // Not remembered: the next hook sets the same status again, which is harmless.
    let _ = pki::write_file(Path::new(TOLD), &json, 0o644);
}

/// Sets this unit's status (`app`: the application's) unless it is the one this unit last
/// set this way: each status-set is a process, and most hooks (every update-status) would
/// set the same status again. Nothing else sets a unit's workload status once its charm
/// runs; a status this charm sets another way goes through `set_untracked`, and a leader
/// that was not leading forgets the application's (`forget_app`).
pub fn set(level: &str, msg: &str, app: bool) -> juju::Result<()> {
    let mut t = told();
    let want = Some((level.to_string(), msg.to_string()));
    let slot = if app { &mut t.app } else { &mut t.unit };
    if *slot == want {
        return Ok(());
    }
    juju::status_set(level, msg, app)?;
    *slot = want;
    remember(&t);
    Ok(())
}

/// Sets this unit's status without the record (a hook that cannot trust its own files, a
/// unit that leaves): the record is dropped first, so the next `set` sets again.
pub fn set_untracked(level: &str, msg: &str) -> juju::Result<()> {
    let _ = std::fs::remove_file(TOLD);
    juju::status_set(level, msg, false)
}

/// Forgets the application status this unit set: another unit may have set one since
/// (leadership moved away and back).
pub fn forget_app() {
    let mut t = told();
    if t.app.take().is_some() {
        remember(&t);
    }
}

/// Statuses reported by the parts of a hook; the most severe one wins.
#[derive(Default)]
pub struct StatusBoard {
    entries: Vec<(u8, &'static str, String)>,
}

impl StatusBoard {
    pub fn report(&mut self, status: &'static str, msg: impl Into<String>) {
        let rank = match status {
            "blocked" => 4,
            "maintenance" => 3,
            "waiting" => 2,
            _ => 1,
        };
        self.entries.push((rank, status, msg.into()));
    }
    pub fn winner(&self) -> (&'static str, String) {
        self.entries
            .iter()
            .max_by_key(|e| e.0)
            .map(|e| (e.1, e.2.clone()))
            .unwrap_or(("waiting", "Waiting for the cluster".into()))
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
