//! The restore action: rebuild the cluster from the `snapshot` resource, on the leader.
//!
//! Steps, each checking before it acts:
//! 1. `fetch`: the resource, detected as this charm's archive, the classic charm's archive
//!    (a v3 db at the root) or a raw `etcdctl snapshot save` file; unpacked defensively.
//! 2. `verify`: the snapshot's trailing sha256 (or, without one, `snapshot status`), and an
//!    offline `snapshot restore` into a staging dir. Nothing of the cluster is touched yet.
//! 3. `backup` (unless skip-backup): a snapshot of the running cluster into `target`.
//! 4. `dismantle`: the other members are removed while quorum holds (they stop by themselves).
//! 5. `swap`: stop etcd, set the current data aside, move the restored data in, start; each
//!    change recorded first in the unit's transaction (`ops::txn`).
//! 6. `check`: healthy, at the snapshot's revision. On failure the transaction is undone
//!    (the same undo the next hook runs after a kill).
//! 7. `publish`: a new epoch and token; every other unit wipes its member data (kept aside)
//!    and joins again through the normal one-at-a-time learner path.

pub(crate) mod fetch;

pub use fetch::{kind_of, Kind};

use crate::actions::support::{
    leader_endpoint, leader_only, local, param_bool, param_str, refuse, writable_dir, Refused,
    Results,
};
use crate::config::Config;
use crate::juju::{self, Context};
use crate::ops::restore::*;
use crate::ops::txn::{Cluster, Op, Txn};
use crate::unit::{self, member_name, retry, LocalState};
use anyhow::{anyhow, bail, Context as _, Result};
use etcdkit::client::Client;
use etcdkit::install::Installed;
use etcdkit::service::Service;
use etcdkit::snapshot::save_raw;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the restore works with, gathered before anything is touched.
struct Restore {
    client: Client,
    /// this unit's client endpoint
    ep: String,
    cfg: Config,
    inst: Installed,
    data: PathBuf,
    /// where the snapshot is unpacked and restored offline (gone when this is dropped)
    staging: tempfile::TempDir,
    address: String,
    name: String,
    peer_url: String,
    epoch: u64,
    token: String,
}

/// The snapshot, verified and restored offline into the staging dir.
struct Verified {
    what: String,
    /// the revision the snapshot holds, when it says
    revision: Option<u64>,
    /// the member the offline restore made
    restored: PathBuf,
}

pub fn restore(
    ctx: &Context,
    params: &std::collections::BTreeMap<String, Value>,
) -> Result<Results> {
    leader_only(ctx, "restore")?;
    let skip_backup = param_bool(params, "skip-backup", true);
    let target = param_str(params, "target", "/home/ubuntu").to_string();
    let target_dir = if skip_backup {
        None
    } else {
        Some(writable_dir(&target, "target")?)
    };
    let backup_id = param_str(params, "backup-id", "").trim().to_string();
    let resource = if backup_id.is_empty() {
        match juju::resource_get("snapshot")? {
            Some(r) => Some(r),
            None => return refuse(
                "no snapshot resource is attached: juju attach-resource etcd snapshot=<archive> first, or name a backup in the bucket with backup-id",
            ),
        }
    } else {
        None
    };
    let r = Restore::new(ctx)?;
    sweep_trash(&r.data);

    // A backup in the bucket is downloaded into the staging dir, checked against its
    // record; from there on it is restored as a resource would be.
    let source = match resource {
        Some(res) => PathBuf::from(res),
        None => crate::actions::backups::download(&backup_id, r.staging.path(), &r.cfg)?.0,
    };
    let verified = r.verify(&source)?;
    let mut results = r.backup(target_dir.as_deref())?;
    r.dismantle()?;
    let (txn, aside, local_ep) = r.swap(&verified)?;
    let revision = match r.check(&local_ep, verified.revision) {
        Ok(rev) => rev,
        Err(e) => return r.undo(ctx, txn, e),
    };
    r.prove(txn, revision)?;
    // Half-restored members an earlier attempt set aside served clients on loopback only
    // (nothing but this charm wrote to them): copies of a snapshot, nothing of their own.
    let failed = unit::entries_named(&r.data, ".failed-restore-");
    let mut going: Vec<&Path> = vec![&aside, r.staging.path()];
    going.extend(failed.iter().map(PathBuf::as_path));
    discard_later(&r.data, &going);

    // 7. publish the new epoch: the other units rejoin one at a time.
    publish_epoch(ctx, r.epoch, &r.token, &r.name, &r.peer_url)?;
    results.extend([
        ("restore.from".into(), verified.what),
        ("restore.revision".into(), revision.to_string()),
        ("restore.epoch".into(), r.epoch.to_string()),
        (
            "output".into(),
            "restored; the other units rejoin the new cluster one at a time".into(),
        ),
    ]);
    Ok(results)
}

impl Restore {
    fn new(ctx: &Context) -> Result<Restore> {
        let inst = Installed::load().ok_or_else(|| anyhow!("etcd is not installed"))?;
        let (client, ep, cfg) = local()?;
        let data = PathBuf::from(unit::data_dir(false)?);
        let address = unit::peer_address()?;
        let peer_url = unit::endpoint(&address, cfg.management_port);
        let epoch = next_epoch(ctx)?;
        // Where the snapshot is unpacked and restored offline; a staging dir an earlier
        // restore left (killed) holds copies of a snapshot only and goes.
        let staging = hostkit::fs::fresh_scratch_dir(&data, ".restore-staging-")?;
        Ok(Restore {
            staging,
            name: member_name(&ctx.unit),
            token: format!("etcd-restore-{epoch}-{:08x}", rand::random::<u32>()),
            client,
            ep,
            cfg,
            inst,
            data,
            address,
            peer_url,
            epoch,
        })
    }

    /// 1–2. fetch and verify, touching nothing.
    fn verify(&self, resource: &Path) -> Result<Verified> {
        juju::action_log("verifying the snapshot");
        let fetch::Found {
            db,
            what,
            digest_ok,
        } = fetch::fetch(resource, self.staging.path())?;
        juju::action_log(&format!("found {what}; restoring it offline"));
        let size = std::fs::metadata(&db)?.len();
        let kind = kind_of(size).ok_or_else(|| Refused(format!("{what} is not an etcd snapshot (size {size} is not a whole number of pages, with or without a digest): truncated?")))?;
        // A snapshot with a digest is verified before anything of the cluster is touched: as
        // it was unpacked, or else by the offline restore itself (etcd's own hash check).
        // Never both: reading the whole file twice would only double the cost.
        let verified = kind == Kind::WithDigest && digest_ok.is_some();
        if kind == Kind::WithDigest && digest_ok == Some(false) {
            return refuse(format!(
                "the snapshot is refused: {what}'s sha256 does not match its trailing digest (corrupt)"
            ));
        }
        let restored = self.staging.path().join("data");
        // The offline restore writes a second full copy beside the unpacked snapshot, on the
        // filesystem etcd's running member writes to.
        if let Err(e) = unit::ensure_room(
            self.staging.path(),
            size,
            None,
            "the offline restore's copy of the snapshot",
        ) {
            return refuse(format!("{e:#}"));
        }
        let offline = etcdkit::offline::Restore {
            db: &db,
            name: &self.name,
            peer_url: &self.peer_url,
            token: &self.token,
            out: &restored,
            skip_hash_check: kind == Kind::Bare || verified,
        };
        match etcdkit::offline::restore(&self.inst, &offline) {
            Err(etcdkit::offline::RestoreError::Refused(why)) => {
                return refuse(format!(
                    "the snapshot is refused: it does not restore (corrupt?): {why}"
                ))
            }
            other => other?,
        }
        // This charm's archives say their revision; others are asked offline (a full read).
        let revision = std::fs::read(db.with_file_name("metadata.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("revision").and_then(Value::as_u64))
            .or_else(|| etcdkit::offline::revision(&self.inst, &db));
        juju::action_log(&format!(
            "{what} verified and restored offline (revision {})",
            revision.map_or("unknown".into(), |r| r.to_string())
        ));
        Ok(Verified {
            what,
            revision,
            restored,
        })
    }

    /// 3. a snapshot of the running cluster, when asked for.
    fn backup(&self, target_dir: Option<&Path>) -> Result<Results> {
        let Some(dir) = target_dir else {
            return Ok(vec![]);
        };
        let path = dir.join(format!("etcd-pre-restore-{}.db", self.epoch));
        let (leader_ep, _) = leader_endpoint(&self.client, &self.ep)?;
        save_raw(&self.client, &leader_ep, &path)?;
        juju::action_log(&format!("the current data is saved in {}", path.display()));
        Ok(vec![("backup.path".into(), path.display().to_string())])
    }

    /// 4. the other members are removed while quorum holds.
    fn dismantle(&self) -> Result<()> {
        let members = self.client.member_list(&self.ep)?;
        for m in members
            .iter()
            .filter(|m| !m.peer_urls.contains(&self.peer_url))
        {
            juju::action_log(&format!("removing member {} from the old cluster", m.name));
            retry(
                Duration::from_secs(30),
                Duration::from_millis(300),
                || match self.client.member_remove(&self.ep, m.id) {
                    Err(e) if e.status() == Some(404) => Ok(()),
                    other => other,
                },
            )?;
        }
        Ok(())
    }

    /// 5. the swap, every change recorded first: if this process dies anywhere until the
    /// check passes, the next hook undoes it (the old data, state and config back). An
    /// aside is never reused or deleted before its replacement is proven: each attempt
    /// has its own. Returns the transaction, the aside dir and where the unproven member
    /// answers.
    fn swap(&self, v: &Verified) -> Result<(Txn, PathBuf, String)> {
        let svc = Service {
            etcd_binary: self.inst.etcd(),
        };
        let aside = self
            .data
            .join(format!(".pre-restore-{}-{}", self.epoch, unit::now()));
        let member = self.data.join("member");
        let mut txn = Txn::begin(Op::Restore)?;
        // Stopped before anything is recorded: a stop that fails leaves nothing to undo (the
        // data is where it was), and a crash after it leaves a stopped member the next hook
        // starts.
        juju::action_log("stopping etcd and setting the current data aside");
        crate::actions::support::member_going_away(
            "Restoring the cluster from the snapshot resource (restore action)",
        )?;
        svc.stop()
            .context("cannot stop etcd; nothing was moved, the member's data is where it was")?;
        txn.make_dir(&aside)?;
        if member.exists() {
            txn.move_aside(&member, &aside.join("member"), ".failed-restore")?;
        }
        unit::crash_point("restore-aside");
        std::fs::rename(v.restored.join("member"), &member)?;
        let mut st = LocalState::load()?;
        let cluster = Cluster {
            initial_cluster: Some(format!("{}={}", self.name, self.peer_url)),
            initial_state: Some("new".into()),
            token: Some(self.token.clone()),
            epoch: Some(self.epoch.to_string()),
        };
        txn.set_cluster(&mut st, cluster)?;
        // Until it is proven, the restored member serves clients on loopback only: a crash
        // in this window undoes the swap, which would discard any write it had
        // acknowledged; the charm's own check is the only client it has.
        let rendered = render_for(&st, &self.cfg, &self.name, &self.address, &self.data_str())?;
        let local_ep = write_unproven(&mut txn, &rendered)?;
        juju::action_log("starting the restored member (clients on loopback until it is proven)");
        svc.start()?;
        unit::crash_point("restore-started");
        Ok((txn, aside, local_ep))
    }

    /// 6. healthy, at the snapshot's revision (when it says one).
    fn check(&self, local_ep: &str, want: Option<u64>) -> Result<u64> {
        let rev = retry(
            Duration::from_secs(60),
            Duration::from_millis(10),
            || -> Result<u64> {
                if !self.client.health(local_ep)? {
                    bail!("not healthy yet");
                }
                Ok(self.client.revision(local_ep)?)
            },
        )?;
        match want {
            Some(want) if rev < want => {
                bail!("it is at revision {rev}, the snapshot at {want}")
            }
            _ => Ok(rev),
        }
    }

    /// The restored member failed its check: the swap is undone. The other members were
    /// removed from the old cluster too, so an epoch is published all the same: they
    /// rejoin the old data.
    fn undo(&self, ctx: &Context, txn: Txn, why: anyhow::Error) -> Result<Results> {
        juju::action_log("the restored member did not become healthy; putting the old data back");
        txn.undo()?;
        let st = LocalState::load()?;
        publish_epoch(
            ctx,
            self.epoch,
            st.token.as_deref().unwrap_or(&self.token),
            &self.name,
            &self.peer_url,
        )?;
        refuse(format!(
            "the restored cluster did not become healthy ({why:#}); the previous data is back in place"
        ))
    }

    /// Proven: committed (from here nothing is undone), so it may take clients' writes on
    /// its full config.
    fn prove(&self, txn: Txn, revision: u64) -> Result<()> {
        juju::action_log(&format!(
            "the restored member is healthy at revision {revision}; it serves clients again and the old data goes"
        ));
        txn.commit()?;
        let st = LocalState::load()?;
        rerender(&st, &self.cfg, &self.name, &self.address, &self.data_str())?;
        Service {
            etcd_binary: self.inst.etcd(),
        }
        .restart()?;
        retry(Duration::from_secs(60), Duration::from_millis(50), || {
            self.client
                .health(&self.ep)?
                .then_some(())
                .ok_or_else(|| anyhow!("not healthy yet"))
        })
        .map_err(|e| {
            anyhow!("the restored member is proven, but does not answer at {} after its restart with the full config: {e}; the next hook starts it again", self.ep)
        })
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }
}
