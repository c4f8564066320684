//! `archive_url`: a tarball downloaded with its digest checked, within the room the cache has.

use super::common::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Downloads a pinned tarball, hashing while streaming; only a matching file is kept.
pub fn download(url: &str, sha256: &str) -> Result<PathBuf> {
    let cache = Path::new("/var/cache/etcd-charm");
    std::fs::create_dir_all(cache).map_err(io("/var/cache/etcd-charm"))?;
    let done = cache.join(format!("{sha256}.tar.gz"));
    // Only a verified download is ever renamed to its sha256 name.
    if done.exists() {
        return Ok(done);
    }
    let partial = cache.join(format!("{sha256}.partial"));
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .map_err(|e| InstallError::Failed(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .map_err(|e| InstallError::Failed(format!("downloading {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(InstallError::Bad(format!(
            "downloading {url}: HTTP {}; check archive_url",
            resp.status()
        )));
    }
    // Bounded: an etcd release is tens of MiB; what the unpack would refuse (more than
    // `MAX_DOWNLOAD`) is not downloaded, nor what the cache's filesystem has no room for
    // with `DOWNLOAD_MARGIN` left.
    let free = nix::sys::statvfs::statvfs(cache)
        .map(|s| s.blocks_available() * s.fragment_size())
        .map_err(|e| {
            InstallError::Failed(format!(
                "cannot tell how much space {} has: {e}",
                cache.display()
            ))
        })?;
    let room = free.saturating_sub(DOWNLOAD_MARGIN).min(MAX_DOWNLOAD);
    if let Some(len) = resp.content_length().filter(|l| *l > room) {
        return Err(too_big(url, len, free));
    }
    let mut f = std::fs::File::create(&partial).map_err(io("download file"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got_bytes: u64 = 0;
    loop {
        let n = resp
            .read(&mut buf)
            .map_err(|e| InstallError::Failed(format!("downloading {url}: {e}")))?;
        if n == 0 {
            break;
        }
        got_bytes += n as u64;
        if got_bytes > room {
            drop(f);
            // Best effort: a partial left behind is truncated by the next download and
            // removed after the next verified one.
            let _ = std::fs::remove_file(&partial);
            return Err(too_big(url, got_bytes, free));
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).map_err(io("download file"))?;
    }
    f.sync_all().map_err(io("download file"))?;
    let got = hostkit::fs::hex(&h.finalize());
    if got != sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(InstallError::Bad(format!("{url}: sha256 {got} does not match archive_sha256 {sha256}; fix archive_url or archive_sha256")));
    }
    std::fs::rename(&partial, &done).map_err(io("download file"))?;
    // Only the tarball in use is kept: earlier downloads (installed under /opt/etcd already)
    // and partial ones a crash left go.
    for e in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let p = e.path();
        let n = e.file_name().to_string_lossy().into_owned();
        if p != done && (n.ends_with(".tar.gz") || n.ends_with(".partial")) {
            // Copies of what /opt/etcd holds: one that will not go costs disk only, and the
            // next verified download tries again.
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(done)
}

/// The largest tarball `archive_url` may name (the unpack's own cap on everything in it).
pub const MAX_DOWNLOAD: u64 = 1 << 30;

/// What a download leaves free on its filesystem.
pub(crate) const DOWNLOAD_MARGIN: u64 = 64 << 20;

pub(crate) fn too_big(url: &str, bytes: u64, free: u64) -> InstallError {
    InstallError::Bad(format!(
        "{url}: {} MiB or more, more than the {} MiB an etcd tarball may be or the {} MiB the \
         download may use ({} MiB free, {} MiB kept free); check archive_url",
        bytes.div_ceil(1 << 20),
        MAX_DOWNLOAD >> 20,
        free.saturating_sub(DOWNLOAD_MARGIN) >> 20,
        free >> 20,
        DOWNLOAD_MARGIN >> 20
    ))
}
