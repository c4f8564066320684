//! etcd's snapshot stream: `Maintenance.Snapshot` read into a sink, hashed as it arrives,
//! its trailing digest checked.

use crate::etcd::client::Client;
use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::time::Duration;

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

/// Streams a consistent snapshot from `ep` into `out` (the raw db followed by its 32-byte
/// sha256, byte-identical to `etcdctl snapshot save`), verifying the digest. Returns the
/// number of bytes written.
pub fn stream_snapshot(client: &Client, ep: &str, out: &mut dyn SnapshotSink) -> Result<u64> {
    use base64::Engine;
    use sha2::Digest;
    let url = format!("{ep}/v3/maintenance/snapshot");
    let resp = client
        .http()
        .post(&url)
        .timeout(Duration::from_secs(3600))
        .json(&serde_json::json!({}))
        .send()?;
    if !resp.status().is_success() {
        bail!(
            "snapshot from {ep}: HTTP {}: {}",
            resp.status(),
            resp.text().unwrap_or_default()
        );
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 20, resp);
    let mut hasher = sha2::Sha256::new();
    let mut pending: Vec<u8> = vec![];
    let mut line = String::new();
    let mut total = 0u64;
    let mut first = true;
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| "snapshot stream: a line that is not JSON")?;
        let Some(result) = v.get("result") else {
            bail!(
                "snapshot stream from {ep} failed: {}",
                v.get("error")
                    .map(|e| e.to_string())
                    .unwrap_or(line.clone())
            );
        };
        let blob = b64.decode(result.get("blob").and_then(Value::as_str).unwrap_or(""))?;
        if first {
            let remaining: u64 = result
                .get("remaining_bytes")
                .and_then(|r| r.as_str().and_then(|s| s.parse().ok()).or(r.as_u64()))
                .unwrap_or(0);
            out.begin(remaining + blob.len() as u64 + 32)?;
            first = false;
        }
        // Everything but the last 32 bytes seen so far is database; the last 32 may be the digest.
        pending.extend_from_slice(&blob);
        if pending.len() > 32 {
            let cut = pending.len() - 32;
            hasher.update(&pending[..cut]);
            out.data(&pending[..cut])?;
            total += cut as u64;
            pending.drain(..cut);
        }
    }
    if pending.len() != 32 {
        bail!("snapshot stream from {ep} ended early (no trailing digest)");
    }
    let digest = hasher.finalize();
    if digest.as_slice() != pending.as_slice() {
        bail!(
            "snapshot from {ep} is corrupt: sha256 of the data does not match the trailing digest"
        );
    }
    out.data(&pending)?;
    Ok(total + 32)
}

/// Streams a snapshot from `ep` into `path` as `etcdctl snapshot save` would write it: a
/// private file (0600 from its creation), written beside the target, flushed and synced, and
/// renamed into place only once its digest has been verified. Returns the bytes written.
pub fn save_raw(client: &Client, ep: &str, path: &std::path::Path) -> Result<u64> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| -> Result<u64> {
        let f = crate::pki::create_private(&tmp)
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
