//! Moving this member's data between directories when the `data` storage comes or goes
//! (`data-storage-attached` on a running unit, `remove-storage`): etcd is stopped, the
//! `member/` tree is copied next to its new place, verified file by file (size and sha256),
//! renamed into place in one step, and only then is the old tree renamed aside
//! (`member.moved-<time>`, never deleted by the charm). A move cut short leaves the old
//! tree untouched and a `.incoming-member` the next attempt starts over.

use crate::juju;
use crate::unit::{has_member_data, now};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The data directory etcd was last configured with (its config file), if any.
pub fn configured_data_dir(config_file: &Path) -> Result<Option<String>> {
    let text = match std::fs::read_to_string(config_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_file.display())),
    };
    data_dir_in(&text).with_context(|| format!("parsing {}", config_file.display()))
}

/// The `data-dir` a rendered etcd config names, if any.
pub fn data_dir_in(config: &str) -> Result<Option<String>> {
    let v: serde_yaml::Value = serde_yaml::from_str(config)?;
    Ok(v.get("data-dir").and_then(|d| d.as_str()).map(String::from))
}

/// Whether the member's data must move from `from` to `to` before etcd starts on `to`.
pub fn needed(from: Option<&str>, to: &str) -> bool {
    from.is_some_and(|f| f != to && has_member_data(f) && !has_member_data(to))
}

/// Copies `from/member` to `to/member` (etcd must be stopped), verified, then sets the old
/// tree aside. Returns where the old tree now is.
pub fn move_member(from: &str, to: &str) -> Result<PathBuf> {
    let src = Path::new(from).join("member");
    let dst = Path::new(to).join("member");
    let incoming = Path::new(to).join(".incoming-member");
    if incoming.exists() {
        std::fs::remove_dir_all(&incoming)
            .with_context(|| format!("removing an earlier partial copy {}", incoming.display()))?;
    }
    std::fs::create_dir_all(to)?;
    juju::log(
        "INFO",
        &format!("moving etcd's data from {from} to {to} (etcd is stopped)"),
    );
    copy_dir(&src, &incoming)?;
    let (a, b) = (digest_tree(&src)?, digest_tree(&incoming)?);
    if a != b {
        bail!(
            "the copy of {} in {} differs from the original; the original is kept and etcd stays on {from}",
            src.display(),
            incoming.display()
        );
    }
    std::fs::rename(&incoming, &dst)?;
    sync_dir(Path::new(to))?;
    let aside = Path::new(from).join(format!("member.moved-{}", now()));
    std::fs::rename(&src, &aside)?;
    juju::log(
        "INFO",
        &format!(
            "etcd's data is now in {to} ({} files verified); the old copy is kept as {}",
            a.len(),
            aside.display()
        ),
    );
    Ok(aside)
}

/// Copies a member directory (files and directories only, as etcd writes it, each with its
/// permissions), with fsync of every file and directory.
/// The bytes of the regular files under `dir` (what a copy of it needs).
pub fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            total += tree_size(&e.path())?;
        } else if t.is_file() {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type()?;
        if ty.is_dir() {
            copy_dir(&src, &dst)?;
        } else if ty.is_file() {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
            std::fs::File::open(&dst)?.sync_all()?;
        } else {
            bail!("{} is neither a file nor a directory", src.display());
        }
    }
    sync_dir(to)
}

pub(crate) fn sync_dir(d: &Path) -> Result<()> {
    std::fs::File::open(d)?.sync_all()?;
    Ok(())
}

/// Every file under `root` by relative path: (size, sha256).
fn digest_tree(root: &Path) -> Result<BTreeMap<PathBuf, (u64, String)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(p);
                continue;
            }
            let size = entry.metadata()?.len();
            let sha = etcdkit::install::sha256_file(&p)
                .with_context(|| format!("reading {}", p.display()))?;
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            out.insert(rel, (size, sha));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_copy_replaces_and_the_original_is_set_aside() {
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("old");
        let to = d.path().join("new");
        std::fs::create_dir_all(from.join("member/wal")).unwrap();
        std::fs::create_dir_all(from.join("member/snap")).unwrap();
        std::fs::write(from.join("member/wal/0.wal"), vec![7u8; 100_000]).unwrap();
        std::fs::write(from.join("member/snap/db"), b"db").unwrap();
        let (f, t) = (from.to_str().unwrap(), to.to_str().unwrap());
        assert!(needed(Some(f), t));
        // a partial copy from an interrupted attempt is replaced
        std::fs::create_dir_all(to.join(".incoming-member/wal")).unwrap();
        let aside = move_member(f, t).unwrap();
        assert_eq!(std::fs::read(to.join("member/snap/db")).unwrap(), b"db");
        assert_eq!(
            std::fs::read(to.join("member/wal/0.wal")).unwrap().len(),
            100_000
        );
        assert!(
            aside.join("wal/0.wal").exists(),
            "the original is kept aside"
        );
        assert!(!from.join("member").exists());
        assert!(!needed(Some(f), t), "moved once");
        assert!(!needed(None, t));
    }
}
