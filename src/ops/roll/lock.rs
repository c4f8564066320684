//! The leader's rolling restart applied (`roll` decides): before each grant of an upgrade
//! turn the cluster passes the pre-upgrade check, before the first one a snapshot is kept,
//! and the raft leader's unit is told from etcd's own answer.
//!
//! Must not: restart etcd (each unit restarts itself in its turn, in the reconcile).

use crate::juju;
use crate::ops::roll::plan::Next;
use crate::unit::now;
use crate::unit::peers::Peers;
use crate::unit::peers::{Key, PeerBag};
use anyhow::Result;
use etcdkit::client::Client;
use etcdkit::install::Installed;
use std::path::Path;
use std::time::Duration;

/// What the leader's roll asks of the running cluster (only when it grants an upgrade turn).
pub(crate) struct RollCtx<'a> {
    pub(crate) pause_mode: crate::config::PauseAfter,
    pub(crate) client: &'a Client,
    pub(crate) ep: &'a str,
    /// this unit's delivery and data directory (the v2 store check before a turn into 3.6)
    pub(crate) inst: &'a Installed,
    pub(crate) data: &'a str,
}

/// The unit whose member is the raft leader. Asked for a few seconds (an election or a
/// slow answer under load passes); an error when it cannot be told, because an upgrade's
/// order (the raft leader last) depends on it.
fn raft_leader_unit(rc: &RollCtx, peers: &Peers) -> Result<String> {
    crate::unit::retry(Duration::from_secs(10), Duration::from_millis(500), || {
        let leader = rc
            .client
            .leader_member(rc.ep)?
            .ok_or_else(|| anyhow::anyhow!("the cluster has no raft leader"))?;
        peers
            .infos()
            .into_iter()
            .find(|u| u.name == leader.name)
            .map(|u| u.unit)
            .ok_or_else(|| anyhow::anyhow!("raft leader {} is no unit's member", leader.name))
    })
}

/// The leader's rolling-restart lock (`roll::decide`): one grant (`unit:hash`) at a time,
/// released when that unit reports it restarted with it (or is gone). Before an upgrade
/// turn the cluster must pass the pre-upgrade check, and before the first one a snapshot is
/// taken. Returns what the leader's status says about the roll, if anything.
pub(crate) fn manage_restart_lock(peers: &mut Peers, rc: &RollCtx) -> Option<String> {
    let mut raft_leader: Option<String> = None;
    let progress = |peers: &Peers| crate::ops::roll::plan::progress(&peers.units);
    for _ in 0..4 {
        let lock = crate::ops::roll::plan::Lock {
            grant: peers.app_get(Key::RestartGrant).map(String::from),
            upgrade_turn: peers.app_get(Key::UpgradeTurn).map(String::from),
            paused: peers.app_get(Key::UpgradePaused).map(String::from),
        };
        let leader_unit = raft_leader.clone();
        match crate::ops::roll::plan::decide(
            &peers.units,
            &lock,
            rc.pause_mode,
            leader_unit.as_deref(),
        ) {
            Next::Busy { unit } => {
                return progress(peers).map(|(t, d, n)| {
                    format!("Upgrading to etcd {t}: {d} of {n} units done, {unit} upgrading")
                })
            }
            Next::Release { pause } => release(peers, rc, &lock, pause),
            stop @ (Next::Stopped { .. } | Next::ConfigStopped { .. } | Next::Paused { .. }) => {
                return stopped(stop, peers)
            }
            Next::Grant {
                unit,
                hash,
                upgrade,
            } => {
                if upgrade && raft_leader.is_none() {
                    // The order of an upgrade puts the raft leader last: ask who it is, and
                    // grant no turn while that is unknown (a turn by unit number could
                    // stop the raft leader first).
                    match raft_leader_unit(rc, peers) {
                        Ok(u) => raft_leader = Some(u),
                        Err(e) => {
                            let target = progress(peers).map(|p| p.0).unwrap_or_default();
                            juju::log("WARNING", &format!("upgrade to {target} waits: {e:#}"));
                            return Some(format!(
                                "Upgrade to etcd {target} waits: cannot tell the raft leader ({e})"
                            ));
                        }
                    }
                    continue;
                }
                if upgrade {
                    if let Err(msg) = gate_upgrade(peers, rc, &unit) {
                        return Some(msg);
                    }
                }
                juju::log("INFO", &format!("rolling restart: {unit}'s turn"));
                peers.app_set(Key::RestartGrant, &format!("{unit}:{hash}"));
                return progress(peers).map(|(t, d, n)| {
                    format!("Upgrading to etcd {t}: {d} of {n} units done, {unit} next")
                });
            }
            Next::Idle => return None,
        }
    }
    None
}

/// The leader's turn released: the unit restarted with its grant (or is gone); after an
/// upgraded unit, the roll pauses when `pause_after_unit_upgrade` says so.
fn release(peers: &mut Peers, rc: &RollCtx, lock: &crate::ops::roll::plan::Lock, pause: bool) {
    juju::log(
            "INFO",
            &format!(
                "rolling restart: {} done (upgrade turn: {:?}; pause_after_unit_upgrade {}: {pause}; versions {:?})",
                lock.grant.as_deref().unwrap_or(""),
                lock.upgrade_turn,
                rc.pause_mode.as_str(),
                peers
                    .units
                    .iter()
                    .map(|(u, b)| format!(
                        "{u}={}/{}",
                        b.peer(Key::EtcdVersion).map(String::as_str).unwrap_or("?"),
                        b.peer(Key::WantsVersion).map(String::as_str).unwrap_or("?")
                    ))
                    .collect::<Vec<_>>()
            ),
        );
    if pause {
        let after = lock.upgrade_turn.clone().unwrap_or_default();
        juju::log(
            "INFO",
            &format!("upgrade: paused after {after} (pause_after_unit_upgrade)"),
        );
        peers.app_set(Key::UpgradePaused, &after);
    }
    peers.app_set(Key::RestartGrant, "");
    peers.app_set(Key::UpgradeTurn, "");
}

/// The checks before an upgrade turn: the cluster ready (every member started, a voter,
/// healthy, no alarm; no v2 data before 3.6) and a snapshot kept before the first turn.
/// The error is the leader's status.
fn gate_upgrade(peers: &mut Peers, rc: &RollCtx, unit: &str) -> Result<(), String> {
    let progress = crate::ops::roll::plan::progress(&peers.units);
    let target = progress.map(|p| p.0).unwrap_or_default();
    let ready = crate::ops::membership::apply::ready_for_upgrade(rc.client, rc.ep).and_then(|_| {
        match etcdkit::version::Version::parse(&target) {
            Some(t) => etcdkit::v2store::gate(t, rc.inst, Path::new(rc.data)).map(|_| ()),
            None => Ok(()),
        }
    });
    if let Err(why) = ready {
        juju::log("WARNING", &format!("upgrade to {target} waits: {why}"));
        return Err(format!("Upgrade to etcd {target} waits: {why}"));
    }
    if peers.app_get(Key::UpgradeSnapshot) != Some(target.as_str()) {
        match upgrade_snapshot(rc, &target) {
            Ok(path) => {
                juju::log(
                    "INFO",
                    &format!("upgrade to {target}: snapshot kept in {path}"),
                );
                peers.app_set(Key::UpgradeSnapshot, &target);
            }
            Err(e) => {
                juju::log("WARNING", &format!("upgrade snapshot failed: {e:#}"));
                return Err(format!(
                    "Upgrade to etcd {target} waits: the snapshot before it failed ({e})"
                ));
            }
        }
    }
    peers.app_set(Key::UpgradeTurn, unit);
    Ok(())
}

/// What the leader's status says of a roll that stopped or paused.
fn stopped(next: Next, peers: &Peers) -> Option<String> {
    let progress = |peers: &Peers| crate::ops::roll::plan::progress(&peers.units);
    match next {
        Next::Stopped { unit, version } => {
            juju::log(
                "WARNING",
                &format!(
                    "rolling restart stopped: etcd {version} failed on {unit} and was rolled back"
                ),
            );
            return None;
        }
        Next::ConfigStopped { unit } => {
            juju::log(
                "WARNING",
                &format!(
                    "rolling restart stopped: the new config failed on {unit} and was rolled back there"
                ),
            );
            return Some(format!(
                "Config change stopped: etcd on {unit} did not come up healthy with it and \
                 runs its previous config (see its status); change the config to go on"
            ));
        }
        Next::Paused { after } => {
            return Some(match progress(peers) {
                Some((t, d, n)) => format!(
                    "Upgrade to etcd {t} paused after {after} ({d} of {n} units done): run \
                     the resume-upgrade action to go on"
                ),
                None => {
                    format!("Upgrade paused after {after}: run the resume-upgrade action to go on")
                }
            })
        }
        _ => None,
    }
}

/// A snapshot of the cluster before an upgrade's first turn, kept (0600) under
/// /var/lib/etcd-charm/upgrade-snapshots, when the filesystem has room for it (it shares
/// etcd's: the database again is kept free); the newest `UPGRADE_SNAPSHOTS_KEPT` are kept,
/// older ones go once the new one is written.
fn upgrade_snapshot(rc: &RollCtx, target: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(UPGRADE_SNAPSHOTS);
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let size = rc.client.status(rc.ep)?.db_size;
    crate::unit::ensure_room(
        dir,
        size,
        Some(Path::new(rc.data)),
        "the snapshot before the upgrade",
    )?;
    let path = dir.join(format!("etcd-pre-upgrade-{target}-{}.db", now()));
    etcdkit::snapshot::save_raw(rc.client, rc.ep, &path)?;
    for old in crate::jobs::snapshots::prune_named(
        dir,
        "etcd-pre-upgrade-",
        ".db",
        UPGRADE_SNAPSHOTS_KEPT,
        &path,
    )? {
        juju::log(
            "INFO",
            &format!("pruned the older upgrade snapshot {}", old.display()),
        );
    }
    Ok(path.display().to_string())
}

/// Upgrade snapshots kept: the one before this upgrade and the one before the last.
pub const UPGRADE_SNAPSHOTS_KEPT: u32 = 2;

pub const UPGRADE_SNAPSHOTS: &str = "/var/lib/etcd-charm/upgrade-snapshots";
