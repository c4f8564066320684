//! Membership decisions over the peer relation, as pure functions: state in, decision out.
//! The Juju leader is the one writer; etcd's member list is the source of truth.
//!
//! Formation: units that are ready before the cluster exists bootstrap together as one static
//! cluster (0.5 s for 3 members, against ~6 s growing one `member add` at a time with
//! `strict-reconfig-check`). Later units join one at a time as learners: add → the unit starts
//! with state `existing` → promote → next. Never more than one unstarted or unpromoted
//! member, so quorum never depends on a member that has not started (etcd-notes §4), and no
//! two members start `existing` at once (the 3.4 join deadlock, §0.5).

pub use crate::unit::peers::{Join, UnitInfo};
use etcdkit::client::Member;
use std::time::Duration;

/// How long the leader waits for planned units before bootstrapping with those ready.
pub const BOOTSTRAP_PATIENCE: Duration = Duration::from_secs(60);

/// Which units form the first cluster, or None to keep waiting. Every planned unit ready →
/// all of them; otherwise, after `patience`, those that are ready (the leader among them).
pub fn bootstrap_set(
    leader: &str,
    planned: &[String],
    units: &[UnitInfo],
    waited: Duration,
    patience: Duration,
) -> Option<Vec<UnitInfo>> {
    let ready: Vec<UnitInfo> = units.iter().filter(|u| u.ready).cloned().collect();
    if !ready.iter().any(|u| u.unit == leader) {
        return None;
    }
    let all_ready = planned.iter().all(|p| ready.iter().any(|u| &u.unit == p));
    if all_ready || waited >= patience {
        let mut set = ready;
        set.sort_by_key(|u| unit_number(&u.unit));
        return Some(set);
    }
    None
}

pub fn unit_number(unit: &str) -> u32 {
    unit.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// `name=peerURL,...` as etcd's initial-cluster wants it.
pub fn initial_cluster(entries: &[(String, String)]) -> String {
    let mut v: Vec<String> = entries.iter().map(|(n, u)| format!("{n}={u}")).collect();
    v.sort();
    v.join(",")
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do now; why.
    Wait(String),
    /// The learner of the join in flight has started: promote it.
    Promote { id: u64, unit: String },
    /// The join in flight is complete: clear it.
    Finish { unit: String },
    /// Admit this unit as a learner.
    Add(UnitInfo),
    /// A member that belongs to no unit and blocks the next join: remove it.
    RemoveStray { id: u64, why: String },
    /// Everything is a member.
    Done,
}

/// The member that is this unit's: by name once it has started (names are unique and stay
/// put while a peer URL changes), else by peer URL.
fn member_of<'a>(members: &'a [Member], name: &str, peer_url: &str) -> Option<&'a Member> {
    members.iter().find(|m| belongs(m, name, peer_url))
}

fn belongs(m: &Member, name: &str, peer_url: &str) -> bool {
    (!m.name.is_empty() && m.name == name) || m.peer_urls.iter().any(|u| u == peer_url)
}

/// The next membership step for the leader, given etcd's member list, the units, and the
/// join in flight (if any).
pub fn next_step(members: &[Member], units: &[UnitInfo], join: Option<&Join>) -> Step {
    if let Some(j) = join {
        match member_of(members, &j.name, &j.peer_url) {
            None => {
                // The unit is gone or was never added: only carry on if it still exists.
                if units.iter().any(|u| u.unit == j.unit) {
                    return Step::Wait(format!("adding {} to the cluster", j.unit));
                }
                return Step::Finish {
                    unit: j.unit.clone(),
                };
            }
            Some(m) if m.is_learner && m.started() => {
                return Step::Promote {
                    id: m.id,
                    unit: j.unit.clone(),
                }
            }
            Some(m) if m.is_learner || !m.started() => {
                if !units.iter().any(|u| u.unit == j.unit) {
                    return Step::RemoveStray {
                        id: m.id,
                        why: format!("{} left before it joined", j.unit),
                    };
                }
                return Step::Wait(format!("waiting for {} to start", j.unit));
            }
            Some(_) => {
                return Step::Finish {
                    unit: j.unit.clone(),
                }
            }
        }
    }
    // The first learner or unstarted member blocks further adds (one at a time).
    if let Some(m) = members.iter().find(|m| m.is_learner || !m.started()) {
        let owner = units.iter().find(|u| belongs(m, &u.name, &u.peer_url));
        match owner {
            // A learner that never started, of a live unit, with no join in flight: the
            // leader's hook added it and died before its `join` publication was committed
            // (Juju discards a failed hook's relation writes). Admitting it again publishes
            // the join once more (etcd answers that the peer URL exists, which is success).
            Some(u) if m.is_learner && !m.started() => return Step::Add(u.clone()),
            Some(u) => {
                return Step::Wait(format!("member {} ({}) has not started", u.name, u.unit))
            }
            None => {
                return Step::RemoveStray {
                    id: m.id,
                    why: format!(
                        "member {:?} {:?} belongs to no unit and never started",
                        m.name, m.peer_urls
                    ),
                }
            }
        }
    }
    let mut candidates: Vec<&UnitInfo> = units
        .iter()
        .filter(|u| u.ready && member_of(members, &u.name, &u.peer_url).is_none())
        .collect();
    candidates.sort_by_key(|u| unit_number(&u.unit));
    match candidates.first() {
        Some(u) => Step::Add((*u).clone()),
        None => Step::Done,
    }
}

/// Members that belong to no live unit (self-healing on update-status). Never the join in
/// flight, and never the last member.
pub fn strays(members: &[Member], units: &[UnitInfo], join: Option<&Join>) -> Vec<Member> {
    if members.len() <= 1 {
        return vec![];
    }
    members
        .iter()
        .filter(|m| !units.iter().any(|u| belongs(m, &u.name, &u.peer_url)))
        .filter(|m| {
            join.map(|j| !belongs(m, &j.name, &j.peer_url))
                .unwrap_or(true)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(n: u32, ready: bool) -> UnitInfo {
        UnitInfo {
            unit: format!("etcd/{n}"),
            name: format!("etcd{n}"),
            peer_url: format!("https://10.0.0.{n}:2380"),
            client_url: format!("https://10.0.0.{n}:2379"),
            ready,
            started: false,
        }
    }

    fn member(n: u32, started: bool, learner: bool) -> Member {
        Member {
            id: 100 + n as u64,
            name: if started {
                format!("etcd{n}")
            } else {
                String::new()
            },
            peer_urls: vec![format!("https://10.0.0.{n}:2380")],
            client_urls: if started {
                vec![format!("https://10.0.0.{n}:2379")]
            } else {
                vec![]
            },
            is_learner: learner,
        }
    }

    fn planned(n: u32) -> Vec<String> {
        (0..n).map(|i| format!("etcd/{i}")).collect()
    }

    #[test]
    fn bootstrap_waits_for_every_planned_unit_then_takes_them_all() {
        let units = vec![unit(0, true), unit(1, true), unit(2, false)];
        assert_eq!(
            bootstrap_set(
                "etcd/0",
                &planned(3),
                &units,
                Duration::from_secs(1),
                BOOTSTRAP_PATIENCE
            ),
            None
        );
        let units = vec![unit(0, true), unit(1, true), unit(2, true)];
        let set = bootstrap_set(
            "etcd/0",
            &planned(3),
            &units,
            Duration::ZERO,
            BOOTSTRAP_PATIENCE,
        )
        .unwrap();
        assert_eq!(
            set.iter().map(|u| u.unit.as_str()).collect::<Vec<_>>(),
            ["etcd/0", "etcd/1", "etcd/2"]
        );
    }

    #[test]
    fn bootstrap_after_patience_with_those_ready_but_never_without_the_leader() {
        let units = vec![unit(0, true), unit(1, false)];
        let set = bootstrap_set(
            "etcd/0",
            &planned(2),
            &units,
            BOOTSTRAP_PATIENCE,
            BOOTSTRAP_PATIENCE,
        )
        .unwrap();
        assert_eq!(set.len(), 1);
        let units = vec![unit(0, false), unit(1, true)];
        assert_eq!(
            bootstrap_set(
                "etcd/0",
                &planned(2),
                &units,
                BOOTSTRAP_PATIENCE * 2,
                BOOTSTRAP_PATIENCE
            ),
            None
        );
    }

    #[test]
    fn joins_one_at_a_time_lowest_unit_first() {
        let members = vec![member(0, true, false)];
        let units = vec![unit(0, false), unit(2, true), unit(1, true)];
        assert_eq!(next_step(&members, &units, None), Step::Add(unit(1, true)));
        // a learner that has not started blocks the next add
        let members = vec![member(0, true, false), member(1, false, true)];
        let join = Join {
            unit: "etcd/1".into(),
            name: "etcd1".into(),
            peer_url: unit(1, true).peer_url,
            initial_cluster: String::new(),
        };
        assert!(matches!(
            next_step(&members, &units, Some(&join)),
            Step::Wait(_)
        ));
        // started learner → promote; promoted → finish; then the next unit
        let members = vec![member(0, true, false), member(1, true, true)];
        assert_eq!(
            next_step(&members, &units, Some(&join)),
            Step::Promote {
                id: 101,
                unit: "etcd/1".into()
            }
        );
        let members = vec![member(0, true, false), member(1, true, false)];
        assert_eq!(
            next_step(&members, &units, Some(&join)),
            Step::Finish {
                unit: "etcd/1".into()
            }
        );
        assert_eq!(next_step(&members, &units, None), Step::Add(unit(2, true)));
    }

    #[test]
    fn a_learner_whose_join_publication_was_lost_is_admitted_again() {
        // unit 2 was added as a learner, but the hook that added it died before its join
        // was committed: no join in flight.
        let mut members = vec![member(0, true, false), member(1, true, false)];
        members.push(member(2, false, true));
        let units = vec![unit(0, true), unit(1, true), unit(2, true)];
        assert_eq!(next_step(&members, &units, None), Step::Add(unit(2, true)));
        // A voter that has not started yet (a bootstrap member) is waited for, not re-added.
        let boot = vec![member(0, true, false), member(1, false, false)];
        assert!(matches!(next_step(&boot, &units[..2], None), Step::Wait(_)));
    }

    #[test]
    fn an_unstarted_member_of_a_vanished_unit_is_removed_before_the_next_add() {
        let members = vec![member(0, true, false), member(5, false, true)];
        let units = vec![unit(0, false), unit(1, true)];
        assert!(matches!(
            next_step(&members, &units, None),
            Step::RemoveStray { id: 105, .. }
        ));
        let join = Join {
            unit: "etcd/5".into(),
            name: "etcd5".into(),
            peer_url: "https://10.0.0.5:2380".into(),
            initial_cluster: String::new(),
        };
        assert!(matches!(
            next_step(&members, &units, Some(&join)),
            Step::RemoveStray { id: 105, .. }
        ));
    }

    #[test]
    fn strays_are_members_without_units_but_never_the_last_or_the_joiner() {
        let members = vec![
            member(0, true, false),
            member(1, true, false),
            member(2, true, false),
        ];
        let units = vec![unit(0, false), unit(1, false)];
        assert_eq!(
            strays(&members, &units, None)
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            [102]
        );
        let join = Join {
            unit: "etcd/2".into(),
            name: "etcd2".into(),
            peer_url: "https://10.0.0.2:2380".into(),
            initial_cluster: String::new(),
        };
        assert!(strays(&members, &units, Some(&join)).is_empty());
        assert!(strays(&members[..1], &[], None).is_empty());
    }

    #[test]
    fn a_member_whose_peer_url_is_changing_is_neither_a_stray_nor_added_again() {
        let mut m1 = member(1, true, false);
        m1.peer_urls = vec!["https://10.0.0.1:12380".into()];
        let members = vec![member(0, true, false), m1];
        let units = vec![unit(0, true), unit(1, true)];
        assert!(strays(&members, &units, None).is_empty());
        assert_eq!(next_step(&members, &units, None), Step::Done);
    }

    #[test]
    fn initial_cluster_is_sorted() {
        assert_eq!(
            initial_cluster(&[("b".into(), "u2".into()), ("a".into(), "u1".into())]),
            "a=u1,b=u2"
        );
    }
}
