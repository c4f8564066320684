//! What a member that leaves (or a removed unit's leftovers found on a reused machine) stops
//! on the machine: etcd, stopped and disabled so a reboot does not bring it back, the
//! unit's scheduled snapshots (the leader names another unit) and its Nagios checks.

use crate::juju;
use anyhow::Result;
use etcdkit::install::Installed;
use etcdkit::service::Service;

/// The etcd service as installed on this machine.
pub fn service() -> Service {
    Service {
        etcd_binary: Installed::load()
            .as_ref()
            .map(|i| i.etcd())
            .unwrap_or_default(),
    }
}

/// Stops and disables `svc`, then removes the snapshot timer and the Nagios checks (their
/// failures are logged, `whose` naming them: the member is down either way).
pub fn stand_down(svc: &Service, whose: &str) -> Result<()> {
    svc.stop_and_disable()?;
    if let Err(e) = crate::jobs::snapshots::remove() {
        juju::log("WARNING", &format!("{whose}scheduled snapshots: {e}"));
    }
    if let Err(e) = crate::monitoring::nrpe::tear_down() {
        juju::log("WARNING", &format!("{whose}Nagios checks: {e:#}"));
    }
    Ok(())
}
