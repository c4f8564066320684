//! Defragmentation without an outage (config `defrag_threshold`, and the `defrag` action's
//! `all=true`): one member at a time, the raft leader last (leadership handed to another
//! member first), each only while every member is started, healthy and free of alarms, and
//! the next only once the last one answers healthy again. A member being defragmented
//! serves nothing until it is done; the others keep quorum.

use crate::config::threshold::Threshold;
use etcdkit::client::{Client, Member};

/// The leader's automatic defragmentation (config `defrag_threshold`): the members whose
/// database files are fragmented past the threshold, one at a time, the raft leader last,
/// each behind the health and alarm gate (`one_at_a_time`); never while a roll is under way.
/// What it finds and does goes to `log` (level, line), before and after sizes included.
/// What one automatic pass came to (the charm's metrics keep it: `monitoring::cos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// no member is past the threshold
    Clean,
    /// members are past it and wait (a roll under way)
    Waiting,
    /// every member past it was defragmented
    Done,
    /// a member could not be asked or defragmented
    Failed,
}

pub fn automatic(
    th: &Threshold,
    rolling: bool,
    client: &Client,
    ep: &str,
    members: &[Member],
    raft_leader: Option<u64>,
    log: &mut dyn FnMut(&str, &str),
) -> Outcome {
    let mut over = vec![];
    for m in members.iter().filter(|m| m.is_voter()) {
        let Some(url) = m.client_url() else { continue };
        match client.status(&url) {
            Ok(s) if th.exceeded_by(&s) => {
                log(
                    "INFO",
                    &format!(
                        "member {} is fragmented: {} MiB file, {} MiB in use",
                        m.name,
                        s.db_size >> 20,
                        s.db_size_in_use >> 20
                    ),
                );
                over.push(m.clone());
            }
            Ok(_) => {}
            Err(e) => {
                log(
                    "WARNING",
                    &format!("defragmentation: member {}: {e}", m.name),
                );
                return Outcome::Failed;
            }
        }
    }
    if over.is_empty() {
        return Outcome::Clean;
    }
    if rolling {
        log("INFO", "defragmentation waits: a roll is under way");
        return Outcome::Waiting;
    }
    let slow = match crate::pki::tls_client_waiting(std::time::Duration::from_secs(300)) {
        Ok(c) => c,
        Err(e) => {
            log("WARNING", &format!("defragmentation: {e:#}"));
            return Outcome::Failed;
        }
    };
    let targets = order(over, raft_leader.unwrap_or(0));
    let (_, stopped) = one_at_a_time(&slow, ep, &targets, &mut |l| log("INFO", l));
    match stopped {
        Some(why) => {
            log("WARNING", &why);
            Outcome::Failed
        }
        None => Outcome::Done,
    }
}

/// The order members are defragmented in: by name, the raft leader last.
pub fn order(mut members: Vec<Member>, raft_leader: u64) -> Vec<Member> {
    members.sort_by(|a, b| (a.id == raft_leader, &a.name).cmp(&(b.id == raft_leader, &b.name)));
    members
}

/// What one member's defragmentation did.
#[derive(Debug)]
pub struct Done {
    pub name: String,
    pub before: u64,
    pub after: u64,
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{}: {} MiB -> {} MiB",
            self.name,
            self.before >> 20,
            self.after >> 20
        )
    }
}

/// Defragments `targets` in order, one at a time; `client` must allow a long answer (a
/// large database takes a while). Before each: every member healthy and no alarm (else it
/// stops, saying why, with what was done so far); the raft leader hands leadership over
/// first. After each: the member answers healthy again before the next begins.
pub fn one_at_a_time(
    client: &Client,
    ep: &str,
    targets: &[Member],
    log: &mut dyn FnMut(&str),
) -> (Vec<Done>, Option<String>) {
    let mut done = vec![];
    for m in targets {
        if let Err(why) = crate::ops::membership::apply::ready_for_upgrade(client, ep) {
            return (done, Some(format!("defragmentation waits: {why}")));
        }
        let Some(url) = m.client_url() else {
            return (done, Some(format!("member {} has no client URL", m.name)));
        };
        match defrag_member(client, ep, m, &url, log) {
            Ok(d) => {
                log(&format!("defragmented {d}"));
                done.push(d);
            }
            Err(e) => return (done, Some(format!("defragmenting {}: {e}", m.name))),
        }
    }
    (done, None)
}

fn defrag_member(
    client: &Client,
    ep: &str,
    m: &Member,
    url: &str,
    log: &mut dyn FnMut(&str),
) -> Result<Done, String> {
    let status = client.status(url).map_err(|e| e.to_string())?;
    let members = client.member_list(ep).map_err(|e| e.to_string())?;
    crate::ops::membership::apply::hand_over_leadership(client, url, m.id, &members, &mut |to| {
        log(&format!(
            "moving raft leadership from {} to {to} before defragmenting it",
            m.name
        ))
    })?;
    client.defrag(url).map_err(|e| e.to_string())?;
    crate::unit::retry(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || match client.health(url) {
            Ok(true) => Ok(()),
            other => Err(format!("not healthy after the defragmentation ({other:?})")),
        },
    )?;
    let after = client.status(url).map_err(|e| e.to_string())?.db_size;
    Ok(Done {
        name: m.name.clone(),
        before: status.db_size,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_a_percentage_and_a_size() {
        assert_eq!(Threshold::parse(""), Ok(None));
        assert_eq!(
            Threshold::parse("50%"),
            Ok(Some(Threshold {
                percent: 50,
                min_bytes: 100 << 20
            }))
        );
        assert_eq!(
            Threshold::parse("30%, 16MiB"),
            Ok(Some(Threshold {
                percent: 30,
                min_bytes: 16 << 20
            }))
        );
        for bad in ["50", "0%", "100%", "50%,16MB", "50%,", "half", "50%,-1MiB"] {
            assert!(Threshold::parse(bad).is_err(), "{bad}");
        }
        let t = Threshold::parse("50%,16MiB").unwrap().unwrap();
        let st = |size: u64, used: u64| etcdkit::client::Status {
            db_size: size,
            db_size_in_use: used,
            ..Default::default()
        };
        assert!(t.exceeded_by(&st(64 << 20, 8 << 20)));
        assert!(
            !t.exceeded_by(&st(64 << 20, 40 << 20)),
            "not fragmented enough"
        );
        assert!(!t.exceeded_by(&st(8 << 20, 1 << 20)), "too small to matter");
    }

    #[test]
    fn the_raft_leader_goes_last() {
        let m = |id: u64, name: &str| -> Member {
            serde_json::from_value(serde_json::json!({"ID": id.to_string(), "name": name})).unwrap()
        };
        let names: Vec<String> = order(vec![m(1, "etcd0"), m(2, "etcd1"), m(3, "etcd2")], 1)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["etcd1", "etcd2", "etcd0"]);
    }
}
