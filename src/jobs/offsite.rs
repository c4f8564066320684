//! Off-machine backups: snapshot archives copied to the bucket `s3-credentials` shares.
//!
//! A backup in the bucket is two objects under the provider's path: `<id>.tar.gz` (the
//! archive the `snapshot` action and the scheduled snapshots write, uploaded in parts as it is
//! read from disk: no second local copy, memory bounded by one part) and `<id>.json`, its
//! record (size, sha256, revision, cluster, etcd version, time). The record is written last,
//! only once the archive was read back whole and its size and sha256 matched: an object
//! without a record is not a backup (an upload cut short leaves not even the object, S3's
//! multipart upload being all or nothing). Retention counts this cluster's backups only, and
//! removes a record before its archive: what is listed is always whole.
//!
//! The unit that takes the scheduled snapshots keeps the bucket's settings in a private file
//! (the timer's job runs outside any hook, where relation data cannot be read): written by
//! its hooks from the relation, removed when the relation or the duty goes.

use crate::relations::s3::Shared;
use crate::unit::{read_json, remove_if_present, write_json};
use anyhow::{anyhow, bail, Context as _, Result};
use s3kit::{Store, Target};
use serde::{Deserialize, Serialize};
use std::path::Path;

const PLAN: &str = "/var/lib/etcd-charm/offsite-plan.json";
const RECORD: &str = "/var/lib/etcd-charm/offsite-record.json";
/// The largest record read back from the bucket.
const RECORD_LIMIT: u64 = 64 << 10;
pub const RECORD_FORMAT: &str = "etcd-charm-backup/1";

/// The bucket's settings as the timer's job needs them (0600: it holds the credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub target: Target,
    /// how many of this cluster's backups the bucket keeps
    pub retention: u32,
    /// the providing application, for status
    pub provider: String,
    /// this unit (the job runs outside any hook, where Juju does not say it)
    pub unit: String,
    /// the age recipients the uploads are encrypted to (empty: not encrypted)
    #[serde(default)]
    pub recipients: Vec<String>,
}

impl Plan {
    pub fn store(&self) -> Result<Store> {
        Ok(Store::new(&self.target)?)
    }
}

/// A backup's record in the bucket (`<id>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub format: String,
    pub id: String,
    /// the archive's object name (relative to the provider's path)
    pub object: String,
    pub size: u64,
    /// of the object as stored
    pub sha256: String,
    pub encrypted: bool,
    /// of the archive before encryption (the same as `sha256` when not encrypted)
    #[serde(default)]
    pub archive_sha256: Option<String>,
    pub revision: Option<u64>,
    /// how many keys the keyspace held at `revision`
    #[serde(default)]
    pub keys: Option<u64>,
    pub cluster_id: Option<String>,
    pub etcd_version: Option<String>,
    pub member_count: Option<u64>,
    /// RFC 3339, when the snapshot was taken
    pub time: Option<String>,
    /// the unit that uploaded it
    pub unit: String,
}

/// What the job last did with the bucket (the hooks turn it into status).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub last_ok: Option<i64>,
    pub last_id: Option<String>,
    pub last_attempt: Option<i64>,
    pub last_error: Option<String>,
    /// `unreachable`, `untrusted`, `denied`, `no-bucket`, …
    pub last_error_kind: Option<String>,
    /// how many uploads were read back and recorded
    #[serde(default)]
    pub uploaded: u64,
}

/// What the unit that takes the scheduled snapshots says of their copies in the bucket
/// (published with the snapshots' summary; the leader's application status is made of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offsite {
    pub provider: String,
    pub last_ok: Option<i64>,
    /// why the last upload failed, when it did
    pub failed: Option<String>,
    /// why the relation's data is refused, when it is (nothing is uploaded then)
    pub refused: Option<String>,
}

impl Offsite {
    /// Status text, and whether it is a warning: the last good upload's age; overdue when
    /// older than two periods of the schedule (or none in two periods since `since`).
    pub fn note(&self, since: i64, period: u64, now: i64) -> (bool, String) {
        use crate::config::schedule::human;
        if let Some(why) = &self.refused {
            return (true, format!("WARNING: no off-machine backups: {why}"));
        }
        let (since_good, overdue) =
            crate::config::schedule::staleness(self.last_ok, since, period, now);
        let why = self
            .failed
            .as_ref()
            .map(|e| format!(" (last upload failed: {e})"))
            .unwrap_or_default();
        let via = format!(
            "{} {}",
            super::super::relations::s3::ENDPOINT,
            self.provider
        );
        let text = match (self.last_ok, overdue) {
            (Some(ok), false) => format!(
                "last off-machine backup {} ago ({via}){why}",
                human((now - ok).max(0) as u64)
            ),
            (None, false) => format!(
                "first off-machine backup due within {} ({via}){why}",
                human(period)
            ),
            (Some(ok), true) => format!(
                "WARNING: the last off-machine backup is {} old ({via}){why}",
                human((now - ok).max(0) as u64)
            ),
            (None, true) => format!(
                "WARNING: no off-machine backup in {} ({via}){why}",
                human(since_good.max(0) as u64)
            ),
        };
        (overdue, text)
    }
}

/// The hooks' part on the unit that takes the scheduled snapshots (the others keep no plan):
/// the bucket's settings kept from the relation, and how the uploads go.
pub fn reconcile(
    retention: u32,
    unit: &str,
    recipients: &[String],
) -> Result<Option<Offsite>, String> {
    let shared = crate::relations::s3::read().map_err(|e| format!("{e:#}"))?;
    let (shared, refused) = match shared {
        Ok(s) => (s, None),
        Err(why) => (None, Some(why)),
    };
    keep_plan(shared.as_ref(), retention, unit, recipients).map_err(|e| format!("{e:#}"))?;
    let provider = match (&shared, &refused) {
        (Some(s), _) => s.provider.clone(),
        (None, Some(_)) => String::new(),
        (None, None) => return Ok(None),
    };
    let rec = load_record().map_err(|e| format!("{e:#}"))?;
    Ok(Some(Offsite {
        provider,
        last_ok: rec.last_ok,
        failed: last_failure(&rec.last_error, rec.last_attempt, rec.last_ok),
        refused,
    }))
}

/// The last attempt's error, when that attempt came after the last success.
pub fn last_failure(
    error: &Option<String>,
    attempt: Option<i64>,
    ok: Option<i64>,
) -> Option<String> {
    match (error, attempt, ok) {
        (Some(e), Some(at), ok) if ok.is_none_or(|ok| at > ok) => Some(e.clone()),
        _ => None,
    }
}

pub fn load_plan() -> Result<Option<Plan>> {
    read_json(PLAN)
}

pub fn load_record() -> Result<Record> {
    Ok(read_json(RECORD)?.unwrap_or_default())
}

/// The hooks' part on the unit that takes the scheduled snapshots: the plan follows the
/// relation (written when it changed, removed when there is no bucket to send to).
pub fn keep_plan(
    shared: Option<&Shared>,
    retention: u32,
    unit: &str,
    recipients: &[String],
) -> Result<Option<Plan>> {
    let Some(s) = shared else {
        remove_if_present(Path::new(PLAN))?;
        return Ok(None);
    };
    let plan = Plan {
        target: s.target.clone(),
        retention,
        provider: s.provider.clone(),
        unit: unit.to_string(),
        recipients: recipients.to_vec(),
    };
    if load_plan()?.as_ref() != Some(&plan) {
        write_json(PLAN, &plan)?;
    }
    Ok(Some(plan))
}

/// This unit sends nothing to the bucket (any more): the plan goes, the record stays.
pub fn drop_plan() -> Result<()> {
    remove_if_present(Path::new(PLAN))
}

/// The backup's id: the archive's name without `.tar.gz`.
pub fn id_of(archive: &Path) -> Result<String> {
    archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} is not a snapshot archive's name", archive.display()))
}

/// Uploads the archive (encrypted to `recipients` as it is read, when there are any) and
/// its record: refused when a backup of that id is already there (nothing is overwritten);
/// the record is written only once the object read back whole.
pub fn upload(
    store: &Store,
    archive: &Path,
    meta: &serde_json::Value,
    unit: &str,
    recipients: &[String],
) -> Result<Backup> {
    let id = id_of(archive)?;
    let encrypted = !recipients.is_empty();
    let object = if encrypted {
        format!("{id}.tar.gz.age")
    } else {
        format!("{id}.tar.gz")
    };
    // The bucket listed first: a missing bucket is told from refused credentials (servers
    // may answer an upload into a missing bucket with access denied).
    store.check()?;
    if store.size_of(&format!("{id}.json"))?.is_some() {
        bail!("a backup {id} is already in the bucket: not overwritten");
    }
    let f =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut plain = hostkit::fs::Sha256Reader::new(f);
    let sent = if encrypted {
        store.upload(
            &object,
            &mut super::sealed::Sealing::new(&mut plain, recipients)?,
        )?
    } else {
        store.upload(&object, &mut plain)?
    };
    let archive_sha256 = plain.hex();
    let back = store.download(&object, &mut std::io::sink())?;
    if back != sent {
        bail!(
            "the uploaded {object} reads back as {} bytes, sha256 {} (sent {} bytes, sha256 {}): not recorded as a backup",
            back.size, back.sha256, sent.size, sent.sha256
        );
    }
    let s = |k: &str| meta.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let backup = Backup {
        format: RECORD_FORMAT.into(),
        id: id.clone(),
        object,
        size: sent.size,
        sha256: sent.sha256,
        encrypted,
        archive_sha256: Some(archive_sha256),
        revision: meta.get("revision").and_then(|v| v.as_u64()),
        keys: meta.get("keys").and_then(|v| v.as_u64()),
        cluster_id: s("cluster-id"),
        etcd_version: s("etcd-version"),
        member_count: meta.get("member-count").and_then(|v| v.as_u64()),
        time: s("time"),
        unit: unit.to_string(),
    };
    store.put_small(&format!("{id}.json"), &serde_json::to_vec_pretty(&backup)?)?;
    Ok(backup)
}

/// The backups in the bucket (those with a readable record), oldest first, and what could
/// not be read (named, never taken for absent).
pub fn list(store: &Store) -> Result<(Vec<Backup>, Vec<String>)> {
    let mut found = vec![];
    let mut unreadable = vec![];
    for obj in store.list("etcd-snapshot-")? {
        let Some(id) = obj.name.strip_suffix(".json") else {
            continue;
        };
        if id.contains('/') {
            continue;
        }
        match record(store, id) {
            Ok(Some(b)) => found.push(b),
            Ok(None) => {}
            Err(e) => unreadable.push(format!("{}: {e:#}", obj.name)),
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((found, unreadable))
}

/// One backup's record; None when there is none of that id.
pub fn record(store: &Store, id: &str) -> Result<Option<Backup>> {
    let Some(bytes) = store.get_small(&format!("{id}.json"), RECORD_LIMIT)? else {
        return Ok(None);
    };
    let b: Backup = serde_json::from_slice(&bytes)
        .with_context(|| format!("the record {id}.json does not parse"))?;
    if b.format != RECORD_FORMAT || b.id != id || b.object.contains('/') {
        bail!(
            "the record {id}.json is not this charm's ({}, id {})",
            b.format,
            b.id
        );
    }
    Ok(Some(b))
}

/// Removes this cluster's oldest backups beyond `keep` (never `newest`), each record before
/// its archive. Returns the ids removed.
pub fn prune(
    store: &Store,
    keep: u32,
    cluster_id: Option<&str>,
    newest: &str,
) -> Result<Vec<String>> {
    let (backups, _) = list(store)?;
    let ours: Vec<&Backup> = backups
        .iter()
        .filter(|b| b.cluster_id.as_deref() == cluster_id)
        .collect();
    let excess = ours.len().saturating_sub(keep.max(1) as usize);
    let mut gone = vec![];
    for b in ours.into_iter().take(excess) {
        if b.id == newest {
            continue;
        }
        store.delete(&format!("{}.json", b.id))?;
        store.delete(&b.object)?;
        gone.push(b.id.clone());
    }
    Ok(gone)
}

/// Streams a backup's archive into `out`, checked against its record (size and sha256) as it
/// arrives; a mismatch is an error (the caller discards what was written).
pub fn fetch(store: &Store, id: &str, out: &mut dyn std::io::Write) -> Result<Backup> {
    let b = record(store, id)?.ok_or_else(|| {
        anyhow!("there is no backup {id} in the bucket (list-backups shows them)")
    })?;
    let got = store.download(&b.object, out)?;
    if got.size != b.size || got.sha256 != b.sha256 {
        bail!(
            "the backup {id} is damaged in the bucket: {} bytes with sha256 {} where its record says {} bytes, sha256 {}",
            got.size, got.sha256, b.size, b.sha256
        );
    }
    Ok(b)
}

/// The timer's job, after a local snapshot was written: its upload (two tries, the second
/// after a pause), the record kept, the bucket pruned. An upload that fails leaves the
/// local archive as the only copy: nothing waits on disk for a later upload.
pub fn after_snapshot(archive: &Path, meta: &serde_json::Value) -> Result<()> {
    let Some(plan) = load_plan()? else {
        return Ok(());
    };
    let mut rec = load_record()?;
    rec.last_attempt = Some(crate::unit::now() as i64);
    let store = plan.store()?;
    let attempt = || upload(&store, archive, meta, &plan.unit, &plan.recipients);
    let result = attempt().or_else(|e| {
        if transient(&e) {
            std::thread::sleep(std::time::Duration::from_secs(15));
            attempt()
        } else {
            Err(e)
        }
    });
    match &result {
        Ok(b) => {
            rec.last_ok = rec.last_attempt;
            rec.last_id = Some(b.id.clone());
            rec.last_error = None;
            rec.last_error_kind = None;
            rec.uploaded += 1;
        }
        Err(e) => {
            rec.last_error = Some(format!("{e:#}"));
            rec.last_error_kind = Some(kind(e).into());
        }
    }
    crate::unit::write_json(RECORD, &rec)?;
    let b = result?;
    println!(
        "backup {} uploaded to {} ({} bytes, sha256 {})",
        b.id, plan.target.bucket, b.size, b.sha256
    );
    for id in prune(&store, plan.retention, b.cluster_id.as_deref(), &b.id)? {
        println!(
            "removed the backup {id} from the bucket (s3_retention {})",
            plan.retention
        );
    }
    Ok(())
}

fn s3_error(e: &anyhow::Error) -> Option<&s3kit::Error> {
    e.chain().find_map(|c| c.downcast_ref::<s3kit::Error>())
}

fn transient(e: &anyhow::Error) -> bool {
    s3_error(e).is_some_and(s3kit::Error::transient)
}

fn kind(e: &anyhow::Error) -> &'static str {
    s3_error(e).map_or("other", s3kit::Error::kind)
}
