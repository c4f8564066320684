//! Charms and resources as the controller keeps them: a charm found (a local directory or
//! archive, or a name from `CHARM_HARNESS_CHARMHUB`), copied in honouring `.jujuignore`,
//! and resource files stored by revision.

use super::common::*;

/// Copies a charm directory into the controller, honouring `.jujuignore` (gitignore syntax).
pub(super) fn snapshot_charm(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    std::fs::create_dir_all(dst)?;
    let walker = ignore::WalkBuilder::new(src)
        .hidden(false)
        .git_ignore(false)
        .git_global(false)
        .git_exclude(false)
        .ignore(false)
        .parents(false)
        .add_custom_ignore_filename(".jujuignore")
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry?;
        let rel = entry.path().strip_prefix(src)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let to = dst.join(rel);
        let ft = entry.file_type().context("file type")?;
        if ft.is_dir() {
            std::fs::create_dir_all(&to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else {
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::copy(entry.path(), &to)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

pub(super) fn store_resource(
    ctl: &Ctl,
    model: &str,
    app: &str,
    name: &str,
    rev: u32,
    src: &Path,
) -> Result<String> {
    let dir = ctl
        .home
        .join("resources")
        .join(model)
        .join(app)
        .join(name)
        .join(rev.to_string());
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(src.file_name().unwrap_or_default());
    std::fs::copy(src, &file)
        .with_context(|| format!("reading resource file {}", src.display()))?;
    Ok(file.to_string_lossy().into_owned())
}

/// A charm as `deploy` or `refresh` found it: its files in `dir` (an archive is unpacked
/// into a temporary directory that lives as long as this), and where it came from.
pub(super) struct Charm {
    pub dir: PathBuf,
    /// A `.charm` archive (Juju 3 requires its manifest.yaml bases).
    pub packed: bool,
    /// The store name it was found by (`refresh` without `--path` looks it up again).
    pub name: Option<String>,
    _unpacked: Option<tempfile::TempDir>,
}

/// The charm `deploy` names: a local charm directory or `.charm` archive (`./etcd`,
/// `/path/to/etcd.charm`), or a charm name (`etcd`, `ch:etcd`, `cs:etcd`) looked up as
/// `<dir>/<name>.charm` or `<dir>/<name>/` in the colon-separated directories of
/// `CHARM_HARNESS_CHARMHUB`, the local controller's store (an archive first, as a store
/// serves archives).
pub(super) fn find_charm(charm: &str, cwd: &Path, store: &str) -> Result<Charm> {
    // As Juju reads it: a path (with a `/` or a leading `.`) is a local charm; a bare name is
    // the store's, and only a name no store holds falls back to a directory here.
    let local = cwd.join(charm);
    let is_path = charm.contains('/') || charm.starts_with('.');
    if is_path && (local.is_dir() || local.is_file()) {
        return open_charm(&local, None);
    }
    let by_name = charm
        .strip_prefix("ch:")
        .or_else(|| charm.strip_prefix("cs:"))
        .unwrap_or(charm);
    let looks_like_name = !by_name.is_empty()
        && by_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if looks_like_name {
        for dir in store.split(':').filter(|d| !d.is_empty()) {
            let archive = Path::new(dir).join(format!("{by_name}.charm"));
            let candidate = Path::new(dir).join(by_name);
            if archive.is_file() {
                return open_charm(&archive, Some(by_name));
            }
            if candidate.join("metadata.yaml").is_file() {
                return open_charm(&candidate, Some(by_name));
            }
        }
    }
    if local.is_dir() {
        return open_charm(&local, None);
    }
    if is_path {
        bail!("charm {charm:?} not found: no such charm directory or .charm file");
    }
    if !looks_like_name {
        bail!("charm {charm:?} not found: no such directory, and not a charm name");
    }
    if store.is_empty() {
        bail!("charm {charm:?} not found: deploy a local charm directory, or set CHARM_HARNESS_CHARMHUB to directories holding <name>.charm files or <name>/ charm directories");
    }
    bail!("charm {charm:?} not found in CHARM_HARNESS_CHARMHUB ({store}): each directory there holds <name>.charm files or <name>/ charm directories")
}

fn open_charm(path: &Path, name: Option<&str>) -> Result<Charm> {
    if path.is_dir() {
        return Ok(Charm {
            dir: path.to_path_buf(),
            packed: false,
            name: name.map(String::from),
            _unpacked: None,
        });
    }
    let tmp = tempfile::Builder::new().prefix("charm-").tempdir()?;
    unpack(path, tmp.path())
        .with_context(|| format!("{} is not a charm archive", path.display()))?;
    Ok(Charm {
        dir: tmp.path().to_path_buf(),
        packed: true,
        name: name.map(String::from),
        _unpacked: Some(tmp),
    })
}

/// Unpacks a `.charm` (zip) into `dst`: files with their modes, and symlinks whose targets
/// stay inside the charm (`hooks/install -> ../dispatch`). An entry naming a path outside
/// `dst`, or a symlink pointing out of it, refuses the whole archive.
fn unpack(archive: &Path, dst: &Path) -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(archive)?;
    let mut zip = zip::ZipArchive::new(file)?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let rel = entry
            .enclosed_name()
            .ok_or_else(|| anyhow!("entry {:?} points outside the charm", entry.name()))?;
        let out = dst.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out)?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mode = entry.unix_mode().unwrap_or(0o644);
        if mode & 0o170000 == 0o120000 {
            let mut target = String::new();
            entry.read_to_string(&mut target)?;
            let resolved = rel.parent().unwrap_or(Path::new("")).join(&target);
            let mut depth = 0i32;
            for c in resolved.components() {
                match c {
                    std::path::Component::Normal(_) => depth += 1,
                    std::path::Component::ParentDir => depth -= 1,
                    std::path::Component::CurDir => {}
                    _ => depth = -1,
                }
                if depth < 0 {
                    bail!(
                        "symlink {:?} -> {target:?} points outside the charm",
                        entry.name()
                    );
                }
            }
            std::os::unix::fs::symlink(&target, &out)?;
            continue;
        }
        let mut f = std::fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut f)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    Ok(())
}
