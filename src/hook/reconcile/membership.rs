//! Phase 6, `membership`: the leader's joins, promotions and removals.

use super::state::*;
use crate::juju::Hook;
use crate::juju::{self};
use crate::ops::membership::apply::publish_members;
use crate::ops::membership::plan::{self as cluster};
use crate::unit::retry;
use crate::unit::PEER;
use etcdkit::client::{Client, EtcdError, Member, Status};
use std::time::Duration;

impl<'a> Reconcile<'a> {
    /// Phase 6: the leader converges etcd's membership on the units (`membership`); any
    /// other member reads it. Returns the members and what the leader's joins wait for.
    pub(super) fn membership(
        &mut self,
        client: &Client,
        ep: &str,
        status: &std::result::Result<Status, EtcdError>,
    ) -> (Vec<Member>, Option<String>) {
        let mut members = vec![];
        let mut membership_wait = None;
        let has_leader = status.as_ref().map(|s| s.leader != 0).unwrap_or(false);
        if !has_leader {
            // No quorum yet (a bootstrap in progress, or peers down): nothing to ask etcd.
        } else if self.leader && status.as_ref().map(|s| !s.is_learner).unwrap_or(false) {
            let heal = self.ctx.hook_is(|h| {
                matches!(h, Hook::UpdateStatus | Hook::LeaderElected)
                    || h.is_relation(PEER, crate::juju::RelationEvent::Departed)
            });
            let live = crate::ops::membership::apply::Live {
                client,
                endpoint: ep,
            };
            match crate::ops::membership::apply::converge(
                &live,
                &mut self.peers,
                heal,
                &mut |level, msg| juju::log(level, msg),
            ) {
                Ok(outcome) => {
                    publish_members(&mut self.peers, &outcome.members);
                    members = outcome.members;
                    membership_wait = outcome.waiting;
                }
                Err(e) => juju::log("WARNING", &format!("membership: {e}")),
            }
        } else if let Ok(m) = client.member_list(ep) {
            members = m;
            if self
                .ctx
                .hook_is(|h| h.is_relation(PEER, crate::juju::RelationEvent::Departed))
            {
                // The departing member leaves about now: report the membership after it.
                let infos = self.peers.infos();
                let join = self.peers.join();
                let settled = retry(Duration::from_secs(20), Duration::from_millis(250), || {
                    let m = client.member_list(ep).map_err(|e| e.to_string())?;
                    if cluster::strays(&m, &infos, join.as_ref()).is_empty() {
                        Ok(m)
                    } else {
                        Err("a departed unit is still a member".to_string())
                    }
                });
                if let Ok(m) = settled {
                    members = m;
                }
            }
        }
        (members, membership_wait)
    }
}
