//! The restore's `fetch` step: the snapshot db found in the `snapshot` resource (a raw
//! file, this charm's archive, the classic charm's archive), unpacked defensively with the
//! trailing digest of every db checked on the way.

use crate::actions::support::{refuse, Refused};
use anyhow::{anyhow, Context as _, Result};
use etcdkit::install;
use etcdkit::snapshot::TrailingDigest;
use std::io::Read;
use std::path::{Path, PathBuf};

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
pub(crate) struct Found {
    pub db: PathBuf,
    pub what: String,
    /// its trailing digest, checked as it was unpacked (None: not checked here)
    pub digest_ok: Option<bool>,
}

/// Finds the snapshot db in the resource: a raw file, or inside a tar.gz archive, whose
/// `db` entries are checked against their trailing digest while they are unpacked.
pub(crate) fn fetch(resource: &Path, staging: &Path) -> Result<Found> {
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
    let mut digests = unpack_hashed(resource, &dir)?;
    let mut digest_ok = |db: &Path| {
        db.strip_prefix(&dir)
            .ok()
            .and_then(|rel| digests.remove(rel))
            .map(TrailingDigest::matches)
    };
    find_db(&dir, &mut digest_ok)
}

/// Unpacks the archive into `dir`, the trailing digest of every `db` entry computed on the
/// other core while this one unpacks (a few chunks in flight: memory stays bounded).
fn unpack_hashed(
    resource: &Path,
    dir: &Path,
) -> Result<std::collections::HashMap<PathBuf, TrailingDigest>> {
    std::fs::create_dir_all(dir)?;
    let free = nix::sys::statvfs::statvfs(dir)
        .map(|v| v.blocks_available() * v.fragment_size())
        .with_context(|| format!("cannot tell the free space in {}", dir.display()))?;
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
        dir,
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
    let digests = hasher
        .join()
        .map_err(|_| anyhow!("the snapshot's digest could not be computed"))?;
    unpacked.map_err(|e| Refused(format!("the snapshot archive is refused: {e}")))?;
    Ok(digests)
}

/// The snapshot db in the unpacked archive: a `db` at its root or one level down (with
/// `metadata.json`: this charm's), else any file of a snapshot's size (the classic charm's).
fn find_db(dir: &Path, digest_ok: &mut impl FnMut(&Path) -> Option<bool>) -> Result<Found> {
    let dir = dir.to_path_buf();
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
