//! This unit's restart in its rolling turn, as a transaction: staged binaries are switched
//! in and the config that ran is kept (what ran before recorded first), etcd restarts with
//! its new config, and the switch is committed only once the member answers healthy;
//! otherwise what ran before (binaries, config or both) goes back and etcd restarts on it. A hook killed anywhere in between leaves the record, and the next
//! hook finishes the transaction (`resume`) before it decides anything else.
//!
//! The steps run through `Member`; the live one (`reconcile.rs`) is etcd's service and the
//! install record, the tests below run the same steps over an in-memory member and crash
//! them at every step.
//!
//! Must not: decide whose turn it is (`plan::turn`) or publish anything (the caller does).

use crate::unit::crash_point;
use anyhow::Result;

/// This unit's etcd as its restart uses it.
pub trait Member {
    /// Switches staged binaries in and keeps the config that ran, recording what ran
    /// before first; nothing staged and no config to keep: nothing happens.
    fn switch(&mut self) -> Result<()>;
    /// Whether a switch is recorded whose verdict has not been given (a way back exists).
    fn pending(&self) -> bool;
    /// Whether the pending switch includes new binaries (not only a new config).
    fn binaries_switched(&self) -> bool;
    /// Restarts etcd with the new config (and the binaries `current` names).
    fn restart(&mut self) -> Result<()>;
    /// Waits (bounded) for the restarted member to answer healthy; why not, otherwise.
    fn healthy(&mut self) -> std::result::Result<(), String>;
    /// Keeps the switched-in binaries.
    fn commit(&mut self) -> Result<()>;
    /// Puts back what ran before the switch (binaries and config) and restarts etcd on it.
    fn roll_back(&mut self) -> Result<()>;
    /// The version the binaries in place claim.
    fn version(&self) -> String;
}

/// How a restart ended.
#[derive(Debug, PartialEq)]
pub enum Restarted {
    /// The member answers healthy; a switch, if any, is committed.
    Healthy,
    /// A restart with nothing to go back to (the config that ran could not be kept) after
    /// which the member does not answer healthy: the status says so, the next hooks see
    /// whether it recovers.
    Unhealthy { why: String },
    /// What the turn brought failed its health check and what ran before runs again:
    /// `failed` is the version of new binaries that failed, None when only the config was
    /// new.
    RolledBack { failed: Option<String>, why: String },
}

/// Takes this unit's turn: switch (when binaries are staged), restart, verdict.
pub fn take(m: &mut impl Member) -> Result<Restarted> {
    m.switch()?;
    crash_point("upgrade-switched");
    m.restart()?;
    crash_point("upgrade-restarted");
    verdict(m)
}

/// Finishes a turn a killed hook left between its switch and its verdict: the switch is
/// completed if it was cut short, etcd restarted (the kill may have come before the
/// restart), and the verdict given as in `take`. `None` when nothing is pending.
pub fn resume(m: &mut impl Member) -> Result<Option<Restarted>> {
    if !m.pending() {
        return Ok(None);
    }
    m.switch()?;
    m.restart()?;
    verdict(m).map(Some)
}

fn verdict(m: &mut impl Member) -> Result<Restarted> {
    match m.healthy() {
        Ok(()) => {
            if m.pending() {
                m.commit()?;
            }
            Ok(Restarted::Healthy)
        }
        Err(why) if m.pending() => {
            let failed = m.binaries_switched().then(|| m.version());
            m.roll_back()?;
            crash_point("upgrade-rolled-back");
            Ok(Restarted::RolledBack { failed, why })
        }
        Err(why) => Ok(Restarted::Unhealthy { why }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member on one machine: the binaries `current` names, what runs, the install
    /// record (`staged`, `previous`) that survives a crash, and the versions that serve.
    #[derive(Clone, Debug, Default)]
    struct Fake {
        current: String,
        running: String,
        staged: Option<String>,
        previous: Option<String>,
        /// the config on disk, what etcd runs with, the one the turn brings (rendered), and
        /// the one kept to go back to
        config: String,
        running_config: String,
        rendered: String,
        kept_config: Option<String>,
        serve: Vec<String>,
        /// The call (by position among all calls) at which the hook is killed: from there
        /// on nothing the hook does has any effect.
        kill_at: Option<usize>,
        calls: usize,
        killed: bool,
    }

    impl Fake {
        fn new(current: &str, staged: Option<&str>, serve: &[&str]) -> Fake {
            Fake {
                current: current.into(),
                running: current.into(),
                staged: staged.map(String::from),
                config: "old".into(),
                running_config: "old".into(),
                rendered: "old".into(),
                serve: serve.iter().map(|s| s.to_string()).collect(),
                ..Fake::default()
            }
        }
        /// A member whose turn brings a new config (`rendered`) and no binaries.
        fn config_turn(new: &str, serve: &[&str]) -> Fake {
            Fake {
                rendered: new.into(),
                ..Fake::new("3.5.1", None, serve)
            }
        }
        /// Counts a call; Err when the hook dies here (state so far is what a crash leaves).
        fn step(&mut self) -> Result<()> {
            self.calls += 1;
            self.killed |= self.kill_at == Some(self.calls);
            if self.killed {
                anyhow::bail!("killed");
            }
            Ok(())
        }
    }

    impl Member for Fake {
        fn switch(&mut self) -> Result<()> {
            self.step()?;
            if self.kept_config.is_none() && self.config != self.rendered {
                self.kept_config = Some(self.config.clone());
            }
            if let Some(s) = self.staged.take() {
                self.previous.get_or_insert(self.current.clone());
                self.current = s;
            }
            Ok(())
        }
        fn pending(&self) -> bool {
            self.previous.is_some() || self.kept_config.is_some()
        }
        fn binaries_switched(&self) -> bool {
            self.previous.is_some()
        }
        fn restart(&mut self) -> Result<()> {
            self.step()?;
            self.config = self.rendered.clone();
            self.running = self.current.clone();
            self.running_config = self.config.clone();
            Ok(())
        }
        fn healthy(&mut self) -> std::result::Result<(), String> {
            self.step().map_err(|e| e.to_string())?;
            if !self.serve.contains(&self.running) {
                Err(format!("{} does not serve", self.running))
            } else if self.running_config != "old" && !self.serve.contains(&self.running_config) {
                Err(format!("config {} does not serve", self.running_config))
            } else {
                Ok(())
            }
        }
        fn commit(&mut self) -> Result<()> {
            self.step()?;
            self.previous = None;
            self.kept_config = None;
            Ok(())
        }
        fn roll_back(&mut self) -> Result<()> {
            self.step()?;
            if let Some(p) = self.previous.take() {
                self.current = p;
            }
            if let Some(c) = self.kept_config.take() {
                self.config = c;
            }
            self.running = self.current.clone();
            self.running_config = self.config.clone();
            Ok(())
        }
        fn version(&self) -> String {
            self.current.clone()
        }
    }

    /// A hook: a pending turn is finished first, then the turn is taken if it still waits
    /// (the new binaries are still staged, or the restart never happened).
    fn hook(m: &mut Fake) -> Result<Restarted> {
        if let Some(r) = resume(m)? {
            return Ok(r);
        }
        take(m)
    }

    #[test]
    fn new_binaries_that_serve_are_kept() {
        let mut m = Fake::new("3.5.1", Some("3.5.16"), &["3.5.1", "3.5.16"]);
        assert_eq!(take(&mut m).unwrap(), Restarted::Healthy);
        assert_eq!(
            (m.current.as_str(), m.running.as_str()),
            ("3.5.16", "3.5.16")
        );
        assert!(!m.pending() && m.staged.is_none());
    }

    #[test]
    fn new_binaries_that_fail_go_back_and_the_old_ones_run() {
        let mut m = Fake::new("3.5.1", Some("3.5.99"), &["3.5.1"]);
        let r = take(&mut m).unwrap();
        assert_eq!(
            r,
            Restarted::RolledBack {
                failed: Some("3.5.99".into()),
                why: "3.5.99 does not serve".into()
            }
        );
        assert_eq!((m.current.as_str(), m.running.as_str()), ("3.5.1", "3.5.1"));
        assert!(!m.pending());
    }

    #[test]
    fn a_restart_that_fails_with_nothing_kept_is_reported_with_nothing_to_undo() {
        let mut m = Fake::new("3.5.1", None, &[]);
        assert!(matches!(take(&mut m).unwrap(), Restarted::Unhealthy { .. }));
        assert_eq!(m.current, "3.5.1");
    }

    #[test]
    fn a_new_config_that_fails_goes_back_and_the_old_one_runs() {
        let mut m = Fake::config_turn("bad", &["3.5.1"]);
        let r = take(&mut m).unwrap();
        assert_eq!(
            r,
            Restarted::RolledBack {
                failed: None,
                why: "config bad does not serve".into()
            }
        );
        assert_eq!(
            (m.config.as_str(), m.running_config.as_str()),
            ("old", "old")
        );
        assert!(!m.pending());
        let mut m = Fake::config_turn("good", &["3.5.1", "good"]);
        assert_eq!(take(&mut m).unwrap(), Restarted::Healthy);
        assert_eq!(m.running_config, "good");
        assert!(!m.pending());
    }

    /// Runs `make()`'s turn once to count its calls, then kills it at each call in turn and
    /// runs the next hook on what the kill left; `check` judges each end (`case` names it).
    fn killed_at_every_step(make: impl Fn() -> Fake, check: impl Fn(&Fake, &Restarted, &str)) {
        let calls = {
            let mut m = make();
            take(&mut m).unwrap();
            m.calls
        };
        for kill_at in 1..=calls {
            let mut m = make();
            m.kill_at = Some(kill_at);
            assert!(take(&mut m).is_err(), "killed at call {kill_at}");
            // What the crash left is all the next hook has.
            let mut after = Fake {
                kill_at: None,
                calls: 0,
                killed: false,
                ..m.clone()
            };
            let r = hook(&mut after).unwrap();
            check(
                &after,
                &r,
                &format!("killed at call {kill_at}: {r:?} {after:?}"),
            );
        }
    }

    /// A config turn killed at any step: the next hook ends it on the new config when it
    /// serves, on the old one otherwise, and nothing stays pending.
    #[test]
    fn a_hook_killed_at_any_step_of_a_config_turn_is_finished_by_the_next_hook() {
        for (new, serves) in [("good", true), ("bad", false)] {
            let serve: &[&str] = if serves { &["3.5.1", new] } else { &["3.5.1"] };
            let ends_on = if serves { new } else { "old" };
            killed_at_every_step(
                || Fake::config_turn(new, serve),
                |after, _, case| {
                    assert_eq!(after.running_config, ends_on, "{new}, {case}");
                    assert_eq!(after.config, ends_on, "{new}, {case}");
                    assert!(!after.pending(), "{new}, {case}");
                },
            );
        }
    }

    #[test]
    fn a_hook_killed_at_any_step_of_a_turn_is_finished_by_the_next_hook() {
        for (new, serves, ends_on) in [("3.5.16", true, "3.5.16"), ("3.5.99", false, "3.5.1")] {
            let serve: &[&str] = if serves { &["3.5.1", new] } else { &["3.5.1"] };
            killed_at_every_step(
                || Fake::new("3.5.1", Some(new), serve),
                |after, r, case| {
                    assert_eq!(after.current, ends_on, "{new}, {case}");
                    assert_eq!(after.running, ends_on, "{new}, {case}");
                    assert!(!after.pending() && after.staged.is_none(), "{new}, {case}");
                    if serves {
                        assert_eq!(*r, Restarted::Healthy, "{new}, {case}");
                    } else {
                        assert!(matches!(r, Restarted::RolledBack { .. }), "{new}, {case}");
                    }
                },
            );
        }
    }
}
