//! The actions' side of off-machine backups: `list-backups`, `snapshot upload=true` and the
//! download `restore backup-id=…` starts from. The bucket is the one `s3-credentials` shares
//! now (read from the relation in the action, not from a unit's saved plan).

use crate::actions::support::{refuse, Results};
use crate::jobs::offsite::{self, Backup};
use crate::juju;
use anyhow::{Context as _, Result};
use s3kit::Store;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The related bucket, or the action refused with what to do.
pub fn bucket() -> Result<(Store, String)> {
    match crate::relations::s3::read()? {
        Ok(Some(s)) => Ok((Store::new(&s.target)?, s.target.bucket)),
        Ok(None) => refuse(format!(
            "no bucket: relate {} to an S3 provider (e.g. juju integrate etcd s3-integrator) and wait until it shares its bucket and credentials",
            crate::relations::s3::ENDPOINT
        )),
        Err(why) => refuse(why),
    }
}

/// The archive `snapshot upload=true` wrote, uploaded and read back before it is recorded.
pub fn upload(
    ctx: &juju::Context,
    store: &Store,
    bucket: &str,
    archive: &Path,
    meta: &serde_json::Value,
    recipients: &[String],
) -> Result<Results> {
    juju::action_log(&format!(
        "uploading {} to the bucket {bucket}",
        archive.display()
    ));
    let b = offsite::upload(store, archive, meta, &ctx.unit, recipients)?;
    juju::action_log(&format!(
        "{} read back from the bucket and recorded",
        b.object
    ));
    Ok(vec![
        ("upload.id".into(), b.id),
        ("upload.bucket".into(), bucket.to_string()),
        ("upload.object".into(), store.key(&b.object)),
        ("upload.size".into(), b.size.to_string()),
        ("upload.sha256".into(), b.sha256),
        ("upload.encrypted".into(), b.encrypted.to_string()),
    ])
}

/// One line of `list-backups`.
#[derive(Debug, serde::Serialize)]
struct Line {
    place: &'static str,
    id: String,
    time: Option<String>,
    revision: Option<u64>,
    size: u64,
    sha256: Option<String>,
    encrypted: bool,
    cluster_id: Option<String>,
}

/// `list-backups`: the archives in `snapshot_target` on this unit and the backups in the
/// bucket (when related), oldest first.
pub fn list_backups() -> Result<Results> {
    let cfg =
        crate::config::Config::parse(&juju::config()?).map_err(crate::actions::support::Refused)?;
    let mut lines = local_lines(Path::new(&cfg.snapshot_target))?;
    let mut results: Results = vec![];
    let related = !juju::relation_ids(crate::relations::s3::ENDPOINT)?.is_empty();
    if related {
        let (store, bucket) = bucket()?;
        let (remote, unreadable) = offsite::list(&store)?;
        results.push(("remote.bucket".into(), bucket));
        results.push(("remote.count".into(), remote.len().to_string()));
        if !unreadable.is_empty() {
            results.push(("remote.unreadable".into(), unreadable.join("; ")));
        }
        lines.extend(remote.into_iter().map(remote_line));
    }
    let table: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{:6} {} revision {} {} bytes{}",
                l.place,
                l.id,
                l.revision.map_or("?".into(), |r| r.to_string()),
                l.size,
                if l.encrypted { " encrypted" } else { "" }
            )
        })
        .collect();
    results.push((
        "local.count".into(),
        lines
            .iter()
            .filter(|l| l.place == "local")
            .count()
            .to_string(),
    ));
    results.push(("backups".into(), serde_json::to_string(&lines)?));
    results.push((
        "output".into(),
        if table.is_empty() {
            "no backups".into()
        } else {
            table.join("\n")
        },
    ));
    Ok(results)
}

fn remote_line(b: Backup) -> Line {
    Line {
        place: "bucket",
        id: b.id,
        time: b.time,
        revision: b.revision,
        size: b.size,
        sha256: Some(b.sha256),
        encrypted: b.encrypted,
        cluster_id: b.cluster_id,
    }
}

/// The archives in `dir` (none when it does not exist), each with what its `metadata.json`
/// says (read from the archive's first entry) and its `.sha256` beside it.
fn local_lines(dir: &Path) -> Result<Vec<Line>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    paths.retain(|p| offsite::id_of(p).is_ok_and(|id| id.starts_with("etcd-snapshot-")));
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let meta = archive_metadata(&p).unwrap_or_default();
            let sha = std::fs::read_to_string(format!("{}.sha256", p.display()))
                .ok()
                .and_then(|s| s.split_whitespace().next().map(str::to_string));
            let s = |k: &str| meta.get(k).and_then(|v| v.as_str()).map(str::to_string);
            Ok(Line {
                place: "local",
                id: offsite::id_of(&p)?,
                time: s("time"),
                revision: meta.get("revision").and_then(|v| v.as_u64()),
                size: std::fs::metadata(&p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .len(),
                sha256: sha,
                encrypted: false,
                cluster_id: s("cluster-id"),
            })
        })
        .collect()
}

/// The `metadata.json` at the head of one of this charm's archives (None for another file).
fn archive_metadata(p: &Path) -> Option<serde_json::Value> {
    let f = std::fs::File::open(p).ok()?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut first = tar.entries().ok()?.next()?.ok()?;
    if first.path().ok()?.as_os_str() != "metadata.json" || first.size() > 64 << 10 {
        return None;
    }
    let mut text = String::new();
    first.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Downloads the backup `id` into `dir` (a private file), checked against its record as it
/// arrives; returns the archive's path. Refused when there is no such backup, when it does
/// not fit, or when what arrives is not what was recorded (the download is removed).
pub fn download(id: &str, dir: &Path, cfg: &crate::config::Config) -> Result<(PathBuf, Backup)> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        || id.contains("..")
    {
        return refuse(format!(
            "backup-id {:?} is not a backup's id (list-backups shows them)",
            id.chars().take(80).collect::<String>()
        ));
    }
    let (store, bucket) = bucket()?;
    let Some(rec) = offsite::record(&store, id)? else {
        return refuse(format!(
            "there is no backup {id} in the bucket {bucket} (list-backups shows them)"
        ));
    };
    if let Err(e) = crate::unit::ensure_room(dir, rec.size, None, "the backup's download") {
        return refuse(format!("{e:#}"));
    }
    let path = dir.join("backup.tar.gz");
    let fetched = if rec.encrypted {
        dir.join("backup.tar.gz.age")
    } else {
        path.clone()
    };
    // An encrypted backup needs its identity before anything is downloaded.
    let identity = if rec.encrypted {
        Some(age_identity(id, cfg)?)
    } else {
        None
    };
    juju::action_log(&format!(
        "downloading the backup {id} ({} bytes) from the bucket {bucket}",
        rec.size
    ));
    let mut f = hostkit::fs::create_private(&fetched)
        .with_context(|| format!("creating {}", fetched.display()))?;
    if let Err(e) = offsite::fetch(&store, id, &mut f) {
        // Not a copy of the backup: it goes before anything else is done (if it will not,
        // the scratch dir it is in goes with the action).
        let _ = std::fs::remove_file(&fetched);
        return refuse(format!("{e:#}"));
    }
    drop(f);
    // Unencrypted, the archive is the object, whose sha256 fetch checked: its record must
    // say the same of both (no second read of the file).
    if let Some(want) = rec
        .archive_sha256
        .as_ref()
        .filter(|w| !rec.encrypted && **w != rec.sha256)
    {
        return refuse(format!(
            "the backup {id}'s record says the archive's sha256 is {want} and the object's {}: refused",
            rec.sha256
        ));
    }
    if let Some(identity) = identity {
        juju::action_log("decrypting the backup with backup_age_identity");
        let opened = crate::jobs::sealed::open(&fetched, &path, &identity);
        // The ciphertext was a step to the archive; the archive or the error is what counts
        // (one that will not go leaves with the scratch dir).
        let _ = std::fs::remove_file(&fetched);
        let got = match opened {
            Ok(sha) => sha,
            Err(e) => return refuse(format!("the backup {id}: {e:#}")),
        };
        if let Some(want) = rec.archive_sha256.as_ref().filter(|w| **w != got) {
            // A decryption that does not match leaves no archive behind either (else the
            // scratch dir takes it).
            let _ = std::fs::remove_file(&path);
            return refuse(format!("the backup {id} decrypts to an archive of sha256 {got}, its record says {want}: refused"));
        }
    }
    Ok((path, rec))
}

/// The age identity in the secret `backup_age_identity` names (key `identity`).
fn age_identity(id: &str, cfg: &crate::config::Config) -> Result<String> {
    let Some(uri) = &cfg.backup_age_identity else {
        return refuse(format!(
            "the backup {id} is encrypted: give the charm its age identity in a Juju secret \
             (juju add-secret etcd-age identity=AGE-SECRET-KEY-1...; juju grant-secret etcd-age <this application>; \
             juju config <this application> backup_age_identity=<the secret's URI>)"
        ));
    };
    let content = juju::secret_get(uri).map_err(|e| {
        crate::actions::support::Refused(format!(
            "backup_age_identity {uri} cannot be read ({e:#}): was it granted to this application (juju grant-secret)?"
        ))
    })?;
    content.get("identity").cloned().ok_or_else(|| {
        crate::actions::support::Refused(format!("the secret {uri} has no key `identity`")).into()
    })
}
