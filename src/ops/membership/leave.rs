//! Leaving the cluster when this unit goes (its `stop` hook, or its own
//! cluster-relation-departed): raft leadership handed over, this member removed through any
//! member that answers, then (the caller) etcd stopped and disabled and `left` recorded.
//!
//! Each step is safe to run again after a kill at any point: a member that is no longer in
//! the list is not looked for again, a removal of a member that is already gone succeeds,
//! and a member alone in its cluster is never removed (there would be no cluster left; the
//! application is going). The steps run through `Cluster`; the live one is etcd's gateway,
//! the tests below drive the same steps over an in-memory cluster and kill them at every
//! call.

use crate::unit::{crash_point, retry};
use etcdkit::client::{Client, Member};
use std::time::Duration;

/// The cluster as a leaving member reaches it.
pub trait Cluster {
    /// The members as this member's etcd answers; `None` when it does not answer (etcd is
    /// not running, or was removed and stopped itself).
    fn members(&self) -> Option<Vec<Member>>;
    /// Whether `member` answers on its client URL now (a member added but never started,
    /// with no client URL, does not).
    fn answers(&self, member: &Member) -> bool;
    /// Moves raft leadership away from `me` if it holds it (best effort).
    fn hand_over(&self, me: u64, members: &[Member]);
    /// Removes `me` through any member that answers; one already gone is success.
    fn remove(&self, me: u64, members: &[Member]) -> Result<(), String>;
}

/// What leaving did.
#[derive(Debug, PartialEq)]
pub enum Left {
    /// This member was removed from the cluster.
    Removed,
    /// Nothing to remove: etcd does not answer, this member is not (or no longer) in the
    /// list, or it is the last one.
    NotAMember,
    /// The removal would leave the remaining members without a quorum that answers, or
    /// etcd refused it for as long as the leaving hook could wait: the member keeps running
    /// and the hook fails, for Juju to retry.
    Refused(String),
}

/// The member this unit is, by name or (a member added but never started) peer URL, when
/// other members remain.
pub fn removable(members: &[Member], name: &str, peer_url: &str) -> Option<u64> {
    if members.len() < 2 {
        return None;
    }
    members
        .iter()
        .find(|m| m.name == name || m.peer_urls.iter().any(|u| u == peer_url))
        .map(|m| m.id)
}

pub fn leave(cluster: &impl Cluster, name: &str, peer_url: &str) -> Left {
    let Some(members) = cluster.members() else {
        return Left::NotAMember;
    };
    let Some(me) = removable(&members, name, peer_url) else {
        return Left::NotAMember;
    };
    if let Err(e) = quorum_after(cluster, me, &members) {
        return Left::Refused(e);
    }
    cluster.hand_over(me, &members);
    match cluster.remove(me, &members) {
        Ok(()) => {
            crash_point("member-removed");
            Left::Removed
        }
        Err(e) => Left::Refused(e),
    }
}

/// Refuses to remove `me` unless the voting members that remain, those that answer now,
/// are a quorum of them. etcd's own strict reconfig check counts a peer as connected until
/// its transport notices it is gone (5 s read and write timeouts, `rafthttp`): a removal in
/// the seconds after another machine crashed is accepted there, and leaves the cluster
/// without a quorum. Each member is asked itself, so a machine that just went is seen.
fn quorum_after(cluster: &impl Cluster, me: u64, members: &[Member]) -> Result<(), String> {
    let remaining: Vec<&Member> = members
        .iter()
        .filter(|m| m.id != me && !m.is_learner)
        .collect();
    let need = remaining.len() / 2 + 1;
    let silent: Vec<String> = remaining
        .iter()
        .filter(|m| !cluster.answers(m))
        .map(|m| {
            if m.name.is_empty() {
                format!("{:x} (never started)", m.id)
            } else {
                m.name.clone()
            }
        })
        .collect();
    let answering = remaining.len() - silent.len();
    if answering >= need {
        return Ok(());
    }
    Err(format!(
        "only {answering} of the {} members that would remain answer, and they need {need} \
         for a quorum; not answering: {}",
        remaining.len(),
        silent.join(", ")
    ))
}

/// The live cluster: etcd's gateway at this member's endpoint `ep`.
pub struct Live<'a> {
    pub client: &'a Client,
    /// a client with a longer timeout for the removal (it may wait for an election)
    pub slow: &'a Client,
    pub ep: &'a str,
}

impl Cluster for Live<'_> {
    fn members(&self) -> Option<Vec<Member>> {
        self.client.member_list(self.ep).ok()
    }
    fn answers(&self, member: &Member) -> bool {
        member
            .client_url()
            .is_some_and(|url| self.client.status(&url).is_ok())
    }
    fn hand_over(&self, me: u64, members: &[Member]) {
        crate::ops::membership::apply::hand_over_logged(
            self.client,
            self.ep,
            me,
            members,
            "leaving",
        );
    }
    fn remove(&self, me: u64, members: &[Member]) -> Result<(), String> {
        let eps: Vec<String> = std::iter::once(self.ep.to_string())
            .chain(
                members
                    .iter()
                    .filter(|m| m.id != me)
                    .filter_map(Member::client_url),
            )
            .collect();
        retry(Duration::from_secs(30), Duration::from_millis(300), || {
            let mut last = None;
            for e in &eps {
                match self.slow.member_remove(e, me) {
                    Ok(()) => return Ok(()),
                    Err(err) if err.status() == Some(404) => return Ok(()),
                    Err(err) => last = Some(err),
                }
            }
            Err(last.map(|e| e.to_string()).unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// etcd as a leaving member sees it: the members, the raft leader, whether this
    /// member's etcd still answers (a removed member stops itself), and every call made.
    struct Fake {
        members: RefCell<Vec<Member>>,
        leader: RefCell<u64>,
        answers: RefCell<bool>,
        calls: RefCell<Vec<String>>,
        /// removals etcd refuses before it accepts one
        refusals: RefCell<u32>,
        /// members whose machine is down (they do not answer)
        down: RefCell<Vec<u64>>,
    }

    fn member(id: u64, name: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://10.0.0.{id}:2380")],
            client_urls: vec![format!("https://10.0.0.{id}:2379")],
            is_learner: false,
        }
    }

    impl Fake {
        fn new(names: &[&str], leader: u64) -> Fake {
            Fake {
                members: RefCell::new(
                    names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| member(i as u64 + 1, n))
                        .collect(),
                ),
                leader: RefCell::new(leader),
                answers: RefCell::new(true),
                calls: RefCell::new(vec![]),
                refusals: RefCell::new(0),
                down: RefCell::new(vec![]),
            }
        }
    }

    impl Cluster for Fake {
        fn members(&self) -> Option<Vec<Member>> {
            self.calls.borrow_mut().push("list".into());
            self.answers.borrow().then(|| self.members.borrow().clone())
        }
        fn answers(&self, member: &Member) -> bool {
            !self.down.borrow().contains(&member.id)
        }
        fn hand_over(&self, me: u64, members: &[Member]) {
            self.calls.borrow_mut().push(format!("hand-over {me}"));
            if *self.leader.borrow() == me {
                let other = members.iter().find(|m| m.id != me).unwrap().id;
                *self.leader.borrow_mut() = other;
            }
        }
        fn remove(&self, me: u64, _: &[Member]) -> Result<(), String> {
            self.calls.borrow_mut().push(format!("remove {me}"));
            if *self.refusals.borrow() > 0 {
                *self.refusals.borrow_mut() -= 1;
                return Err("etcdserver: unhealthy cluster".into());
            }
            self.members.borrow_mut().retain(|m| m.id != me);
            // A removed member's etcd stops itself.
            *self.answers.borrow_mut() = false;
            Ok(())
        }
    }

    #[test]
    fn the_raft_leader_hands_over_before_it_removes_itself() {
        let c = Fake::new(&["etcd0", "etcd1", "etcd2"], 2);
        assert_eq!(leave(&c, "etcd1", "https://10.0.0.2:2380"), Left::Removed);
        assert_eq!(*c.calls.borrow(), ["list", "hand-over 2", "remove 2"]);
        assert_ne!(*c.leader.borrow(), 2);
        let names: Vec<String> = c.members.borrow().iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, ["etcd0", "etcd2"]);
    }

    #[test]
    fn a_member_added_but_never_started_is_found_by_its_peer_url() {
        let c = Fake::new(&["etcd0", ""], 1);
        assert_eq!(leave(&c, "etcd1", "https://10.0.0.2:2380"), Left::Removed);
        assert_eq!(c.members.borrow().len(), 1);
    }

    #[test]
    fn the_last_member_and_a_stranger_are_never_removed() {
        let c = Fake::new(&["etcd0"], 1);
        assert_eq!(
            leave(&c, "etcd0", "https://10.0.0.1:2380"),
            Left::NotAMember
        );
        let c = Fake::new(&["etcd0", "etcd2"], 1);
        assert_eq!(
            leave(&c, "etcd1", "https://10.0.0.9:2380"),
            Left::NotAMember
        );
        assert!(c.calls.borrow().iter().all(|c| c == "list"));
    }

    #[test]
    fn leaving_again_after_a_kill_at_any_point_removes_nothing_more() {
        // Killed before the removal: the next run removes it; after it: nothing is left to do
        // (etcd stopped itself, or the list no longer holds it).
        let c = Fake::new(&["etcd0", "etcd1", "etcd2"], 1);
        assert_eq!(leave(&c, "etcd1", "https://10.0.0.2:2380"), Left::Removed);
        assert_eq!(
            leave(&c, "etcd1", "https://10.0.0.2:2380"),
            Left::NotAMember
        );
        *c.answers.borrow_mut() = true;
        assert_eq!(
            leave(&c, "etcd1", "https://10.0.0.2:2380"),
            Left::NotAMember
        );
        assert_eq!(c.members.borrow().len(), 2);
        let removals = c
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("remove"))
            .count();
        assert_eq!(removals, 1);
    }

    #[test]
    fn a_refused_removal_is_reported_and_the_next_run_tries_again() {
        let c = Fake::new(&["etcd0", "etcd1", "etcd2"], 1);
        *c.refusals.borrow_mut() = 1;
        assert!(matches!(
            leave(&c, "etcd2", "https://10.0.0.3:2380"),
            Left::Refused(_)
        ));
        assert_eq!(c.members.borrow().len(), 3);
        assert_eq!(leave(&c, "etcd2", "https://10.0.0.3:2380"), Left::Removed);
        assert_eq!(c.members.borrow().len(), 2);
    }

    #[test]
    fn a_removal_that_would_leave_no_quorum_of_answering_members_is_refused_before_etcd_is_asked() {
        // Three members, one machine just crashed: etcd may still count it connected.
        let c = Fake::new(&["etcd0", "etcd1", "etcd2"], 1);
        c.down.borrow_mut().push(2);
        let Left::Refused(why) = leave(&c, "etcd2", "https://10.0.0.3:2380") else {
            panic!("the removal was not refused")
        };
        assert!(
            why.contains("only 1 of the 2") && why.contains("etcd1"),
            "{why}"
        );
        assert_eq!(*c.calls.borrow(), ["list"], "etcd was asked to remove it");
        assert_eq!(c.members.borrow().len(), 3);
        // Five members, one down: four remain, three answer, a quorum of four.
        let c = Fake::new(&["etcd0", "etcd1", "etcd2", "etcd3", "etcd4"], 1);
        c.down.borrow_mut().push(2);
        assert_eq!(leave(&c, "etcd4", "https://10.0.0.5:2380"), Left::Removed);
        // Back up: the next run removes it.
        let c = Fake::new(&["etcd0", "etcd1", "etcd2"], 1);
        c.down.borrow_mut().push(1);
        assert!(matches!(
            leave(&c, "etcd2", "https://10.0.0.3:2380"),
            Left::Refused(_)
        ));
        c.down.borrow_mut().clear();
        assert_eq!(leave(&c, "etcd2", "https://10.0.0.3:2380"), Left::Removed);
    }
}
