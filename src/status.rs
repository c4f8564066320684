//! What a hook tells the operator: the statuses its phases report (the most severe wins)
//! and, for a slow hook, how long each part took.

use crate::juju;
use std::time::{Duration, Instant};

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
