//! Unpacking a release tarball defensively: no absolute paths, no `..`, no links or devices, size limits.

use super::common::*;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Checks one tar entry path: relative, no `..`, nothing but normal components.
pub fn safe_path(p: &Path) -> std::result::Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("{} climbs out with '..'", p.display())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{} is an absolute path", p.display()))
            }
        }
    }
    Ok(out)
}

/// Unpacks a gzip tarball into `dest` refusing absolute paths, `..`, links, devices and
/// oversized entries. A corrupt or truncated archive fails here (gzip's CRC, tar's framing).
pub fn unpack_safely(tarball: &Path, dest: &Path) -> std::result::Result<(), String> {
    unpack_safely_with(tarball, dest, Room::Release, |_, _| {})
}

/// How much an archive may unpack to.
#[derive(Clone, Copy)]
pub enum Room {
    /// an etcd release: 512 MiB per file, 1 GiB in all
    Release,
    /// a snapshot, as large as etcd's quota allows: up to `bytes` in all (the free space
    /// where it unpacks)
    Free { bytes: u64 },
}

/// `unpack_safely`, within `room`, showing `seen` every chunk of every file as it is
/// written (by its path in the archive): a check of the content costs no second read.
pub fn unpack_safely_with(
    tarball: &Path,
    dest: &Path,
    room: Room,
    mut seen: impl FnMut(&Path, &[u8]),
) -> std::result::Result<(), String> {
    let f = std::fs::File::open(tarball)
        .map_err(|e| format!("cannot open {}: {e}", tarball.display()))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::io::BufReader::with_capacity(1 << 20, f),
    ));
    let mut total = 0u64;
    let entries = ar
        .entries()
        .map_err(|e| format!("not a gzip tarball: {e}"))?;
    for entry in entries {
        let mut e = entry.map_err(|e| format!("damaged tarball: {e}"))?;
        let path = e
            .path()
            .map_err(|e| format!("bad entry name: {e}"))?
            .into_owned();
        let rel = safe_path(&path)?;
        let kind = e.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(dest.join(&rel)).map_err(|e| e.to_string())?;
            continue;
        }
        if !kind.is_file() {
            return Err(format!(
                "{} is a {:?} entry; only regular files and directories are accepted",
                path.display(),
                kind
            ));
        }
        let size = e.header().size().map_err(|e| e.to_string())?;
        total += size;
        check_room(room, size, total, &path, dest)?;
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mode = e.header().mode().unwrap_or(0o644) & 0o755;
        let mut out = std::fs::File::create(&target).map_err(|e| e.to_string())?;
        // Large reads and writes: snapshot dbs are hundreds of MiB.
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = e
                .read(&mut buf[..left.min(1 << 20) as usize])
                .map_err(|err| format!("damaged tarball at {}: {err}", path.display()))?;
            if n == 0 {
                return Err(format!("damaged tarball: {} ends early", path.display()));
            }
            seen(&rel, &buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| e.to_string())?;
    }
    // Read to the end of the gzip stream: its trailer CRC catches damage inside stored blocks
    // that tar's framing cannot see.
    let mut rest = ar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| format!("damaged tarball: {e}"))?;
    Ok(())
}

/// Refuses an entry that makes the archive larger than `room` allows.
fn check_room(
    room: Room,
    size: u64,
    total: u64,
    path: &Path,
    dest: &Path,
) -> std::result::Result<(), String> {
    match room {
        Room::Release if size > MAX_FILE || total > MAX_TOTAL => {
            return Err(format!(
                "{} makes the archive larger than allowed",
                path.display()
            ))
        }
        Room::Free { bytes } if total > bytes => {
            return Err(format!(
                "{} needs {} MiB in all to unpack and {} has {} MiB free: make room there",
                path.display(),
                total >> 20,
                dest.display(),
                bytes >> 20
            ))
        }
        _ => {}
    }
    Ok(())
}

/// Finds the directory holding `etcd` in an unpacked release (top level or one dir down).
pub(crate) fn find_bin_dir(root: &Path) -> Option<PathBuf> {
    if root.join("etcd").is_file() {
        return Some(root.to_path_buf());
    }
    for e in std::fs::read_dir(root).ok()?.flatten() {
        if e.path().join("etcd").is_file() {
            return Some(e.path());
        }
    }
    None
}
