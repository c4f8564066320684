//! The leader's membership work as observe → plan → apply: etcd's member list and the peer
//! relation are observed, `cluster::next_step` (pure) decides one step, and the step is
//! applied through two small backends: `Members` (etcd's membership API) and `PeerApp` (the
//! peer application databag). The live backends are etcd's gateway and the hook's `Peers`;
//! the tests below drive the same loop over an in-memory cluster and crash it at every call.
//!
//! Each step is safe to run again after a crash at any point: a learner added by a hook that
//! died before its `join` was committed is admitted again (etcd answers that the peer URL
//! exists, which counts as success), a removal of a member that is already gone succeeds, and
//! a promotion that etcd refuses (the learner has not caught up) is retried by a later hook.

use crate::ops::membership::plan::{self as cluster, Join, Step, UnitInfo};
use crate::unit::peers::Key;
use crate::unit::retry;
use anyhow::Result;
use etcdkit::client::{Client, Member};
use std::time::Duration;

/// etcd's membership API, as the Juju leader uses it.
pub trait Members {
    fn list(&self) -> Result<Vec<Member>>;
    /// Adds `peer_url` as a learner; a peer URL that is already a member is success.
    fn add_learner(&self, peer_url: &str) -> Result<()>;
    fn promote(&self, id: u64) -> Result<()>;
    /// Removes a member; one that is already gone is success.
    fn remove(&self, id: u64) -> Result<()>;
    /// The raft leader's member ID (0: none).
    fn raft_leader(&self) -> Result<u64>;
    /// The member list once `settled` holds for it, or as it stands when patience runs out
    /// (departing members remove themselves a moment after the leader's hook runs).
    fn list_when(&self, settled: &dyn Fn(&[Member]) -> bool) -> Result<Vec<Member>>;
}

/// The peer relation as the leader reads and writes it.
pub trait PeerApp {
    fn infos(&self) -> Vec<UnitInfo>;
    fn join(&self) -> Option<Join>;
    fn set_join(&mut self, join: Option<&Join>) -> Result<()>;
}

/// The live backend: etcd's gateway at this unit's endpoint. Membership changes wait out an
/// election (etcd refuses them while it re-elects), so each is retried for a while.
pub struct Live<'a> {
    pub client: &'a Client,
    pub endpoint: &'a str,
}

impl Members for Live<'_> {
    fn list(&self) -> Result<Vec<Member>> {
        Ok(self.client.member_list(self.endpoint)?)
    }
    fn add_learner(&self, peer_url: &str) -> Result<()> {
        retry(
            Duration::from_secs(20),
            Duration::from_millis(250),
            || match self.client.member_add(self.endpoint, peer_url, true) {
                Err(e) if e.message_contains("Peer URLs already exists") => Ok(()),
                other => other.map(|_| ()),
            },
        )?;
        Ok(())
    }
    fn promote(&self, id: u64) -> Result<()> {
        retry(Duration::from_secs(30), Duration::from_millis(200), || {
            self.client.member_promote(self.endpoint, id)
        })?;
        Ok(())
    }
    fn remove(&self, id: u64) -> Result<()> {
        retry(
            Duration::from_secs(20),
            Duration::from_millis(250),
            || match self.client.member_remove(self.endpoint, id) {
                Err(e) if e.status() == Some(404) => Ok(()),
                other => other,
            },
        )?;
        Ok(())
    }
    fn raft_leader(&self) -> Result<u64> {
        Ok(self.client.status(self.endpoint)?.leader)
    }
    fn list_when(&self, settled: &dyn Fn(&[Member]) -> bool) -> Result<Vec<Member>> {
        let r = retry(Duration::from_secs(20), Duration::from_millis(250), || {
            let m = self.list().map_err(|e| e.to_string())?;
            if settled(&m) {
                Ok(m)
            } else {
                Err("not settled".to_string())
            }
        });
        match r {
            Ok(m) => Ok(m),
            Err(_) => self.list(),
        }
    }
}

/// Moves raft leadership from member `me`, reached at `ep`, to another started voter when
/// `me` leads (etcd answers once the transfer is done); `moving` hears whom it goes to first.
/// Nothing to do when `me` does not lead or no other voter is started.
pub fn hand_over_leadership(
    client: &Client,
    ep: &str,
    me: u64,
    members: &[Member],
    moving: &mut dyn FnMut(&str),
) -> std::result::Result<(), String> {
    let leader = client.status(ep).map_err(|e| e.to_string())?.leader;
    if leader != me {
        return Ok(());
    }
    let Some(other) = members.iter().find(|m| m.id != me && m.is_voter()) else {
        return Ok(());
    };
    moving(&other.name);
    client.move_leader(ep, other.id).map_err(|e| e.to_string())
}

/// Moves raft leadership away from member `me` (when it holds it) before `why`.
/// Best effort: the restart or the removal that follows is safe without it, only slower.
pub fn hand_over_logged(client: &Client, ep: &str, me: u64, members: &[Member], why: &str) {
    let mut log = |to: &str| {
        crate::juju::log(
            "INFO",
            &format!("moving raft leadership to {to} before {why}"),
        )
    };
    if let Err(e) = hand_over_leadership(client, ep, me, members, &mut log) {
        crate::juju::log("WARNING", &format!("cannot move leadership: {e}"));
    }
}

/// The cluster state an upgrade step needs (the pre-upgrade check's cluster half): every
/// member started, a voter and healthy at its own endpoint, and no alarm raised. The
/// refusal names what is wrong and where.
pub fn ready_for_upgrade(
    client: &Client,
    endpoint: &str,
) -> std::result::Result<Vec<Member>, String> {
    // Alarms first: a raised one also makes its member's /health false, and the alarm is
    // what the operator has to clear.
    let alarms = client
        .alarms(endpoint)
        .map_err(|e| format!("cannot read the alarms: {e}"))?;
    if let Some(a) = alarms.first() {
        return Err(format!(
            "alarm {} is raised on member {:x}: clear it first (see the alarm's status message)",
            a.alarm, a.member_id
        ));
    }
    let members = client
        .member_list(endpoint)
        .map_err(|e| format!("cannot list the members: {e}"))?;
    for m in &members {
        if !m.started() {
            return Err(format!(
                "member {:?} {:?} has not started",
                m.name, m.peer_urls
            ));
        }
        if m.is_learner {
            return Err(format!("member {} is a learner not yet promoted", m.name));
        }
        let url = m.client_url().unwrap_or_default();
        match client.health(&url) {
            Ok(true) => {}
            Ok(false) => return Err(format!("member {} at {url} is not healthy", m.name)),
            Err(e) => return Err(format!("member {} does not answer: {e}", m.name)),
        }
    }
    Ok(members)
}

/// What the membership work ended with: etcd's member list, and why it stopped short of
/// `Done` (a unit to wait for), if it did.
#[derive(Debug)]
pub struct Outcome {
    pub members: Vec<Member>,
    pub waiting: Option<String>,
}

/// How many steps one hook takes at most (each is one membership change or less).
const MAX_STEPS: usize = 10;

/// Admits ready units one at a time, promotes started learners, clears finished joins and
/// (`heal`) removes members whose units are gone. One log line per decision.
pub fn converge(
    etcd: &dyn Members,
    peers: &mut dyn PeerApp,
    heal: bool,
    log: &mut dyn FnMut(&str, &str),
) -> Result<Outcome> {
    let mut members = etcd.list()?;
    let mut waiting = None;
    for _ in 0..MAX_STEPS {
        match cluster::next_step(&members, &peers.infos(), peers.join().as_ref()) {
            Step::Wait(why) => {
                log("INFO", &format!("membership: {why}"));
                waiting = Some(why);
                break;
            }
            Step::Done => break,
            Step::Finish { unit } => {
                log("INFO", &format!("membership: {unit} has joined"));
                peers.set_join(None)?;
            }
            Step::Promote { id, unit } => {
                log("INFO", &format!("membership: promoting {unit}"));
                if let Err(e) = etcd.promote(id) {
                    log("WARNING", &format!("cannot promote {unit} yet: {e:#}"));
                    waiting = Some(format!("promoting {unit}"));
                    break;
                }
            }
            Step::RemoveStray { id, why } => {
                log(
                    "INFO",
                    &format!("membership: removing member {id:x}: {why}"),
                );
                if let Err(e) = etcd.remove(id) {
                    log("WARNING", &format!("cannot remove member {id:x}: {e:#}"));
                    break;
                }
            }
            Step::Add(u) => {
                log(
                    "INFO",
                    &format!("membership: adding {} as a learner", u.unit),
                );
                match etcd.add_learner(&u.peer_url) {
                    Ok(()) => {
                        crate::unit::crash_point("member-added");
                        members = etcd.list()?;
                        peers.set_join(Some(&join_for(&members, &u)))?;
                        waiting = Some(format!("adding {} to the cluster", u.unit));
                    }
                    Err(e) => log("WARNING", &format!("cannot add {} yet: {e:#}", u.unit)),
                }
                break;
            }
        }
        members = etcd.list()?;
    }
    if heal {
        members = remove_strays(etcd, &*peers, &members, log)?;
    }
    Ok(Outcome { members, waiting })
}

/// The `join` the new member starts from: every member's name and peer URL, the new one's
/// under the name its unit will give it.
fn join_for(members: &[Member], u: &UnitInfo) -> Join {
    let entries: Vec<(String, String)> = members
        .iter()
        .map(|m| {
            let name = if m.peer_urls.contains(&u.peer_url) {
                u.name.clone()
            } else {
                m.name.clone()
            };
            (name, m.peer_urls.first().cloned().unwrap_or_default())
        })
        .collect();
    Join {
        unit: u.unit.clone(),
        name: u.name.clone(),
        peer_url: u.peer_url.clone(),
        initial_cluster: cluster::initial_cluster(&entries),
    }
}

/// Removes members whose units are gone, except the raft leader (a departing raft leader
/// hands leadership over and removes itself), then reports the list once they are gone.
fn remove_strays(
    etcd: &dyn Members,
    peers: &dyn PeerApp,
    members: &[Member],
    log: &mut dyn FnMut(&str, &str),
) -> Result<Vec<Member>> {
    let infos = peers.infos();
    let join = peers.join();
    let raft_leader = etcd.raft_leader().unwrap_or(0);
    for m in cluster::strays(members, &infos, join.as_ref())
        .into_iter()
        .filter(|m| m.id != raft_leader)
    {
        log(
            "INFO",
            &format!(
                "membership: removing member {} {:?}: its unit is gone",
                m.name, m.peer_urls
            ),
        );
        if let Err(e) = etcd.remove(m.id) {
            log(
                "WARNING",
                &format!("cannot remove member {}: {e:#}", m.name),
            );
        }
    }
    etcd.list_when(&|m: &[Member]| cluster::strays(m, &infos, join.as_ref()).is_empty())
}

impl PeerApp for crate::unit::peers::Peers {
    fn infos(&self) -> Vec<UnitInfo> {
        crate::unit::peers::Peers::infos(self)
    }
    fn join(&self) -> Option<Join> {
        crate::unit::peers::Peers::join(self)
    }
    fn set_join(&mut self, join: Option<&Join>) -> Result<()> {
        let v = match join {
            Some(j) => serde_json::to_string(j)?,
            None => String::new(),
        };
        self.app_set(Key::Join, &v);
        Ok(())
    }
}

pub(crate) fn publish_members(peers: &mut crate::unit::peers::Peers, members: &[Member]) {
    let mut urls: Vec<String> = members
        .iter()
        .filter(|m| m.started())
        .flat_map(|m| {
            m.client_urls
                .iter()
                .filter(|u| !u.contains("127.0.0.1"))
                .take(1)
                .cloned()
        })
        .collect();
    urls.sort();
    let entries: Vec<(String, String)> = members
        .iter()
        .filter(|m| m.started())
        .map(|m| {
            (
                m.name.clone(),
                m.peer_urls.first().cloned().unwrap_or_default(),
            )
        })
        .collect();
    peers.app_set(Key::Members, &urls.join(","));
    peers.app_set(Key::Cluster, &cluster::initial_cluster(&entries));
}

#[cfg(test)]
mod tests {
    //! The membership loop over an in-memory cluster: units that start when their join is
    //! published, a leader whose hooks die at any backend call (their relation writes
    //! discarded, as Juju does), and etcd's own rule checked on every add.
    use super::*;
    use std::cell::{Cell, RefCell};

    struct Killed;

    /// etcd's membership, in memory. `kill_at` makes the Nth call die (after its effect,
    /// for changes: the worst moment).
    #[derive(Default)]
    struct FakeEtcd {
        members: RefCell<Vec<Member>>,
        next_id: Cell<u64>,
        calls: Cell<usize>,
        kill_at: Cell<Option<usize>>,
        /// promotions etcd refuses before the learner has caught up
        refuse_promotions: Cell<usize>,
    }

    impl FakeEtcd {
        fn call(&self) {
            let n = self.calls.get() + 1;
            self.calls.set(n);
            if self.kill_at.get() == Some(n) {
                std::panic::panic_any(Killed);
            }
        }
        fn changed(&self) {
            // a change has its effect before the process dies
            if self.kill_at.get() == Some(self.calls.get() + 1) {
                self.calls.set(self.calls.get() + 1);
                std::panic::panic_any(Killed);
            }
        }
    }

    impl Members for FakeEtcd {
        fn list(&self) -> Result<Vec<Member>> {
            self.call();
            Ok(self.members.borrow().clone())
        }
        fn add_learner(&self, peer_url: &str) -> Result<()> {
            let mut ms = self.members.borrow_mut();
            if ms.iter().any(|m| m.peer_urls.iter().any(|u| u == peer_url)) {
                drop(ms);
                self.call();
                return Ok(());
            }
            // etcd's strict reconfig check: never a second member that has not started
            assert!(
                ms.iter().all(|m| m.is_voter()),
                "a second unstarted member was added: {ms:?}"
            );
            self.next_id.set(self.next_id.get() + 1);
            ms.push(Member {
                id: 0x100 + self.next_id.get(),
                peer_urls: vec![peer_url.to_string()],
                is_learner: true,
                ..Member::default()
            });
            drop(ms);
            self.changed();
            self.call();
            Ok(())
        }
        fn promote(&self, id: u64) -> Result<()> {
            if self.refuse_promotions.get() > 0 {
                self.refuse_promotions.set(self.refuse_promotions.get() - 1);
                self.call();
                anyhow::bail!(
                    "etcdserver: can only promote a learner member which is in sync with leader"
                );
            }
            for m in self.members.borrow_mut().iter_mut().filter(|m| m.id == id) {
                assert!(m.started(), "promoted a learner that has not started");
                m.is_learner = false;
            }
            self.changed();
            self.call();
            Ok(())
        }
        fn remove(&self, id: u64) -> Result<()> {
            self.members.borrow_mut().retain(|m| m.id != id);
            self.changed();
            self.call();
            Ok(())
        }
        fn raft_leader(&self) -> Result<u64> {
            self.call();
            Ok(self.members.borrow().first().map_or(0, |m| m.id))
        }
        fn list_when(&self, _settled: &dyn Fn(&[Member]) -> bool) -> Result<Vec<Member>> {
            self.list()
        }
    }

    /// The peer databags: committed, and the running hook's writes.
    #[derive(Clone, Default)]
    struct FakePeers {
        units: Vec<UnitInfo>,
        join: Option<Join>,
    }

    impl PeerApp for FakePeers {
        fn infos(&self) -> Vec<UnitInfo> {
            self.units.clone()
        }
        fn join(&self) -> Option<Join> {
            self.join.clone()
        }
        fn set_join(&mut self, join: Option<&Join>) -> Result<()> {
            self.join = join.cloned();
            Ok(())
        }
    }

    fn unit(n: u32) -> UnitInfo {
        UnitInfo {
            unit: format!("etcd/{n}"),
            name: format!("etcd{n}"),
            peer_url: format!("https://10.0.0.{n}:2380"),
            client_url: format!("https://10.0.0.{n}:2379"),
            ready: true,
            started: false,
        }
    }

    fn started(u: &UnitInfo, id: u64) -> Member {
        Member {
            id,
            name: u.name.clone(),
            peer_urls: vec![u.peer_url.clone()],
            client_urls: vec![u.client_url.clone()],
            is_learner: false,
        }
    }

    /// One leader hook: the databag writes are committed only if the hook finishes.
    fn leader_hook(etcd: &FakeEtcd, peers: &mut FakePeers, heal: bool) -> bool {
        let mut scratch = peers.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            converge(etcd, &mut scratch, heal, &mut |_, _| {}).map_err(|_| ())
        }));
        match r {
            Ok(Ok(_)) => {
                *peers = scratch;
                true
            }
            Ok(Err(())) => false,
            Err(p) if p.is::<Killed>() => false,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// The joining units' hooks: a unit whose join is published starts its learner.
    fn unit_hooks(etcd: &FakeEtcd, peers: &mut FakePeers) {
        let Some(j) = peers.join.clone() else { return };
        for m in etcd.members.borrow_mut().iter_mut() {
            if m.peer_urls.contains(&j.peer_url) && !m.started() {
                m.name = j.name.clone();
                m.client_urls = vec![j.peer_url.replace(":2380", ":2379")];
                assert!(
                    j.initial_cluster
                        .contains(&format!("{}={}", j.name, j.peer_url)),
                    "the join does not name the new member: {j:?}"
                );
            }
        }
        for u in peers.units.iter_mut() {
            if u.unit == j.unit {
                u.started = true;
            }
        }
    }

    fn cluster_of_one() -> (FakeEtcd, FakePeers) {
        let etcd = FakeEtcd::default();
        etcd.members.borrow_mut().push(started(&unit(0), 0x100));
        let mut u0 = unit(0);
        u0.started = true;
        (
            etcd,
            FakePeers {
                units: vec![u0],
                join: None,
            },
        )
    }

    fn all_voters(etcd: &FakeEtcd, peers: &FakePeers) -> bool {
        let ms = etcd.members.borrow();
        peers.join.is_none() && ms.len() == peers.units.len() && ms.iter().all(|m| m.is_voter())
    }

    #[test]
    fn four_units_join_one_at_a_time_and_the_leader_ends_with_all_voters() {
        let (etcd, mut peers) = cluster_of_one();
        peers.units.extend((1..5).map(unit));
        for _ in 0..20 {
            assert!(leader_hook(&etcd, &mut peers, false));
            unit_hooks(&etcd, &mut peers);
            if all_voters(&etcd, &peers) {
                return;
            }
        }
        panic!("not converged: {:?}", etcd.members.borrow());
    }

    #[test]
    fn a_leader_killed_at_any_call_of_a_join_still_admits_every_unit() {
        // Kill the first leader hook at its 1st, 2nd, ... call; every later hook runs to its
        // end. Whatever the moment, the joins complete and no second unstarted member is
        // ever added (the fake asserts etcd's rule on every add).
        for kill in 1..=8 {
            let (etcd, mut peers) = cluster_of_one();
            peers.units.extend([unit(1), unit(2)]);
            etcd.kill_at.set(Some(kill));
            let mut converged = false;
            for _ in 0..20 {
                let before = etcd.calls.get();
                leader_hook(&etcd, &mut peers, false);
                if etcd.calls.get() >= kill && before < kill {
                    etcd.kill_at.set(None);
                }
                unit_hooks(&etcd, &mut peers);
                if all_voters(&etcd, &peers) {
                    converged = true;
                    break;
                }
            }
            assert!(
                converged,
                "killed at call {kill}: {:?} join {:?}",
                etcd.members.borrow(),
                peers.join
            );
        }
    }

    #[test]
    fn a_promotion_etcd_refuses_is_retried_by_a_later_hook() {
        let (etcd, mut peers) = cluster_of_one();
        peers.units.push(unit(1));
        etcd.refuse_promotions.set(2);
        for _ in 0..6 {
            leader_hook(&etcd, &mut peers, false);
            unit_hooks(&etcd, &mut peers);
        }
        assert!(all_voters(&etcd, &peers), "{:?}", etcd.members.borrow());
    }

    #[test]
    fn a_unit_that_leaves_before_it_started_is_removed_and_the_next_one_joins() {
        let (etcd, mut peers) = cluster_of_one();
        peers.units.extend([unit(1), unit(2)]);
        assert!(leader_hook(&etcd, &mut peers, false));
        assert_eq!(peers.join.as_ref().map(|j| j.unit.as_str()), Some("etcd/1"));
        // etcd/1 is removed before it starts: its learner must not block etcd/2.
        peers.units.retain(|u| u.unit != "etcd/1");
        for _ in 0..10 {
            leader_hook(&etcd, &mut peers, true);
            unit_hooks(&etcd, &mut peers);
        }
        assert!(all_voters(&etcd, &peers), "{:?}", etcd.members.borrow());
        assert!(etcd
            .members
            .borrow()
            .iter()
            .all(|m| m.peer_urls[0] != unit(1).peer_url));
    }

    #[test]
    fn healing_removes_departed_members_but_never_the_raft_leader() {
        let (etcd, mut peers) = cluster_of_one();
        etcd.members.borrow_mut().push(started(&unit(1), 0x201));
        etcd.members.borrow_mut().push(started(&unit(2), 0x202));
        // etcd/0 (the raft leader here) and etcd/2 are gone from the model
        peers.units = vec![unit(1)];
        peers.units[0].started = true;
        assert!(leader_hook(&etcd, &mut peers, true));
        let ids: Vec<u64> = etcd.members.borrow().iter().map(|m| m.id).collect();
        assert_eq!(ids, [0x100, 0x201]);
        // without heal, nothing is removed
        let (etcd, mut peers) = cluster_of_one();
        etcd.members.borrow_mut().push(started(&unit(1), 0x201));
        assert!(leader_hook(&etcd, &mut peers, false));
        assert_eq!(etcd.members.borrow().len(), 2);
    }
}
