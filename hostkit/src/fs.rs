//! Files: private from their creation, written atomically and durably, and the charm's own
//! JSON records read back with errors that name the file (a failure to read is never
//! "absent"). Free space is checked before a large write.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Creates (or truncates) a file only its owner can read: 0600 from its creation, never
/// readable by others even for a moment.
pub fn create_private(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(p)
}

/// Writes a file atomically with exactly the given mode (0600 for keys; the umask does not
/// narrow a mode others must read or run with): a temporary file of its own in the same
/// directory, synced, renamed over `p`, and the directory synced so the rename survives a
/// power cut. An error names the file.
pub fn write_file(p: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(named)?;
    // tempfile creates it 0600; the mode is set before a byte is written.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(&dir)
        .map_err(named)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(named)?;
    tmp.write_all(data).map_err(named)?;
    tmp.as_file().sync_all().map_err(named)?;
    tmp.persist(p).map_err(|e| named(e.error))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(named)
}

/// Writes `data` as `write_file` does unless the file already holds exactly that.
/// Returns whether it wrote.
pub fn update_file(p: &Path, data: &str, mode: u32) -> std::io::Result<bool> {
    if std::fs::read_to_string(p).ok().as_deref() == Some(data) {
        return Ok(false);
    }
    write_file(p, data.as_bytes(), mode)?;
    Ok(true)
}

/// The sha256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

/// A reader that counts the sha256 of what passes through it.
pub struct Sha256Reader<R: std::io::Read> {
    inner: R,
    sha: sha2::Sha256,
}

impl<R: std::io::Read> Sha256Reader<R> {
    pub fn new(inner: R) -> Self {
        Sha256Reader {
            inner,
            sha: Default::default(),
        }
    }

    /// The sha256 of what was read, lowercase hex.
    pub fn hex(self) -> String {
        use sha2::Digest;
        hex(&self.sha.finalize())
    }
}

impl<R: std::io::Read> std::io::Read for Sha256Reader<R> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(b)?;
        self.sha.update(&b[..n]);
        Ok(n)
    }
}

/// Bytes as lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A text file's contents: missing is `None`; any other failure to read is an error naming
/// the file (never "absent").
pub fn read_if_present(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
}

/// Reads one of the charm's own JSON files: missing is `None`; unreadable or corrupt is an
/// error that names the file and says what to do (never a silent default).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("cannot read {path}: {e}"),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        anyhow!("{path} is corrupt ({e}); restore it from a backup or repair the JSON: the charm changes nothing until then")
    })
}

/// Writes one of the charm's own JSON files, 0600 (they can name secrets' places and hold
/// configs), replacing it atomically.
pub fn write_json<T: Serialize>(path: &str, value: &T) -> Result<()> {
    write_file(Path::new(path), &serde_json::to_vec_pretty(value)?, 0o600)?;
    Ok(())
}

/// Removes a file; one that is not there is not an error, any other failure is.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The entries of `dir` whose names start with `prefix` (none when it cannot be read: the
/// callers clear leftovers, and one they cannot see they leave).
pub fn entries_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// A new private scratch directory in `dir` named `<prefix>…` (removed when dropped), the
/// ones an earlier run left (killed before its drop) removed first: they hold copies only.
pub fn fresh_scratch_dir(dir: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    for old in entries_named(dir, prefix) {
        // One that will not go is tried again by the next run; it costs only its room.
        let _ = std::fs::remove_dir_all(old);
    }
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(dir)
        .map_err(|e| anyhow!("creating a scratch dir in {}: {e}", dir.display()))
}

/// Room kept free beyond what a write needs (etcd's WAL and the system go on writing).
pub const ROOM_MARGIN: u64 = 64 * 1024 * 1024;

/// Refuses a write of about `need` bytes into `dir` (`what` says which) when its filesystem
/// has less free than that plus `ROOM_MARGIN`, and, when `dir` shares a filesystem with
/// etcd's data (`data`), less than that plus the database again (etcd must still be able to
/// grow and compact there): the error gives the numbers.
pub fn ensure_room(dir: &Path, need: u64, data: Option<&Path>, what: &str) -> Result<()> {
    let free = free_bytes(dir)?;
    let same_fs = data.is_some_and(|d| same_filesystem(dir, d));
    let reserve = ROOM_MARGIN + if same_fs { need } else { 0 };
    if free < need.saturating_add(reserve) {
        bail!(
            "not enough free space in {} for {what}: about {} needed and {} kept free{}, {} free; \
             free some space or choose another place",
            dir.display(),
            mib(need),
            mib(reserve),
            if same_fs {
                " (it shares a filesystem with etcd's data)"
            } else {
                ""
            },
            mib(free)
        );
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{} MiB", b.div_ceil(1024 * 1024))
}

/// The bytes free in `dir`'s filesystem (its available blocks).
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| anyhow!("cannot tell how much space {} has: {e}", dir.display()))?;
    Ok(s.blocks_available() * s.fragment_size())
}

fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_file_replaces_atomically_with_the_mode_asked_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/key.pem");
        write_file(&p, b"one", 0o600).unwrap();
        write_file(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");
        assert!(!update_file(&p, "two", 0o644).unwrap());
        assert!(update_file(&p, "three", 0o644).unwrap());
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_it_and_a_missing_one_is_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        let ps = p.to_str().unwrap();
        assert!(read_json::<u32>(ps).unwrap().is_none());
        std::fs::write(&p, b"{").unwrap();
        let e = read_json::<u32>(ps).unwrap_err().to_string();
        assert!(e.contains(ps) && e.contains("corrupt"), "{e}");
        write_json(ps, &7u32).unwrap();
        assert_eq!(read_json::<u32>(ps).unwrap(), Some(7));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
