//! A member's health as its own answers say it, the unit status that says it, and the gate
//! before a member goes down on purpose (every other voter answers healthy).

use crate::unit::status::Level;
use etcdkit::client::Client;

/// What the member's own answers say of it.
#[derive(Debug, PartialEq)]
pub enum Health {
    /// healthy, a learner the leader has yet to promote
    Learner,
    Healthy,
    /// answers, but no raft leader although it had started before: a majority is missing
    NoLeader,
    /// answers and is not healthy: an alarm, or peers down (the caller asks which)
    Unhealthy,
    /// does not answer
    Silent,
}

/// `status` is None when etcd did not answer its status request.
pub fn health(
    status: Option<&etcdkit::client::Status>,
    healthy: bool,
    was_started: bool,
) -> Health {
    match (status, healthy) {
        (Some(s), true) if s.is_learner => Health::Learner,
        (Some(_), true) => Health::Healthy,
        (Some(s), false) if s.leader == 0 && was_started => Health::NoLeader,
        (Some(_), false) => Health::Unhealthy,
        (None, _) => Health::Silent,
    }
}

/// The unit status that says a member's health (`voters`: the started voting members it
/// sees); a hook adds what it alone knows (alarms, scheduled snapshots, a migration hint).
/// `gone_for_good`: fewer of the application's units are deployed than a majority of the
/// members needs, so the members that do not answer cannot all come back; only then is
/// `recover` named (while their units are deployed, their machines may return).
pub fn member_status(
    health: &Health,
    voters: usize,
    was_started: bool,
    gone_for_good: bool,
) -> (Level, String) {
    match health {
        Health::Learner => (
            Level::Waiting,
            "Joined as a learner; waiting for promotion".into(),
        ),
        Health::Healthy => (Level::Active, format!("Healthy with {voters} known peers")),
        Health::NoLeader if gone_for_good => (
            Level::Blocked,
            "No raft leader: a majority of the cluster's members do not answer; if they are \
             gone for good, run the recover action on the leader"
                .into(),
        ),
        Health::NoLeader => (
            Level::Blocked,
            "No raft leader: a majority of the cluster's members do not answer; their units \
             are still deployed, and the cluster serves again once their machines are back"
                .into(),
        ),
        Health::Unhealthy => (
            Level::Blocked,
            format!("UnHealthy with {voters} known peers"),
        ),
        // A member that restarts without a majority of its peers serves no client until they
        // answer: say what that means if they never come back.
        Health::Silent if was_started && gone_for_good => (
            Level::Waiting,
            "Waiting for etcd to start (it waits for a majority of its peers; if they are gone \
             for good, run the recover action on the leader)"
                .into(),
        ),
        Health::Silent if was_started => (
            Level::Waiting,
            "Waiting for etcd to start (it waits for a majority of its peers, whose units are \
             still deployed)"
                .into(),
        ),
        Health::Silent => (Level::Waiting, "Waiting for etcd to start".into()),
    }
}

/// Whether the members that do not answer cannot all come back: fewer units of the
/// application are deployed (`units`, this one included) than a majority of the `members`
/// etcd knows needs.
pub fn majority_gone_for_good(units: usize, members: usize) -> bool {
    members > 0 && units < members / 2 + 1
}

/// The first other voting member that does not answer healthy at its client URL (or, when
/// the member list cannot be had, this member's own name: nothing is known to be safe).
pub(crate) fn other_member_down(client: &Client, ep: &str, me: &str) -> Option<String> {
    let Ok(members) = client.member_list(ep) else {
        return Some(me.to_string());
    };
    members
        .iter()
        .filter(|m| m.name != me && m.is_voter())
        .find(|m| {
            !m.client_url()
                .is_some_and(|url| client.health(&url).unwrap_or(false))
        })
        .map(|m| m.name.clone())
}
