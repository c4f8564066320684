//! The snapshot archive the `snapshot` action and the scheduled snapshots write (and
//! `restore` reads): a tar.gz of `metadata.json` and the db, 0600 from creation, streamed and
//! hashed as the snapshot arrives, renamed into place only once etcd's trailing digest has
//! been verified and the file synced.

use crate::client::{Client, Status};
use crate::snapshot::{stream_snapshot, SnapshotSink};
use anyhow::{anyhow, bail, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

type ArchiveTar =
    tar::Builder<flate2::write::GzEncoder<Hashing<std::io::BufWriter<std::fs::File>>>>;

/// A writer that hashes what passes through it: the archive's sha256 without reading the
/// file back.
struct Hashing<W: Write> {
    inner: W,
    sha: sha2::Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(b)?;
        self.sha.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The snapshot archive: `metadata.json`, then the db as a `db` entry streamed as it arrives
/// (its tar header needs the size, which the first chunk announces). The gzip level is chosen
/// from the first MiBs: data that does not compress is stored, so a restore does not pay to
/// inflate literal-coded blocks for nothing.
struct Archive {
    file: Option<std::fs::File>,
    meta: Vec<u8>,
    size: u64,
    tar: Option<ArchiveTar>,
    /// the first MiBs, held until the level is chosen (a db starts with compressible meta pages)
    head: Vec<u8>,
}

const ARCHIVE_SAMPLE: usize = 4 << 20;

impl Archive {
    fn open(&mut self) -> std::io::Result<ArchiveTar> {
        let sample = &self.head;
        let mut probe = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        probe.write_all(sample)?;
        let compressed = probe.finish()?.len();
        let level = if compressed * 10 > sample.len() * 9 {
            flate2::Compression::none()
        } else {
            flate2::Compression::fast()
        };
        let file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("archive already open"))?;
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Hashing {
                inner: std::io::BufWriter::with_capacity(1 << 20, file),
                sha: Default::default(),
            },
            level,
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(self.meta.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, "metadata.json", self.meta.as_slice())?;
        let mut h = tar::Header::new_gnu();
        h.set_path("db")?;
        h.set_size(self.size);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.get_mut().write_all(h.as_bytes())?;
        Ok(tar)
    }
}

impl SnapshotSink for Archive {
    fn begin(&mut self, size: u64) -> std::io::Result<()> {
        self.size = size;
        Ok(())
    }
    fn data(&mut self, b: &[u8]) -> std::io::Result<()> {
        if let Some(t) = self.tar.as_mut() {
            return t.get_mut().write_all(b);
        }
        self.head.extend_from_slice(b);
        if self.head.len() < ARCHIVE_SAMPLE && (self.head.len() as u64) < self.size {
            return Ok(());
        }
        let mut tar = self.open()?;
        tar.get_mut().write_all(&std::mem::take(&mut self.head))?;
        self.tar = Some(tar);
        Ok(())
    }
}

/// `etcd-snapshot-<UTC time>`: the name of an archive written now (its file is
/// `<name>.tar.gz`); names sort by time.
pub fn snapshot_name() -> String {
    format!("etcd-snapshot-{}", timestamp())
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}-{:02}.{:02}.{:02}",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// The archive's `metadata.json`: what the snapshot was taken from; `keys`: how many keys
/// the keyspace held at `revision` (the snapshot holds that revision or a later one).
pub fn metadata(status: &Status, members: usize, keys: Option<u64>) -> serde_json::Value {
    serde_json::json!({
        "keys": keys,
        "format": "etcd-charm-snapshot/1",
        "etcd-version": status.version,
        "revision": status.header.revision,
        "cluster-id": format!("{:x}", status.header.cluster_id),
        "member-count": members,
        "time": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "keys-version": "v3",
    })
}

/// A written archive.
pub struct Written {
    pub path: PathBuf,
    /// the archive's size
    pub size: u64,
    /// the database's size (with its digest), as etcd announced it
    pub db_size: u64,
    pub sha256: String,
}

/// Streams a snapshot from `ep` into `dir/<name>.tar.gz` (through `.<name>.part`, removed
/// when anything fails).
pub fn write(
    client: &Client,
    ep: &str,
    dir: &Path,
    name: &str,
    meta: &serde_json::Value,
) -> Result<Written> {
    let path = dir.join(format!("{name}.tar.gz"));
    let part = dir.join(format!(".{name}.part"));
    let f = hostkit::operator::create_operator_file(&part)?;
    let result = (|| -> Result<(u64, String)> {
        let mut archive = Archive {
            file: Some(f),
            meta: serde_json::to_vec_pretty(meta)?,
            size: 0,
            tar: None,
            head: Vec::new(),
        };
        let written = stream_snapshot(client, ep, &mut archive)?;
        let size = archive.size;
        if written != size {
            bail!("snapshot stream size {written} does not match the announced {size}");
        }
        let mut b = archive
            .tar
            .take()
            .ok_or_else(|| anyhow!("the snapshot stream was empty"))?;
        // pad the tar entry to 512 bytes
        let pad = (512 - (size % 512)) % 512;
        b.get_mut().write_all(&vec![0u8; pad as usize])?;
        let gz = b.into_inner()?;
        let w = gz.finish()?;
        let sha = {
            use sha2::Digest;
            format!("{:x}", w.sha.finalize())
        };
        w.inner
            .into_inner()
            .map_err(|e| anyhow!("flushing the snapshot: {e}"))?
            .sync_all()?;
        Ok((written, sha))
    })();
    let (db_size, sha256) = match result {
        Ok(n) => n,
        Err(e) => {
            // The stream's error is what the caller needs; a part file that will not go is
            // a hidden `.part`, never taken for an archive (and the next one has a new name).
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, &path)?;
    let size = std::fs::metadata(&path)?.len();
    Ok(Written {
        path,
        size,
        db_size,
        sha256,
    })
}
