//! Phase 8, `commit`: the relation writes, the `db`, `prometheus` and `grafana` publications.

use super::state::*;
use crate::juju::{self};
use crate::relations::clients::peers_view;
use anyhow::Result;

impl<'a> Reconcile<'a> {
    /// Phase 8: the relation writes of this pass, whatever it decided, and what the `db`,
    /// `prometheus` and `grafana` relations are told.
    pub(super) fn commit(&mut self) -> Result<()> {
        juju::relation_set(&self.peers.rel, &self.my_writes, false)?;
        if self.leader {
            juju::relation_set(&self.peers.rel, &self.peers.app_writes, true)?;
        }
        let view = peers_view(&self.peers);
        crate::relations::clients::publish(&self.ctx.unit, &view, &self.inst.version)?;
        if self.leader {
            crate::relations::clients::publish_prometheus(&self.ctx.app, &view)?;
            let grafana_hook = self.ctx.hook_is(|h| h.of_relation("grafana"));
            crate::relations::clients::publish_grafana(&self.ctx.unit, grafana_hook)?;
        }
        Ok(())
    }
}
