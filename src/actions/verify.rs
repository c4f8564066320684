//! `verify-backup backup-id=…`: a backup in the bucket restored into a scratch directory,
//! started there as a member of its own (TLS with the unit's certificates, on loopback ports
//! of its own, nothing of the running member touched), and compared with its record: the
//! revision it serves is at least the recorded one, and the keyspace held at the recorded
//! revision the recorded number of keys.

use crate::actions::restore::fetch;
use crate::actions::support::{local, param_str, refuse, Results};
use crate::juju;
use crate::unit;
use anyhow::{anyhow, bail, Context as _, Result};
use etcdkit::install::Installed;
use std::path::Path;
use std::time::Duration;

/// A scratch member, killed (by its PID) when dropped.
struct Scratch(std::process::Child);

impl Drop for Scratch {
    fn drop(&mut self) {
        // It may have ended by itself; the wait reaps it either way.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn verify_backup(
    params: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<Results> {
    let id = param_str(params, "backup-id", "").trim().to_string();
    if id.is_empty() {
        return refuse("name the backup to verify: backup-id=<id> (list-backups shows them)");
    }
    let inst = Installed::load().ok_or_else(|| anyhow!("etcd is not installed"))?;
    let (client, _, cfg) = local()?;
    let data = std::path::PathBuf::from(unit::data_dir(false)?);
    let scratch = hostkit::fs::fresh_scratch_dir(&data, ".verify-")?;
    let (conf, ep, rec) = prepare(&id, &inst, &cfg, scratch.path())?;
    juju::action_log(&format!(
        "starting the backup {id} as a scratch member at {ep}"
    ));
    let log = std::fs::File::create(scratch.path().join("etcd.log"))?;
    let _member = Scratch(
        std::process::Command::new(inst.etcd())
            .arg("--config-file")
            .arg(&conf)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the scratch member")?,
    );
    let revision = unit::retry(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || -> Result<u64> {
            if !client.health(&ep)? {
                bail!("not healthy yet");
            }
            Ok(client.revision(&ep)?)
        },
    )
    .map_err(|e| {
        anyhow!(
            "the backup {id} restored but its scratch member did not start ({e:#}): {}",
            tail(&scratch.path().join("etcd.log"))
        )
    })?;
    compare(&id, &rec, revision, |r| Ok(client.count_at(&ep, r)?))
}

/// The backup downloaded into `scratch`, checked, restored offline there, and the scratch
/// member's config written: its path, its client URL and the backup's record.
fn prepare(
    id: &str,
    inst: &Installed,
    cfg: &crate::config::Config,
    scratch: &Path,
) -> Result<(std::path::PathBuf, String, crate::jobs::offsite::Backup)> {
    let (archive, rec) = crate::actions::backups::download(id, scratch, cfg)?;
    let found = fetch::fetch(&archive, scratch)?;
    if found.digest_ok == Some(false) {
        return refuse(format!(
            "the backup {id} is damaged: its db's sha256 does not match its trailing digest"
        ));
    }
    let (port, peer) = (free_port()?, free_port()?);
    let peer_url = format!("https://127.0.0.1:{peer}");
    let out = scratch.join("data");
    let restore = etcdkit::offline::Restore {
        db: &found.db,
        name: "verify",
        peer_url: &peer_url,
        token: &format!("verify-{:08x}", rand::random::<u32>()),
        out: &out,
        skip_hash_check: found.digest_ok == Some(true),
    };
    match etcdkit::offline::restore(inst, &restore) {
        Err(etcdkit::offline::RestoreError::Refused(why)) => {
            return refuse(format!("the backup {id} does not restore: {why}"))
        }
        other => other?,
    }
    let settings = etcdkit::render::Settings {
        port,
        management_port: peer,
        bind_to_all_interfaces: false,
        bind_with_insecure_http: false,
        auto_compaction_retention: "0".into(),
        ..cfg.etcd_settings()
    };
    let member = etcdkit::render::Member {
        name: "verify".into(),
        address: "127.0.0.1".into(),
        data_dir: out.display().to_string(),
        initial_cluster: format!("verify={peer_url}"),
        state: etcdkit::render::ClusterState::New,
        token: restore.token.to_string(),
        pki_dir: crate::pki::PKI_DIR.into(),
        version: inst.version()?,
    };
    let (text, ep) =
        etcdkit::render::clients_on_loopback(&etcdkit::render::etcd_config(&member, &settings))
            .ok_or_else(|| anyhow!("the scratch member's config names no https client URL"))?;
    let conf = scratch.join("etcd.conf.yml");
    crate::pki::write_file(&conf, text.as_bytes(), 0o600)?;
    Ok((conf, ep, rec))
}

/// The scratch member's answers against the record.
fn compare(
    id: &str,
    rec: &crate::jobs::offsite::Backup,
    revision: u64,
    count_at: impl Fn(u64) -> Result<u64>,
) -> Result<Results> {
    let want_rev = rec.revision.unwrap_or(0);
    if revision < want_rev {
        return refuse(format!("the backup {id} serves revision {revision}, its record says {want_rev}: it is not the backup recorded"));
    }
    let keys = count_at(want_rev)?;
    if let Some(want) = rec.keys {
        if keys != want {
            return refuse(format!(
                "the backup {id} holds {keys} keys at revision {want_rev}, its record says {want}: it is not the backup recorded"
            ));
        }
    }
    Ok(vec![
        ("verify.id".into(), id.to_string()),
        ("verify.revision".into(), revision.to_string()),
        ("verify.keys".into(), keys.to_string()),
        ("verify.encrypted".into(), rec.encrypted.to_string()),
        (
            "output".into(),
            format!("backup {id} restores and starts: revision {revision}, {keys} keys at the recorded revision {want_rev}, as its record says"),
        ),
    ])
}

/// The last lines of the scratch member's log, for an error.
fn tail(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
