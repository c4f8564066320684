//! The leader's rolling-restart lock, as a pure decision over the peer databags: one unit at
//! a time restarts (a new config or new binaries), each granted `unit:hash` and released
//! when it reports `restarted` with that hash. For a version upgrade the raft leader's unit
//! goes last (one leader election, not one per unit), a unit whose new binaries failed stops
//! the roll, and `pause_after_unit_upgrade` holds it after the first or every upgraded unit
//! until the `resume-upgrade` action.
//!
//! Unit databag keys: `restart-wanted` (hash of the config and version it wants to run),
//! `restarted` (the hash it restarted with), `etcd-version` (what runs now),
//! `wants-version` (what it will run after its turn), `rolled-back` (a version that failed),
//! `turn-declined` (the hash of an upgrade turn it handed back because its member had become
//! the raft leader while others still waited: it goes last instead), `config-rejected` (its
//! new config failed and was rolled back: the roll stops until the config changes).

use crate::config::PauseAfter;
use crate::ops::membership::plan::unit_number;
use crate::unit::peers::{Key, PeerBag};
use etcdkit::version::Version;
use std::collections::BTreeMap;

pub type Bag = BTreeMap<String, String>;

/// The leader's app keys for the roll.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Lock {
    /// `unit:hash` of the outstanding turn
    pub grant: Option<String>,
    /// the unit whose outstanding turn is a version upgrade
    pub upgrade_turn: Option<String>,
    /// the unit after which the upgrade is paused
    pub paused: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A turn is outstanding: wait for it.
    Busy { unit: String },
    /// The outstanding turn is over: release it (and pause after it if `pause`).
    Release { pause: bool },
    /// A unit's new version failed and was rolled back there: no more turns.
    Stopped { unit: String, version: String },
    /// A unit's new config failed and the config before runs there again: no more turns
    /// until the config changes.
    ConfigStopped { unit: String },
    /// Paused after `after` until `resume-upgrade`.
    Paused { after: String },
    /// Grant `unit` its turn; `upgrade` when it switches versions in it.
    Grant {
        unit: String,
        hash: String,
        upgrade: bool,
    },
    /// Nothing waits.
    Idle,
}

fn get<'a>(b: &'a Bag, k: Key) -> Option<&'a str> {
    b.peer(k).map(String::as_str).filter(|v| !v.is_empty())
}

fn wants_upgrade(b: &Bag) -> bool {
    matches!((get(b, Key::WantsVersion), get(b, Key::EtcdVersion)), (Some(w), Some(r)) if w != r)
}

/// The units waiting for a turn, in the order they get it: lowest unit number first, the
/// raft leader's unit last.
pub fn queue<'a>(units: &'a BTreeMap<String, Bag>, raft_leader_unit: Option<&str>) -> Vec<&'a str> {
    let mut waiting: Vec<&str> = units
        .iter()
        .filter(
            |(_, b)| matches!(get(b, Key::RestartWanted), Some(w) if get(b, Key::Restarted) != Some(w)),
        )
        .map(|(u, _)| u.as_str())
        .collect();
    // A unit that handed its turn back (it led raft then) also waits for the end.
    let last = |u: &str| {
        Some(u) == raft_leader_unit
            || units.get(u).is_some_and(|b| {
                get(b, Key::TurnDeclined).is_some()
                    && get(b, Key::TurnDeclined) == get(b, Key::RestartWanted)
            })
    };
    waiting.sort_by_key(|u| (last(u), unit_number(u)));
    waiting
}

/// The unit (and version) whose upgrade failed and was rolled back there, if any: it stops
/// the roll.
pub fn rolled_back(units: &BTreeMap<String, Bag>) -> Option<(String, String)> {
    units
        .iter()
        .find_map(|(u, b)| get(b, Key::RolledBack).map(|v| (u.clone(), v.to_string())))
}

/// The unit whose new config failed and was rolled back there (its `config-rejected`,
/// cleared once its config changes again), if any: it stops the roll.
pub fn config_rejected(units: &BTreeMap<String, Bag>) -> Option<String> {
    units
        .iter()
        .find_map(|(u, b)| get(b, Key::ConfigRejected).map(|_| u.clone()))
}

pub fn decide(
    units: &BTreeMap<String, Bag>,
    lock: &Lock,
    pause_mode: PauseAfter,
    raft_leader_unit: Option<&str>,
) -> Next {
    if let Some(g) = &lock.grant {
        let (unit, hash) = g.split_once(':').unwrap_or((g.as_str(), ""));
        let done = match units.get(unit) {
            None => true,
            Some(b) => {
                get(b, Key::Restarted) == Some(hash) || get(b, Key::RestartWanted) != Some(hash)
            }
        };
        let declined = units
            .get(unit)
            .is_some_and(|b| get(b, Key::TurnDeclined) == Some(hash));
        let others_wait = queue(units, raft_leader_unit).iter().any(|u| *u != unit);
        if !done && declined && others_wait {
            // Handed back: the others go first, that unit last (see `queue`).
            return Next::Release { pause: false };
        }
        if !done {
            return Next::Busy { unit: unit.into() };
        }
        let upgraded = lock.upgrade_turn.as_deref() == Some(unit)
            && units
                .get(unit)
                .is_some_and(|b| !wants_upgrade(b) && get(b, Key::RolledBack).is_none());
        let more = queue(units, raft_leader_unit).iter().any(|u| *u != unit);
        let pause = upgraded
            && more
            && match pause_mode {
                PauseAfter::All => true,
                PauseAfter::First => {
                    let v = units.get(unit).and_then(|b| get(b, Key::EtcdVersion));
                    units
                        .values()
                        .filter(|b| get(b, Key::EtcdVersion) == v)
                        .count()
                        == 1
                }
                PauseAfter::None => false,
            };
        return Next::Release { pause };
    }
    if let Some((unit, version)) = rolled_back(units) {
        return Next::Stopped { unit, version };
    }
    if let Some(unit) = config_rejected(units) {
        return Next::ConfigStopped { unit };
    }
    if let Some(after) = &lock.paused {
        return Next::Paused {
            after: after.clone(),
        };
    }
    match queue(units, raft_leader_unit).first() {
        Some(u) => {
            let b = &units[*u];
            // An upgrade starts once every unit has unpacked the new version: until then the
            // queue holds only the units that have, and the raft leader could be first.
            let target = get(b, Key::WantsVersion);
            if wants_upgrade(b) && units.values().any(|o| get(o, Key::WantsVersion) != target) {
                return Next::Idle;
            }
            Next::Grant {
                unit: u.to_string(),
                hash: get(b, Key::RestartWanted).unwrap_or_default().to_string(),
                upgrade: wants_upgrade(b),
            }
        }
        None => Next::Idle,
    }
}

/// Where a version upgrade stands: (target, units done, units), or None when every unit
/// runs the newest version any unit wants.
pub fn progress(units: &BTreeMap<String, Bag>) -> Option<(String, usize, usize)> {
    let target = units
        .values()
        .filter_map(|b| get(b, Key::WantsVersion))
        .max_by_key(|v| Version::parse(v))?;
    let done = units
        .values()
        .filter(|b| get(b, Key::EtcdVersion) == Some(target))
        .count();
    (done < units.len()).then(|| (target.to_string(), done, units.len()))
}

/// The versions the units run, when they differ: `3.4.23 (etcd/1, etcd/2), 3.5.16 (etcd/0)`.
pub fn mixed_versions(units: &BTreeMap<String, Bag>) -> Option<String> {
    let mut by: BTreeMap<Option<Version>, (String, Vec<&str>)> = BTreeMap::new();
    for (u, b) in units {
        if let Some(v) = get(b, Key::EtcdVersion) {
            by.entry(Version::parse(v))
                .or_insert_with(|| (v.to_string(), vec![]))
                .1
                .push(u);
        }
    }
    (by.len() > 1).then(|| {
        by.values()
            .map(|(v, us)| format!("{v} ({})", us.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(pairs: &[(&str, &str)]) -> Bag {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Three units wanting 3.5.16 while running 3.4.23.
    fn upgrading() -> BTreeMap<String, Bag> {
        (0..3)
            .map(|n| {
                (
                    format!("etcd/{n}"),
                    bag(&[
                        ("restart-wanted", "h2"),
                        ("restarted", "h1"),
                        ("etcd-version", "3.4.23"),
                        ("wants-version", "3.5.16"),
                    ]),
                )
            })
            .collect()
    }

    /// H1: a config turn that failed and was rolled back stops the roll: the failing unit's
    /// grant is released, no other unit gets a turn while its `config-rejected` stands, and
    /// the roll goes on once it is cleared (the config changed).
    #[test]
    fn a_rejected_config_stops_the_roll_until_the_config_changes() {
        let mut units: BTreeMap<String, Bag> = (0..3)
            .map(|n| {
                (
                    format!("etcd/{n}"),
                    bag(&[("restart-wanted", "c2"), ("restarted", "c1")]),
                )
            })
            .collect();
        let mut lock = Lock::default();
        let Next::Grant { unit, hash, .. } = decide(&units, &lock, PauseAfter::None, None) else {
            panic!("no grant")
        };
        assert_eq!(unit, "etcd/0");
        lock.grant = Some(format!("{unit}:{hash}"));
        // etcd/0 restarted with c2, was unhealthy, rolled back, and says so.
        let b = units.get_mut("etcd/0").unwrap();
        b.insert("restarted".into(), "c2".into());
        b.insert("config-rejected".into(), "abcd".into());
        assert_eq!(
            decide(&units, &lock, PauseAfter::None, None),
            Next::Release { pause: false }
        );
        lock.grant = None;
        assert_eq!(
            decide(&units, &lock, PauseAfter::None, None),
            Next::ConfigStopped {
                unit: "etcd/0".into()
            }
        );
        // The operator fixes the config: the record goes and the others' turns come.
        units
            .get_mut("etcd/0")
            .unwrap()
            .insert("config-rejected".into(), String::new());
        assert!(
            matches!(decide(&units, &lock, PauseAfter::None, None), Next::Grant { unit, .. } if unit == "etcd/1")
        );
    }

    fn finish(units: &mut BTreeMap<String, Bag>, unit: &str) {
        let b = units.get_mut(unit).unwrap();
        b.insert("restarted".into(), "h2".into());
        b.insert("etcd-version".into(), "3.5.16".into());
    }

    /// Runs the roll to its end, granting and finishing turns; returns the order.
    fn run(
        units: &mut BTreeMap<String, Bag>,
        mode: PauseAfter,
        leader: Option<&str>,
    ) -> (Vec<String>, Vec<String>) {
        let mut lock = Lock::default();
        let (mut order, mut pauses) = (vec![], vec![]);
        for _ in 0..20 {
            match decide(units, &lock, mode, leader) {
                Next::Grant {
                    unit,
                    hash,
                    upgrade,
                } => {
                    assert!(upgrade);
                    lock.grant = Some(format!("{unit}:{hash}"));
                    lock.upgrade_turn = Some(unit.clone());
                    order.push(unit);
                }
                Next::Busy { unit } => finish(units, &unit),
                Next::Release { pause } => {
                    if pause {
                        let after = lock.upgrade_turn.clone().unwrap();
                        pauses.push(after.clone());
                        lock.paused = Some(after);
                    }
                    lock.grant = None;
                    lock.upgrade_turn = None;
                }
                Next::Paused { .. } => lock.paused = None, // resume-upgrade
                Next::Idle => return (order, pauses),
                other => panic!("{other:?}"),
            }
        }
        panic!("the roll did not end");
    }

    #[test]
    fn a_turn_handed_back_by_the_raft_leader_goes_to_the_others_first() {
        let mut units = BTreeMap::new();
        for u in ["etcd/0", "etcd/1", "etcd/2"] {
            units.insert(
                u.to_string(),
                Bag::from([
                    ("restart-wanted".into(), "h".into()),
                    ("etcd-version".into(), "3.4.23".into()),
                    ("wants-version".into(), "3.5.16".into()),
                ]),
            );
        }
        units
            .get_mut("etcd/0")
            .unwrap()
            .insert("turn-declined".into(), "h".into());
        let lock = Lock {
            grant: Some("etcd/0:h".into()),
            upgrade_turn: Some("etcd/0".into()),
            paused: None,
        };
        assert_eq!(
            decide(&units, &lock, PauseAfter::None, None),
            Next::Release { pause: false }
        );
        // Released, the unit that handed its turn back waits for the end, even when
        // leadership has moved on since (another unit's turn first wakes everyone).
        let free = Lock::default();
        for leader in [None, Some("etcd/0"), Some("etcd/2")] {
            let next = decide(&units, &free, PauseAfter::None, leader);
            assert!(
                matches!(&next, Next::Grant { unit, .. } if unit == "etcd/1"),
                "{leader:?}: {next:?}"
            );
        }
        // The last to go: a hand-back no longer releases it.
        for u in ["etcd/1", "etcd/2"] {
            units
                .get_mut(u)
                .unwrap()
                .insert("restarted".into(), "h".into());
        }
        assert_eq!(
            decide(&units, &lock, PauseAfter::None, Some("etcd/0")),
            Next::Busy {
                unit: "etcd/0".into()
            }
        );
    }

    #[test]
    fn one_unit_at_a_time_the_raft_leader_last() {
        let mut units = upgrading();
        let (order, pauses) = run(&mut units, PauseAfter::None, Some("etcd/0"));
        assert_eq!(order, ["etcd/1", "etcd/2", "etcd/0"]);
        assert!(pauses.is_empty());
        assert_eq!(progress(&units), None);
    }

    #[test]
    fn an_upgrade_waits_until_every_unit_has_the_new_version() {
        let mut units = upgrading();
        // etcd/1 (the raft leader) alone has unpacked the new version so far
        for u in ["etcd/0", "etcd/2"] {
            let b = units.get_mut(u).unwrap();
            b.insert("wants-version".into(), "3.4.23".into());
            b.insert("restart-wanted".into(), "h1".into());
        }
        assert_eq!(
            decide(&units, &Lock::default(), PauseAfter::None, Some("etcd/1")),
            Next::Idle
        );
        let (order, _) = run(&mut upgrading(), PauseAfter::None, Some("etcd/1"));
        assert_eq!(order, ["etcd/0", "etcd/2", "etcd/1"]);
    }

    #[test]
    fn pauses_after_the_first_or_every_unit_but_never_after_the_last() {
        let (_, pauses) = run(&mut upgrading(), PauseAfter::First, None);
        assert_eq!(pauses, ["etcd/0"]);
        let (_, pauses) = run(&mut upgrading(), PauseAfter::All, None);
        assert_eq!(pauses, ["etcd/0", "etcd/1"]);
    }

    #[test]
    fn a_rolled_back_unit_stops_the_roll_and_a_busy_turn_is_waited_for() {
        let mut units = upgrading();
        let lock = Lock {
            grant: Some("etcd/0:h2".into()),
            upgrade_turn: Some("etcd/0".into()),
            paused: None,
        };
        assert_eq!(
            decide(&units, &lock, PauseAfter::None, None),
            Next::Busy {
                unit: "etcd/0".into()
            }
        );
        let b = units.get_mut("etcd/0").unwrap();
        b.insert("restarted".into(), "h2".into());
        b.insert("rolled-back".into(), "3.5.16".into());
        assert_eq!(
            decide(&units, &lock, PauseAfter::All, None),
            Next::Release { pause: false }
        );
        assert_eq!(
            decide(&units, &Lock::default(), PauseAfter::None, None),
            Next::Stopped {
                unit: "etcd/0".into(),
                version: "3.5.16".into()
            }
        );
    }

    #[test]
    fn progress_and_mixed_versions_name_the_units() {
        let mut units = upgrading();
        assert_eq!(progress(&units), Some(("3.5.16".into(), 0, 3)));
        finish(&mut units, "etcd/1");
        assert_eq!(progress(&units), Some(("3.5.16".into(), 1, 3)));
        assert_eq!(
            mixed_versions(&units).unwrap(),
            "3.4.23 (etcd/0, etcd/2), 3.5.16 (etcd/1)"
        );
        // a config-only roll is no upgrade
        let same: BTreeMap<String, Bag> = [(
            "etcd/0".to_string(),
            bag(&[("etcd-version", "3.5.1"), ("wants-version", "3.5.1")]),
        )]
        .into();
        assert_eq!(progress(&same), None);
        assert_eq!(mixed_versions(&same), None);
    }
}
