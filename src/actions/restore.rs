//! The restore action: rebuild the cluster from the `snapshot` resource, on the leader.
//!
//! Steps, each checking before it acts:
//! 1. `fetch`: the resource, detected as this charm's archive, the classic charm's archive
//!    (a v3 db at the root) or a raw `etcdctl snapshot save` file; unpacked defensively.
//! 2. `verify`: the snapshot's trailing sha256 (or, without one, `snapshot status`), and an
//!    offline `snapshot restore` into a staging dir. Nothing of the cluster is touched yet.
//! 3. `backup` (unless skip-backup): a snapshot of the running cluster into `target`.
//! 4. `dismantle`: the other members are removed while quorum holds (they stop by themselves).
//! 5. `swap`: stop etcd, set the current data aside, move the restored data in, start.
//! 6. `check`: healthy, at the snapshot's revision. On failure the old data goes back.
//! 7. `publish`: a new epoch and token; every other unit wipes its member data (kept aside)
//!    and joins again through the normal one-at-a-time learner path.

use crate::actions::support::{
    leader_endpoint, leader_only, local, param_bool, param_str, refuse, writable_dir, Refused,
    Results,
};
use crate::juju::{self, Context};
use crate::ops::restore::*;
use crate::unit::{self, member_name, retry, LocalState};
use anyhow::{anyhow, bail, Context as _, Result};
use etcdkit::install::{self, Installed};
use etcdkit::service::Service;
use etcdkit::snapshot::{save_raw, TrailingDigest};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, PartialEq)]
pub enum Kind {
    /// a bbolt db followed by its sha256 (etcdctl snapshot save / the gateway stream)
    WithDigest,
    /// a bare bbolt db (e.g. member/snap/db)
    Bare,
}

/// Decides what a snapshot file is by its size (etcd's own `hasChecksum` rule).
pub fn kind_of(size: u64) -> Option<Kind> {
    match size % 512 {
        32 => Some(Kind::WithDigest),
        0 if size > 0 => Some(Kind::Bare),
        _ => None,
    }
}

/// The snapshot db found in the resource.
struct Found {
    db: PathBuf,
    what: String,
    /// its trailing digest, checked as it was unpacked (None: not checked here)
    digest_ok: Option<bool>,
}

/// Finds the snapshot db in the resource: a raw file, or inside a tar.gz archive, whose
/// `db` entries are checked against their trailing digest while they are unpacked.
fn fetch(resource: &Path, staging: &Path) -> Result<Found> {
    let mut magic = [0u8; 2];
    std::fs::File::open(resource)?
        .read_exact(&mut magic)
        .map_err(|_| Refused("the snapshot resource is empty".into()))?;
    if magic != [0x1f, 0x8b] {
        return Ok(Found {
            db: resource.to_path_buf(),
            what: "a raw etcd snapshot file".into(),
            digest_ok: None,
        });
    }
    let dir = staging.join("unpacked");
    std::fs::create_dir_all(&dir)?;
    let free = nix::sys::statvfs::statvfs(&dir)
        .map(|v| v.blocks_available() * v.fragment_size())
        .with_context(|| format!("cannot tell the free space in {}", dir.display()))?;
    // The db's digest is computed on the other core while this one unpacks: a few chunks
    // in flight (memory stays bounded), the hash off the unpack's clock.
    let (chunks, hashed) = std::sync::mpsc::sync_channel::<(PathBuf, Vec<u8>)>(8);
    let hasher = std::thread::spawn(move || {
        let mut digests: std::collections::HashMap<PathBuf, TrailingDigest> = Default::default();
        for (path, chunk) in hashed {
            digests.entry(path).or_default().update(&chunk);
        }
        digests
    });
    let unpacked = install::unpack_safely_with(
        resource,
        &dir,
        // Not all of it: the live member on this filesystem keeps a margin (M5).
        install::Room::Free {
            bytes: free.saturating_sub(hostkit::fs::ROOM_MARGIN),
        },
        |path, chunk| {
            if path.file_name().is_some_and(|n| n == "db") {
                // The hasher only stops when this sender goes: it cannot refuse a chunk.
                let _ = chunks.send((path.to_path_buf(), chunk.to_vec()));
            }
        },
    );
    drop(chunks);
    let mut digests = hasher
        .join()
        .map_err(|_| anyhow!("the snapshot's digest could not be computed"))?;
    unpacked.map_err(|e| Refused(format!("the snapshot archive is refused: {e}")))?;
    let mut digest_ok = |db: &Path| {
        db.strip_prefix(&dir)
            .ok()
            .and_then(|rel| digests.remove(rel))
            .map(TrailingDigest::matches)
    };
    // A v2 data dir (the classic charm's keys-version=v2) has member/wal.
    let mut roots = vec![dir.clone()];
    for e in std::fs::read_dir(&dir)?.flatten() {
        if e.path().is_dir() {
            roots.push(e.path());
        }
    }
    if roots.iter().any(|r| r.join("member").join("wal").exists()) {
        return refuse("the archive holds a v2 data directory (member/wal); restoring v2 data is not supported: take a v3 snapshot (keys-version=v3)");
    }
    for r in &roots {
        let meta = r.join("metadata.json");
        if r.join("db").is_file() {
            let what = if meta.exists() {
                "an etcd-charm snapshot archive"
            } else {
                "a classic etcd charm snapshot archive"
            };
            let db = r.join("db");
            return Ok(Found {
                digest_ok: digest_ok(&db),
                db,
                what: what.into(),
            });
        }
    }
    for r in &roots {
        for e in std::fs::read_dir(r)?.flatten() {
            let p = e.path();
            if p.is_file()
                && kind_of(std::fs::metadata(&p)?.len()).is_some()
                && p.file_name().map(|n| n != "metadata.json").unwrap_or(false)
            {
                return Ok(Found {
                    db: p,
                    what: "a classic etcd charm snapshot archive".into(),
                    digest_ok: None,
                });
            }
        }
    }
    refuse("the snapshot archive holds no snapshot db file")
}

/// Runs the offline restore tool of the installed etcd into `out`.
fn offline_restore(
    inst: &Installed,
    db: &Path,
    kind: &Kind,
    name: &str,
    peer_url: &str,
    token: &str,
    out: &Path,
    verified: bool,
) -> Result<()> {
    let cluster = format!("{name}={peer_url}");
    let mut cmd = match inst.etcdutl() {
        Some(u) => Command::new(u),
        None => {
            let mut c = Command::new(inst.etcdctl());
            c.env("ETCDCTL_API", "3");
            c
        }
    };
    cmd.arg("snapshot")
        .arg("restore")
        .arg(db)
        .args([
            "--name",
            name,
            "--initial-cluster",
            &cluster,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster-token",
            token,
            "--data-dir",
        ])
        .arg(out);
    if *kind == Kind::Bare || verified {
        cmd.arg("--skip-hash-check");
    }
    let o = cmd
        .output()
        .context("running the offline snapshot restore")?;
    if !o.status.success() {
        // etcd's own check (e.g. "expected sha256 ..., got ...") is the last line.
        let err = String::from_utf8_lossy(&o.stderr);
        return refuse(format!(
            "the snapshot is refused: it does not restore (corrupt?): {}",
            etcdkit::last_line(&err)
        ));
    }
    Ok(())
}

/// The revision a snapshot holds (offline `snapshot status`).
fn snapshot_revision(inst: &Installed, db: &Path) -> Option<u64> {
    let mut cmd = match inst.etcdutl() {
        Some(u) => Command::new(u),
        None => {
            let mut c = Command::new(inst.etcdctl());
            c.env("ETCDCTL_API", "3");
            c
        }
    };
    let o = cmd
        .arg("snapshot")
        .arg("status")
        .arg(db)
        .args(["-w", "json"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    v.get("revision").and_then(Value::as_u64)
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
    let Some(resource) = juju::resource_get("snapshot")? else {
        return refuse(
            "no snapshot resource is attached: juju attach-resource etcd snapshot=<archive> first",
        );
    };
    let inst = Installed::load().ok_or_else(|| anyhow!("etcd is not installed"))?;
    let (client, ep, cfg) = local()?;
    let data = unit::data_dir(false)?;
    let staging = Path::new(&data).join(".restore-staging");
    sweep_trash(Path::new(&data));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let cleanup = scopeguard(staging.clone());

    // 1–2. fetch and verify, touching nothing.
    juju::action_log("verifying the snapshot");
    let Found {
        db,
        what,
        digest_ok,
    } = fetch(Path::new(&resource), &staging)?;
    juju::action_log(&format!("found {what}; restoring it offline"));
    let size = std::fs::metadata(&db)?.len();
    let kind = kind_of(size).ok_or_else(|| Refused(format!("{what} is not an etcd snapshot (size {size} is not a whole number of pages, with or without a digest): truncated?")))?;
    // A snapshot with a digest is verified before anything of the cluster is touched: as it
    // was unpacked, or else by the offline restore itself (etcd's own hash check). Never
    // both: reading the whole file twice would only double the cost.
    let verified = kind == Kind::WithDigest && digest_ok.is_some();
    if kind == Kind::WithDigest && digest_ok == Some(false) {
        return refuse(format!(
            "the snapshot is refused: {what}'s sha256 does not match its trailing digest (corrupt)"
        ));
    }
    let address = unit::peer_address()?;
    let name = member_name(&ctx.unit);
    let peer_url = unit::endpoint(&address, cfg.management_port);
    let epoch = next_epoch(ctx)?;
    let token = format!("etcd-restore-{epoch}-{:08x}", rand::random::<u32>());
    let restored = staging.join("data");
    // The offline restore writes a second full copy beside the unpacked snapshot, on the
    // filesystem etcd's running member writes to.
    if let Err(e) = unit::ensure_room(
        &staging,
        size,
        None,
        "the offline restore's copy of the snapshot",
    ) {
        return refuse(format!("{e:#}"));
    }
    offline_restore(
        &inst, &db, &kind, &name, &peer_url, &token, &restored, verified,
    )?;
    // This charm's archives say their revision; others are asked offline (a full read).
    let meta_rev = std::fs::read(db.with_file_name("metadata.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("revision").and_then(Value::as_u64));
    let want_rev = meta_rev.or_else(|| snapshot_revision(&inst, &db));
    juju::action_log(&format!(
        "{what} verified and restored offline (revision {})",
        want_rev.map(|r| r.to_string()).unwrap_or("unknown".into())
    ));

    // 3. backup of the running cluster.
    let mut results: Results = vec![];
    if let Some(dir) = target_dir {
        let path = dir.join(format!("etcd-pre-restore-{}.db", epoch));
        let (leader_ep, _) = leader_endpoint(&client, &ep)?;
        save_raw(&client, &leader_ep, &path)?;
        juju::action_log(&format!("the current data is saved in {}", path.display()));
        results.push(("backup.path".into(), path.display().to_string()));
    }

    // 4. dismantle: remove the other members while quorum holds.
    let members = client.member_list(&ep)?;
    for m in members.iter().filter(|m| !m.peer_urls.contains(&peer_url)) {
        juju::action_log(&format!("removing member {} from the old cluster", m.name));
        retry(
            Duration::from_secs(30),
            Duration::from_millis(300),
            || match client.member_remove(&ep, m.id) {
                Err(e) if e.status() == Some(404) => Ok(()),
                other => other,
            },
        )?;
    }

    // 5. swap, keeping the old data until the restored cluster is healthy. The journal is
    // written before any data moves: if this process dies anywhere until the check passes, the next hook
    // puts the old data, state and config back (`recover_interrupted`). An aside is never
    // reused or deleted before its replacement is proven: each attempt has its own.
    let svc = Service {
        etcd_binary: inst.etcd(),
    };
    let mut st = LocalState::load()?;
    let aside = Path::new(&data).join(format!(".pre-restore-{epoch}-{}", unit::now()));
    let member = Path::new(&data).join("member");
    // Stopped before the journal: a stop that fails leaves nothing to undo (the data is
    // where it was), and a crash between the two leaves a stopped member the next hook starts.
    juju::action_log("stopping etcd and setting the current data aside");
    crate::actions::support::member_going_away(
        "Restoring the cluster from the snapshot resource (restore action)",
    )?;
    svc.stop()
        .context("cannot stop etcd; nothing was moved, the member's data is where it was")?;
    Journal::new(&aside, &member, &st)?.save()?;
    std::fs::create_dir_all(&aside)?;
    if member.exists() {
        std::fs::rename(&member, aside.join("member"))?;
    }
    unit::crash_point("restore-aside");
    std::fs::rename(restored.join("member"), &member)?;
    let old_state = (
        st.initial_cluster.clone(),
        st.initial_state.clone(),
        st.token.clone(),
        st.epoch.clone(),
    );
    st.initial_cluster = Some(format!("{name}={peer_url}"));
    st.initial_state = Some("new".into());
    st.token = Some(token.clone());
    st.epoch = Some(epoch.to_string());
    st.save()?;
    // Until it is proven, the restored member serves clients on loopback only: a crash in
    // this window puts the old data back (`recover_interrupted`), which would discard any
    // write it had acknowledged; the charm's own check is the only client it has.
    let local_ep = write_unproven(&render_for(&st, &cfg, &name, &address, &data)?)?;
    juju::action_log("starting the restored member (clients on loopback until it is proven)");
    svc.start()?;
    unit::crash_point("restore-started");

    // 6. check.
    let check = retry(
        Duration::from_secs(60),
        Duration::from_millis(10),
        || -> Result<u64> {
            if !client.health(&local_ep)? {
                bail!("not healthy yet");
            }
            Ok(client.revision(&local_ep)?)
        },
    );
    let ok = match (&check, want_rev) {
        (Ok(rev), Some(want)) => *rev >= want,
        (Ok(_), None) => true,
        _ => false,
    };
    if !ok {
        juju::action_log("the restored member did not become healthy; putting the old data back");
        svc.stop()?;
        let failed = Path::new(&data).join(format!(".failed-restore-{epoch}"));
        let _ = std::fs::remove_dir_all(&failed);
        std::fs::rename(&member, &failed)?;
        if aside.join("member").exists() {
            std::fs::rename(aside.join("member"), &member)?;
        }
        remove_empty_aside(&aside);
        st.initial_cluster = old_state.0;
        st.initial_state = old_state.1;
        st.token = old_state.2;
        st.epoch = old_state.3;
        st.save()?;
        rerender(&st, &cfg, &name, &address, &data)?;
        Journal::clear()?;
        svc.start()?;
        publish_epoch(
            ctx,
            epoch,
            st.token.as_deref().unwrap_or(&token),
            &name,
            &peer_url,
        )?;
        return refuse(format!("the restored cluster did not become healthy ({check:?}); the previous data is back in place"));
    }
    juju::action_log(&format!(
        "the restored member is healthy at revision {}; it serves clients again and the old data goes",
        check.as_ref().map(|r| r.to_string()).unwrap_or_default()
    ));
    // Proven: from here nothing is undone, so it may take clients' writes.
    Journal::clear()?;
    rerender(&st, &cfg, &name, &address, &data)?;
    svc.restart()?;
    retry(Duration::from_secs(60), Duration::from_millis(50), || {
        client.health(&ep)?.then_some(()).ok_or_else(|| anyhow!("not healthy yet"))
    })
    .map_err(|e| {
        anyhow!("the restored member is proven, but does not answer at {ep} after its restart with the full config: {e}; the next hook starts it again")
    })?;
    // Half-restored members an earlier attempt set aside served clients on loopback only
    // (nothing but this charm wrote to them): copies of a snapshot, nothing of their own.
    let failed = unit::entries_named(Path::new(&data), ".failed-restore-");
    let mut going: Vec<&Path> = vec![&aside, &staging];
    going.extend(failed.iter().map(PathBuf::as_path));
    discard_later(Path::new(&data), &going);
    drop(cleanup);

    // 7. publish the new epoch: the other units rejoin one at a time.
    publish_epoch(ctx, epoch, &token, &name, &peer_url)?;
    results.push(("restore.from".into(), what));
    results.push((
        "restore.revision".into(),
        check.map(|r| r.to_string()).unwrap_or_default(),
    ));
    results.push(("restore.epoch".into(), epoch.to_string()));
    results.push((
        "output".into(),
        "restored; the other units rejoin the new cluster one at a time".into(),
    ));
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_size() {
        assert_eq!(kind_of(8192 + 32), Some(Kind::WithDigest));
        assert_eq!(kind_of(8192), Some(Kind::Bare));
        assert_eq!(kind_of(8000), None);
        assert_eq!(kind_of(0), None);
    }

    #[test]
    fn the_trailing_digest_is_checked_in_chunks_of_any_size() {
        let mut body: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&body);
        body.extend_from_slice(&digest);
        let feed = |b: &[u8], chunk: usize| {
            let mut d = TrailingDigest::default();
            for c in b.chunks(chunk) {
                d.update(c);
            }
            d.matches()
        };
        for chunk in [1, 7, 31, 32, 33, 4096, 1 << 20] {
            assert!(feed(&body, chunk), "chunks of {chunk}");
        }
        let mut flipped = body.clone();
        flipped[100] ^= 1;
        assert!(!feed(&flipped, 4096), "one flipped byte");
        assert!(!feed(&body[..body.len() - 1], 4096), "a digest cut short");
        assert!(!feed(&body[..20], 4096), "less than a digest");
    }
}
