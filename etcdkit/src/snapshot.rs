//! etcd's snapshot stream: `Maintenance.Snapshot` (gRPC) read into a sink, hashed as it
//! arrives, its trailing digest checked.

use crate::client::Client;
use anyhow::{bail, Context as _, Result};
use std::io::Write;

/// Receives a snapshot stream: its total size (database + 32-byte digest) first, then bytes.
pub trait SnapshotSink {
    fn begin(&mut self, size: u64) -> std::io::Result<()>;
    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

/// Any writer is a sink that ignores the size.
pub struct Raw<W: Write>(pub W);

impl<W: Write> SnapshotSink for Raw<W> {
    fn begin(&mut self, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn data(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.0.write_all(b)
    }
}

/// etcd's integrity check of a snapshot, fed as the bytes pass: the sha256 of everything
/// but the last 32 bytes must equal those 32 bytes.
#[derive(Default)]
pub struct TrailingDigest {
    sha: sha2::Sha256,
    /// the last bytes seen (at most 32 once data follows): maybe the digest
    tail: Vec<u8>,
}

impl TrailingDigest {
    pub fn update(&mut self, b: &[u8]) {
        use sha2::Digest;
        if b.len() >= 32 {
            let cut = b.len() - 32;
            self.sha.update(&self.tail);
            self.sha.update(&b[..cut]);
            self.tail.clear();
            self.tail.extend_from_slice(&b[cut..]);
        } else {
            self.tail.extend_from_slice(b);
            if self.tail.len() > 32 {
                let cut = self.tail.len() - 32;
                self.sha.update(&self.tail[..cut]);
                self.tail.drain(..cut);
            }
        }
    }

    /// Whether the bytes seen end with the sha256 of what came before.
    pub fn matches(self) -> bool {
        use sha2::Digest;
        self.tail.len() == 32 && self.sha.finalize().as_slice() == self.tail.as_slice()
    }
}

/// Streams a consistent snapshot from `ep` into `out` (the raw db followed by its 32-byte
/// sha256, byte-identical to `etcdctl snapshot save`) over gRPC, verifying the digest as the
/// bytes pass: no second read. Returns the number of bytes written.
pub fn stream_snapshot(client: &Client, ep: &str, out: &mut dyn SnapshotSink) -> Result<u64> {
    let mut digest = TrailingDigest::default();
    let mut total = 0u64;
    let mut first = true;
    let token = client.token(ep)?;
    crate::grpc::snapshot(client.tls(), token.as_deref(), ep, |blob, remaining| {
        if first {
            // etcd counts only the database in `remaining_bytes`; its digest follows.
            out.begin(remaining + blob.len() as u64 + 32)?;
            first = false;
        }
        digest.update(blob);
        total += blob.len() as u64;
        out.data(blob)
    })?;
    if first {
        bail!("snapshot stream from {ep} was empty");
    }
    if total < 32 {
        bail!("snapshot stream from {ep} ended early (no trailing digest)");
    }
    if !digest.matches() {
        bail!(
            "snapshot from {ep} is corrupt: sha256 of the data does not match the trailing digest"
        );
    }
    Ok(total)
}

/// Streams a snapshot from `ep` into `path` as `etcdctl snapshot save` would write it: a
/// private file (0600 from its creation), written beside the target, flushed and synced, and
/// renamed into place only once its digest has been verified. Returns the bytes written.
pub fn save_raw(client: &Client, ep: &str, path: &std::path::Path) -> Result<u64> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| -> Result<u64> {
        let f = hostkit::fs::create_private(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = Raw(std::io::BufWriter::new(f));
        let n = stream_snapshot(client, ep, &mut w)?;
        w.0.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("moving the snapshot to {}", path.display()))?;
        Ok(n)
    })();
    if written.is_err() {
        // A partial file is no snapshot: nothing else refers to it.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
