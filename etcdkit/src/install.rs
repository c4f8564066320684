//! Deliveries of the etcd binaries (ARCHITECTURE §3.1): an upstream release tarball from the
//! `etcd` resource or a pinned URL (sha256 verified while streaming, unpacked defensively
//! into a staging dir, switched in by moving the `current` link), the Debian package, or the
//! snap. A delivery only provides binaries; the charm owns config, certificates and data.

use crate::version::{check_step, Version};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

pub const OPT_DIR: &str = "/opt/etcd";
pub const STATE_FILE: &str = "/var/lib/etcd-charm/install.json";
const MAX_FILE: u64 = 512 << 20;
const MAX_TOTAL: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The operator's input is wrong: the unit blocks with this message.
    #[error("{0}")]
    Bad(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, InstallError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Archive,
    Deb,
    Snap,
}

impl Delivery {
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Archive => "archive",
            Delivery::Deb => "deb",
            Delivery::Snap => "snap",
        }
    }
}

/// What is installed, recorded after a verified install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Installed {
    pub delivery: Delivery,
    pub version: String,
    pub bin_dir: String,
    /// sha256 of the tarball an archive install came from
    #[serde(default)]
    pub source_sha256: Option<String>,
    /// path, size and mtime of that tarball: unchanged means already verified and installed
    #[serde(default)]
    pub source_stamp: Option<String>,
    /// verified binaries of `version`, unpacked but not yet switched in: the running member
    /// switches to them in its own rolling turn
    #[serde(default)]
    pub staged: Option<String>,
    /// a version that failed its health check on this unit and was rolled back (for the
    /// Debian package, the package version)
    #[serde(default)]
    pub rolled_back: Option<String>,
    /// the Debian version of the installed etcd-server package (the `deb` delivery)
    #[serde(default)]
    pub package: Option<String>,
    /// What ran before binaries were switched in whose health check has not passed yet (the
    /// directory, or the kept packages): recorded before the switch, cleared by `commit` or
    /// `roll_back`. A hook killed in between leaves it for the next one to finish.
    #[serde(default)]
    pub previous: Option<String>,
}

impl Installed {
    /// What is installed. A corrupt record reads as nothing here; every hook and action
    /// checks the file first (`charm::check_local_files`) and stops with its name instead.
    pub fn load() -> Option<Installed> {
        serde_json::from_slice(&std::fs::read(STATE_FILE).ok()?).ok()
    }
    pub fn save(&self) -> Result<()> {
        let p = Path::new(STATE_FILE);
        std::fs::create_dir_all(p.parent().unwrap()).map_err(io("creating /var/lib/etcd-charm"))?;
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())
            .map_err(io(STATE_FILE))?;
        std::fs::rename(&tmp, p).map_err(io(STATE_FILE))
    }
    /// The version this record names (what its binaries run and its config follows).
    pub fn version(&self) -> anyhow::Result<Version> {
        Version::parse(&self.version).ok_or_else(|| {
            anyhow::anyhow!(
                "the install record names no etcd version ({:?})",
                self.version
            )
        })
    }

    pub fn etcd(&self) -> String {
        format!("{}/etcd", self.bin_dir)
    }
    pub fn etcdctl(&self) -> String {
        format!("{}/etcdctl", self.bin_dir)
    }
    /// The Debian version of the installed etcd-server package: as recorded, or asked of
    /// dpkg for a record written before the charm kept it.
    pub fn package_version(&self) -> Result<String> {
        match &self.package {
            Some(p) => Ok(p.clone()),
            None => installed_package_version(),
        }
    }
    /// What an operator does after a version failed here and was rolled back.
    pub fn retry_hint(&self) -> &'static str {
        match self.delivery {
            Delivery::Deb => "publish a working package and run upgrade-package again",
            _ => "attach a working etcd resource",
        }
    }
    /// `etcdutl` (3.5+) or None (3.4 has only etcdctl for offline work).
    pub fn etcdutl(&self) -> Option<String> {
        let p = format!("{}/etcdutl", self.bin_dir);
        Path::new(&p).exists().then_some(p)
    }
}

/// Identifies a file cheaply (path, size, modification time) so every hook need not rehash it.
fn stamp(p: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some(format!(
        "{}|{}|{}.{}",
        p.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

pub fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `etcd --version` → "3.5.1".
pub fn binary_version(etcd: &Path) -> Result<String> {
    let out = Command::new(etcd)
        .arg("--version")
        .output()
        .map_err(|e| InstallError::Bad(format!("{} does not run: {e}", etcd.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("etcd Version:")
                .map(|v| v.trim().to_string())
        })
        .ok_or_else(|| {
            InstallError::Bad(format!(
                "{} is not an etcd binary (no version in `etcd --version`)",
                etcd.display()
            ))
        })?;
    check_version_text(&v).map_err(|e| InstallError::Bad(format!("{}: {e}", etcd.display())))?;
    Ok(v)
}

/// The version an etcd binary prints names a directory under /opt/etcd and is compared as a
/// version: it must be one (`3.5.16`, `3.6.0-rc.1`), never a path (`../x`, `/etc`).
pub fn check_version_text(v: &str) -> std::result::Result<(), String> {
    let plain = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
        && !v.starts_with(['.', '-']);
    if !plain || crate::version::Version::parse(v).is_none() {
        return Err(format!(
            "its `etcd --version` says {:?}, which is not an etcd version",
            hostkit::text::bounded(v, 80)
        ));
    }
    Ok(())
}

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

/// Finds the directory holding `etcd` in an unpacked release (top level or one dir down).
fn find_bin_dir(root: &Path) -> Option<PathBuf> {
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

/// Installs an upstream release tarball. `expected_sha256` (config `archive_sha256`) is
/// checked first. Re-installing the same tarball is a no-op.
/// With `defer_switch` (a running member's upgrade) the new binaries are unpacked and
/// verified but `current` keeps pointing at the running ones until `switch_staged`, in this
/// unit's rolling turn: a restart out of turn (a crash, systemd) runs what ran before.
/// Refuses a version step etcd does not support (a downgrade, a skipped minor, a minor
/// from too early a patch release) from what runs on this unit now, before anything of the
/// new version is put in place.
fn refuse_bad_step(running_bin: &Path, version: &str, label: &str) -> Result<()> {
    if !running_bin.exists() {
        return Ok(());
    }
    let running = binary_version(running_bin)?;
    let (Some(from), Some(to)) = (Version::parse(&running), Version::parse(version)) else {
        return Err(InstallError::Bad(format!(
            "{label}: cannot compare etcd versions {running:?} and {version:?}"
        )));
    };
    check_step(from, to).map_err(|why| InstallError::Bad(format!("{label} refused: {why}")))
}

pub fn install_archive(
    tarball: &Path,
    expected_sha256: Option<&str>,
    label: &str,
    defer_switch: bool,
) -> Result<Installed> {
    // The same file as last time (and the same expected sha256): already verified and installed.
    let stamp = stamp(tarball);
    if let Some(cur) = Installed::load() {
        let expected_ok = expected_sha256
            .map(|w| cur.source_sha256.as_deref() == Some(w))
            .unwrap_or(true);
        if cur.delivery == Delivery::Archive
            && stamp.is_some()
            && cur.source_stamp == stamp
            && expected_ok
            && Path::new(&cur.etcd()).exists()
        {
            return Ok(cur);
        }
    }
    let sha = sha256_file(tarball).map_err(io(format!("reading {label}")))?;
    if let Some(want) = expected_sha256 {
        if want != sha {
            return Err(InstallError::Bad(format!("{label}: sha256 {sha} does not match archive_sha256 {want}; attach the right tarball or fix the config")));
        }
    }
    if let Some(mut cur) = Installed::load() {
        if cur.delivery == Delivery::Archive
            && cur.source_sha256.as_deref() == Some(sha.as_str())
            && Path::new(&cur.etcd()).exists()
        {
            cur.source_stamp = stamp;
            cur.save()?;
            return Ok(cur);
        }
    }
    std::fs::create_dir_all(OPT_DIR).map_err(io(OPT_DIR))?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(OPT_DIR)
        .map_err(io("staging dir"))?;
    unpack_safely(tarball, staging.path()).map_err(|e| {
        InstallError::Bad(format!(
            "{label} refused: {e}; attach an upstream etcd-vX.Y.Z-linux-amd64.tar.gz"
        ))
    })?;
    let bin = find_bin_dir(staging.path()).ok_or_else(|| InstallError::Bad(format!("{label} is not an etcd release tarball (no etcd binary inside); attach an upstream etcd-vX.Y.Z-linux-amd64.tar.gz")))?;
    if !bin.join("etcdctl").is_file() {
        return Err(InstallError::Bad(format!(
            "{label} has no etcdctl; attach a complete upstream etcd release tarball"
        )));
    }
    let version = binary_version(&bin.join("etcd"))?;
    // Every path, the install action's too (M6): a downgrade or a skipped minor is refused
    // before anything of it is put in place.
    refuse_bad_step(&Path::new(OPT_DIR).join("current/etcd"), &version, label)?;
    let final_dir = Path::new(OPT_DIR).join(&version);
    // Move the verified binaries into place; an older copy of the same version is set aside
    // and removed only once the new one is in place.
    let aside = Path::new(OPT_DIR).join(format!(".{version}.old"));
    let _ = std::fs::remove_dir_all(&aside);
    if final_dir.exists() {
        std::fs::rename(&final_dir, &aside).map_err(io("setting the old version aside"))?;
    }
    std::fs::rename(&bin, &final_dir).map_err(io(format!(
        "moving etcd {version} into {}",
        final_dir.display()
    )))?;
    let running = std::fs::read_link(Path::new(OPT_DIR).join("current")).ok();
    let staged = if defer_switch && running.as_deref().is_some_and(|r| r != final_dir) {
        Some(final_dir.display().to_string())
    } else {
        switch_current(&final_dir)?;
        None
    };
    let _ = std::fs::remove_dir_all(&aside);
    let inst = Installed {
        delivery: Delivery::Archive,
        version,
        bin_dir: format!("{OPT_DIR}/current"),
        source_sha256: Some(sha),
        source_stamp: stamp,
        staged,
        rolled_back: None,
        package: None,
        previous: None,
    };
    inst.save()?;
    Ok(inst)
}

/// Switches to the staged binaries (this unit's turn): `current` moves to the staged
/// directory, or the staged Debian packages are installed. What ran before is recorded
/// first (`previous`), so a crash at any point leaves the way back; switching again after
/// such a crash keeps that record. Nothing staged: nothing happens.
pub fn switch_staged(inst: &mut Installed) -> Result<()> {
    let Some(dir) = inst.staged.clone() else {
        return Ok(());
    };
    if inst.previous.is_none() {
        inst.previous = match inst.delivery {
            Delivery::Deb => Some(
                Path::new(DEBS_DIR)
                    .join(inst.package_version()?)
                    .display()
                    .to_string(),
            ),
            _ => std::fs::read_link(Path::new(OPT_DIR).join("current"))
                .ok()
                .map(|p| p.display().to_string()),
        };
        inst.save()?;
    }
    match inst.delivery {
        Delivery::Deb => {
            install_debs(Path::new(&dir))?;
            inst.package = Some(package_of(Path::new(&dir)));
        }
        _ => switch_current(Path::new(&dir))?,
    }
    inst.staged = None;
    inst.save()
}

/// Keeps the switched-in binaries: they passed their health check.
pub fn commit(inst: &mut Installed) -> Result<()> {
    if inst.previous.take().is_some() {
        inst.save()?;
    }
    Ok(())
}

/// Puts back what ran before (`previous`) after the new binaries failed their health
/// check, and remembers what failed so it is not tried again until a new resource (or a
/// new package target). Nothing recorded: nothing to go back to (an error).
pub fn roll_back(inst: &mut Installed) -> Result<()> {
    let Some(before) = inst.previous.clone() else {
        return Err(InstallError::Bad(
            "no earlier etcd is recorded on this unit to roll back to".into(),
        ));
    };
    let before = Path::new(&before);
    match inst.delivery {
        Delivery::Deb => {
            install_debs(before)?;
            inst.rolled_back = inst.package.replace(package_of(before));
            inst.version = binary_version(Path::new("/usr/bin/etcd"))?;
        }
        _ => {
            switch_current(before)?;
            inst.rolled_back = Some(inst.version.clone());
            inst.version = binary_version(&before.join("etcd"))?;
        }
    }
    inst.previous = None;
    inst.staged = None;
    inst.save()
}

/// Points /opt/etcd/current at `dir` atomically (a new link renamed over the old one).
pub fn switch_current(dir: &Path) -> Result<()> {
    let link = Path::new(OPT_DIR).join("current");
    let tmp = Path::new(OPT_DIR).join(".current.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(dir, &tmp).map_err(io("creating the current link"))?;
    std::fs::rename(&tmp, &link).map_err(io("switching the current link"))
}

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
    let got = hex(&h.finalize());
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
const DOWNLOAD_MARGIN: u64 = 64 << 20;

fn too_big(url: &str, bytes: u64, free: u64) -> InstallError {
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

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| InstallError::Failed(format!("cannot run {cmd}: {e}")))?;
    if !out.status.success() {
        return Err(InstallError::Failed(format!(
            "{cmd} {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The distro package. The package's own default instance is stopped: the charm owns the
/// data dir and the service. The packages are held (an `apt upgrade` on the machine never
/// swaps the binaries under a running member) and their .deb files kept: an upgrade's
/// rollback installs them again; a failure to keep them is no failure, `warn` is told.
pub fn install_deb(warn: &mut dyn FnMut(&str)) -> Result<Installed> {
    if !Path::new("/usr/bin/etcd").exists() || !Path::new("/usr/bin/etcdctl").exists() {
        run(
            "apt-get",
            &[
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "etcd-server",
                "etcd-client",
            ],
        )
        .map_err(|e| {
            InstallError::Bad(format!("installing the etcd-server package failed: {e}"))
        })?;
    }
    stop_package_instance();
    let version = binary_version(Path::new("/usr/bin/etcd"))?;
    let package = installed_package_version()?;
    hold_packages()?;
    if let Err(e) = keep_debs(&package) {
        warn(&format!("cannot keep the etcd-server {package} packages for a later rollback (an upgrade fetches them again): {e}"));
    }
    let inst = Installed {
        delivery: Delivery::Deb,
        version,
        bin_dir: "/usr/bin".into(),
        source_sha256: None,
        source_stamp: None,
        staged: None,
        rolled_back: None,
        package: Some(package),
        previous: None,
    };
    inst.save()?;
    Ok(inst)
}

/// Where the .deb files of the installed package version and of a staged one are kept.
pub const DEBS_DIR: &str = "/var/lib/etcd-charm/debs";
const PACKAGES: [&str; 2] = ["etcd-server", "etcd-client"];

/// Checks a Debian package version given from outside (the `upgrade-package` action, the
/// leader's `package-target`): it names files and goes to apt as `etcd-server=<version>`.
pub fn valid_package_version(v: &str) -> std::result::Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a Debian package version (like 3.5.16-4, as `apt-cache policy etcd-server` lists them)"
        ))
    }
}

/// The Debian version of the installed etcd-server package.
pub fn installed_package_version() -> Result<String> {
    let v = run("dpkg-query", &["-W", "-f", "${Version}", "etcd-server"])?;
    let v = v.trim().to_string();
    valid_package_version(&v).map_err(|e| {
        InstallError::Failed(format!("dpkg-query names the installed etcd-server {e}"))
    })?;
    Ok(v)
}

fn hold_packages() -> Result<()> {
    run("apt-mark", &["hold", PACKAGES[0], PACKAGES[1]]).map(|_| ())
}

/// The package version a kept directory holds (its name).
fn package_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The kept .deb files of one package version, when both are there.
fn kept_debs(dir: &Path) -> Option<Vec<PathBuf>> {
    let files: Vec<PathBuf> = PACKAGES
        .iter()
        .filter_map(|p| {
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|f| {
                    let n = f.file_name().unwrap_or_default().to_string_lossy();
                    n.starts_with(&format!("{p}_")) && n.ends_with(".deb")
                })
        })
        .collect();
    (files.len() == PACKAGES.len()).then_some(files)
}

/// Fetches the etcd-server and etcd-client packages of `version` from the machine's apt
/// sources into DEBS_DIR/<version>/ (unless they are there), each checked to be the package
/// and version asked for before the directory is renamed into place.
pub fn keep_debs(version: &str) -> Result<PathBuf> {
    valid_package_version(version).map_err(InstallError::Bad)?;
    let dir = Path::new(DEBS_DIR).join(version);
    if kept_debs(&dir).is_some() {
        return Ok(dir);
    }
    std::fs::create_dir_all(DEBS_DIR).map_err(io(DEBS_DIR))?;
    let staging = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(DEBS_DIR)
        .map_err(io("a download dir"))?;
    let wanted: Vec<String> = PACKAGES.iter().map(|p| format!("{p}={version}")).collect();
    let out = Command::new("apt-get")
        .args(["download", "-q"])
        .args(&wanted)
        .current_dir(staging.path())
        .output()
        .map_err(|e| InstallError::Failed(format!("cannot run apt-get download: {e}")))?;
    if !out.status.success() {
        return Err(InstallError::Bad(format!(
            "the apt sources have no etcd-server/etcd-client {version} ({}); publish both \
             packages in the machines' apt mirror",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let files = kept_debs(staging.path()).ok_or_else(|| {
        InstallError::Failed(format!(
            "apt-get download left no etcd packages of {version}"
        ))
    })?;
    for (f, p) in files.iter().zip(PACKAGES) {
        let fields = run(
            "dpkg-deb",
            &["-f", &f.display().to_string(), "Package", "Version"],
        )?;
        let want = format!("Package: {p}\nVersion: {version}");
        if fields.trim() != want {
            return Err(InstallError::Bad(format!(
                "{} is not {p} {version} ({})",
                f.display(),
                fields.trim().replace('\n', ", ")
            )));
        }
    }
    let _ = std::fs::remove_dir_all(&dir); // an incomplete earlier copy
    std::fs::rename(staging.keep(), &dir).map_err(io(format!("keeping {}", dir.display())))?;
    Ok(dir)
}

/// Reads the apt sources again and answers the etcd-server version they offer: `requested`
/// if they have it, else apt's candidate (the newest).
pub fn package_in_sources(requested: Option<&str>) -> Result<String> {
    if let Some(v) = requested {
        valid_package_version(v).map_err(InstallError::Bad)?;
    }
    run("apt-get", &["update", "-qq"])?;
    match requested {
        Some(v) => {
            // `apt-cache show pkg=version` succeeds for a version it does not have: madison
            // lists what the sources offer, one "package | version | source" line each.
            let offered = run("apt-cache", &["madison", "etcd-server"])?;
            if !offered
                .lines()
                .any(|l| l.split('|').nth(1).map(str::trim) == Some(v))
            {
                return Err(InstallError::Bad(format!(
                    "the apt sources have no etcd-server {v}; publish it in the machines' apt mirror (`apt-cache madison etcd-server` lists what they have)"
                )));
            }
            Ok(v.to_string())
        }
        None => {
            let policy = run("apt-cache", &["policy", "etcd-server"])?;
            let candidate = policy
                .lines()
                .find_map(|l| l.trim().strip_prefix("Candidate:"))
                .map(str::trim)
                .filter(|c| *c != "(none)")
                .ok_or_else(|| {
                    InstallError::Bad(
                        "the apt sources offer no etcd-server package; publish one in the machines' apt mirror".into(),
                    )
                })?;
            valid_package_version(candidate).map_err(InstallError::Failed)?;
            Ok(candidate.to_string())
        }
    }
}

/// Installs kept packages (this unit's turn, or its rollback) and holds them again.
fn install_debs(dir: &Path) -> Result<()> {
    let files = kept_debs(dir)
        .ok_or_else(|| InstallError::Failed(format!("{} holds no etcd packages", dir.display())))?;
    let mut args = vec!["-i".to_string(), "--force-confold".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The package's scripts would restart etcd.service (ours) with the old config before the
    // turn writes the new one: policy-rc.d denies them while dpkg runs; the turn restarts.
    let policy = Path::new(POLICY_RC_D);
    let ours = match std::fs::read_to_string(policy) {
        Ok(text) => text.contains(POLICY_MARK),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io(POLICY_RC_D)(e)),
    };
    if ours {
        hostkit::fs::write_file(
            policy,
            format!("#!/bin/sh\n# {POLICY_MARK}\nexit 101\n").as_bytes(),
            0o755,
        )
        .map_err(|e| InstallError::Failed(format!("writing {POLICY_RC_D}: {e}")))?;
    }
    let installed = run("dpkg", &args);
    if ours {
        std::fs::remove_file(policy).map_err(io(POLICY_RC_D))?;
    }
    installed?;
    hold_packages()
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_MARK: &str = "etcd-charm: etcd restarts in the unit's rolling turn";

/// Stages the Debian packages of `target` (the leader's `package-target`) for this unit's
/// rolling turn: both kept beside the running version's (which a rollback needs), the new
/// etcd's version read from the package and checked as a step from what runs, before
/// anything is installed. Nothing to do when `target` is installed, staged, or is what
/// failed here before.
pub fn stage_deb(cur: &Installed, target: &str) -> Result<Installed> {
    valid_package_version(target).map_err(|e| InstallError::Bad(format!("package-target: {e}")))?;
    let staged_dir = Path::new(DEBS_DIR).join(target);
    if cur.package.as_deref() == Some(target)
        || cur.rolled_back.as_deref() == Some(target)
        || cur.staged.as_deref() == Some(&*staged_dir.to_string_lossy())
    {
        return Ok(cur.clone());
    }
    let running = cur.package_version()?;
    if kept_debs(&staged_dir).is_none() || kept_debs(&Path::new(DEBS_DIR).join(&running)).is_none()
    {
        run("apt-get", &["update", "-qq"])?;
    }
    keep_debs(&running).map_err(|e| {
        InstallError::Bad(format!(
            "cannot keep the running etcd-server {running} for a rollback: {e}"
        ))
    })?;
    let dir = keep_debs(target)?;
    let unpacked = tempfile::Builder::new()
        .prefix(".unpacked-")
        .tempdir_in(DEBS_DIR)
        .map_err(io("an unpack dir"))?;
    let server = kept_debs(&dir)
        .and_then(|f| f.into_iter().next())
        .ok_or_else(|| InstallError::Failed(format!("{} holds no etcd packages", dir.display())))?;
    run(
        "dpkg-deb",
        &[
            "-x",
            &server.display().to_string(),
            &unpacked.path().display().to_string(),
        ],
    )?;
    let version = binary_version(&unpacked.path().join("usr/bin/etcd"))?;
    let label = format!("etcd-server {target} (etcd {version})");
    refuse_bad_step(Path::new("/usr/bin/etcd"), &version, &label)?;
    let mut inst = cur.clone();
    inst.version = version;
    inst.package = Some(running);
    inst.staged = Some(dir.display().to_string());
    // A new target after a failed one: the roll may go on.
    inst.rolled_back = None;
    inst.save()?;
    Ok(inst)
}

/// Stops the Debian package's default instance (systemd unit, or a stray process of it).
pub fn stop_package_instance() {
    if hostkit::systemd::systemd_present() {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "etcd.service"])
            .output();
    }
    for pid in hostkit::process::pids_of_exe("/usr/bin/etcd") {
        if !crate::service::is_ours(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGTERM,
            );
        }
    }
}

pub fn snapd_present() -> bool {
    Path::new("/run/snapd.socket").exists() && run_bounded("snap", &["version"], SNAP_QUICK).is_ok()
}

/// How long a snap call may take: quick queries, and installs (a sideload unpacks and
/// mounts; a store install downloads). Every snap call is bounded: snapd retries an
/// unreachable store for a long time.
const SNAP_QUICK: std::time::Duration = std::time::Duration::from_secs(30);
const SNAP_INSTALL: std::time::Duration = std::time::Duration::from_secs(300);
/// How long a failed store install is reported without asking the store again.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(600);

/// Is this file a snap (a squashfs image)? Recognised by content, whatever its name.
pub fn is_snap_file(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"hsqs")
        .unwrap_or(false)
}

/// Runs a command with a deadline; past it the command is killed and this is an error.
fn run_bounded(cmd: &str, args: &[&str], limit: std::time::Duration) -> Result<String> {
    use std::process::Stdio;
    let mut child = Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| InstallError::Failed(format!("cannot run {cmd}: {e}")))?;
    // Drain the pipes on threads so a chatty command cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = vec![];
            // The output only goes into messages: a read error leaves what was read.
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if std::time::Instant::now() > deadline => {
                // Past its deadline: the error below is the result; a kill that fails
                // means it has just exited, and wait only reaps it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(InstallError::Failed(format!(
                    "{cmd} {} did not finish within {} s",
                    args.join(" "),
                    limit.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => return Err(InstallError::Failed(format!("waiting for {cmd}: {e}"))),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(InstallError::Failed(format!(
            "{cmd} {} failed: {}",
            args.join(" "),
            stderr.trim()
        )));
    }
    Ok(stdout)
}

/// The snap's commands as the classic charm uses them: /snap/bin/etcd and
/// /snap/bin/etcdctl (an alias of etcd.etcdctl, which a sideloaded snap does not get).
fn snap_installed(source_stamp: Option<String>) -> Result<Installed> {
    run_bounded("snap", &["alias", "etcd.etcdctl", "etcdctl"], SNAP_QUICK)?;
    let version = binary_version(Path::new("/snap/bin/etcd"))?;
    let inst = Installed {
        delivery: Delivery::Snap,
        version,
        bin_dir: "/snap/bin".into(),
        source_sha256: None,
        source_stamp,
        staged: None,
        rolled_back: None,
        package: None,
        previous: None,
    };
    inst.save()?;
    Ok(inst)
}

/// The snap from the store (where snapd runs and the store can be reached).
pub fn install_snap(channel: &str) -> Result<Installed> {
    let ch = if channel == "auto" {
        "3.5/stable"
    } else {
        channel
    };
    // snapd retries an unreachable store for about 30 s: after a failure, the hooks of the
    // next few minutes report it again instead of waiting once more (a new channel retries).
    let marker = Path::new(STATE_FILE).with_file_name("snap-store-failure");
    let recent = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < STORE_RETRY);
    if recent {
        if let Ok(saved) = std::fs::read_to_string(&marker) {
            if let Some(msg) = saved.strip_prefix(&format!("{ch}\n")) {
                return Err(InstallError::Bad(msg.to_string()));
            }
        }
    }
    if let Err(e) = run_bounded("snap", &["install", "etcd", "--channel", ch], SNAP_INSTALL) {
        let msg = format!(
            "cannot install the etcd snap from the store (channel {ch}): {e}; without access to the store, attach etcd.snap as the etcd resource (juju attach-resource etcd etcd=./etcd.snap)"
        );
        // Without the marker the next hook only asks the store again (slower, not wrong).
        let _ = std::fs::create_dir_all(marker.parent().unwrap_or(Path::new("/")));
        let _ = std::fs::write(&marker, format!("{ch}\n{msg}"));
        return Err(InstallError::Bad(msg));
    }
    // Read only while nothing is installed, which is no longer the case.
    let _ = std::fs::remove_file(&marker);
    snap_installed(None)
}

/// A snap attached as the `etcd` resource, installed with `--dangerous` as the classic
/// charm's "limited egress" instructions do (`--classic` when the snap asks for it).
/// The same file as last time is not installed again.
pub fn install_snap_file(snap: &Path) -> Result<Installed> {
    let stamp = stamp(snap);
    if let Some(cur) = Installed::load() {
        if cur.delivery == Delivery::Snap && stamp.is_some() && cur.source_stamp == stamp {
            return Ok(cur);
        }
    }
    let file = snap.to_string_lossy();
    let meta = run_bounded("unsquashfs", &["-cat", &file, "meta/snap.yaml"], SNAP_QUICK)
        .map_err(|e| InstallError::Bad(format!("the etcd resource is not a readable snap ({e}); attach an etcd snap or release tarball")))?;
    let meta: serde_yaml::Value = serde_yaml::from_str(&meta).map_err(|e| {
        InstallError::Bad(format!(
            "the etcd resource's meta/snap.yaml is not YAML ({e}); attach an etcd snap"
        ))
    })?;
    if meta.get("name").and_then(|v| v.as_str()) != Some("etcd") {
        return Err(InstallError::Bad(format!(
            "the etcd resource is the snap {:?}, not etcd; attach an etcd snap",
            meta.get("name").and_then(|v| v.as_str()).unwrap_or("?")
        )));
    }
    let mut args = vec!["install", "--dangerous"];
    if meta.get("confinement").and_then(|v| v.as_str()) == Some("classic") {
        args.push("--classic");
    }
    args.push(&file);
    run_bounded("snap", &args, SNAP_INSTALL)
        .map_err(|e| InstallError::Bad(format!("installing the attached etcd snap failed: {e}")))?;
    snap_installed(stamp)
}

/// The previous revision of the snap again (after a failed upgrade).
pub fn revert_snap() -> Result<Installed> {
    run_bounded("snap", &["revert", "etcd"], SNAP_INSTALL)?;
    let stamp = Installed::load().and_then(|i| i.source_stamp);
    snap_installed(stamp)
}

pub fn set_snap_refresh_timer(timer: &str) -> Result<()> {
    run_bounded(
        "snap",
        &["set", "system", &format!("refresh.timer={timer}")],
        SNAP_QUICK,
    )
    .map(|_| ())
    .map_err(|e| InstallError::Bad(format!("snapd refused snapd_refresh={timer:?}: {e}")))
}

#[cfg(test)]
mod tests {
    /// L: the printed version is used as a directory name: a path in it is refused.
    #[test]
    fn a_version_that_is_a_path_is_refused() {
        for ok in ["3.5.16", "3.6.0-rc.1", "3.4.23+deb12"] {
            assert!(super::check_version_text(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../../etc",
            "/etc",
            "3.5.1/../../x",
            "",
            ".3.5",
            "3.5.1 x",
            "banana",
        ] {
            assert!(super::check_version_text(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    fn tarball(entries: &[(&str, &[u8], tar::EntryType)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(f.reopen().unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
                h.set_size(0);
            }
            // write the name raw so unsafe names survive into the archive
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        f
    }

    #[test]
    fn package_versions_from_outside_are_checked() {
        for ok in ["3.5.16-4", "3.4.23-4+b4", "1:3.5.30-2~bpo12+1"] {
            assert_eq!(valid_package_version(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "latest",
            "3.5;rm -rf /",
            "../3.5",
            "3.5 16",
            &"9".repeat(65),
        ] {
            let e = valid_package_version(bad).unwrap_err();
            assert!(e.contains("is not a Debian package version"), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_unsafe_entries() {
        let d = tempfile::tempdir().unwrap();
        for (name, kind, why) in [
            ("../evil", tar::EntryType::Regular, "'..'"),
            ("/etc/evil", tar::EntryType::Regular, "absolute"),
            ("etcd-v3/link", tar::EntryType::Symlink, "Symlink"),
            ("dev", tar::EntryType::Char, "Char"),
        ] {
            let t = tarball(&[(name, b"x", kind)]);
            let err = unpack_safely(t.path(), d.path()).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn refuses_corrupt_archives() {
        let t = tarball(&[("etcd-v3/etcd", &vec![7u8; 100_000], tar::EntryType::Regular)]);
        let mut bytes = std::fs::read(t.path()).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        let bad = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(bad.path(), &bytes).unwrap();
        let d = tempfile::tempdir().unwrap();
        assert!(unpack_safely(bad.path(), d.path()).is_err());
        let truncated = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(truncated.path(), &std::fs::read(t.path()).unwrap()[..200]).unwrap();
        assert!(unpack_safely(truncated.path(), d.path()).is_err());
    }

    #[test]
    fn a_flipped_byte_in_stored_data_is_caught_by_the_gzip_crc() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("stored.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&f).unwrap(),
            flate2::Compression::none(),
        );
        let mut b = tar::Builder::new(gz);
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "db", data.as_slice()).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let mut bytes = std::fs::read(&f).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&f, &bytes).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        assert!(unpack_safely(&f, &out).unwrap_err().contains("damaged"));
    }

    #[test]
    fn unpacks_a_good_archive() {
        let t = tarball(&[
            ("etcd-v3/etcd", b"bin", tar::EntryType::Regular),
            ("etcd-v3/etcdctl", b"ctl", tar::EntryType::Regular),
        ]);
        let d = tempfile::tempdir().unwrap();
        unpack_safely(t.path(), d.path()).unwrap();
        assert_eq!(find_bin_dir(d.path()).unwrap(), d.path().join("etcd-v3"));
    }

    #[test]
    fn a_snapshot_may_be_as_large_as_the_free_space_and_no_larger() {
        let t = tarball(&[("db", &[7u8; 4096], tar::EntryType::Regular)]);
        let d = tempfile::tempdir().unwrap();
        let err = unpack_safely_with(t.path(), d.path(), Room::Free { bytes: 4095 }, |_, _| {})
            .unwrap_err();
        assert!(err.contains("make room"), "{err}");
        assert!(
            !d.path().join("db").exists(),
            "nothing written when it cannot fit"
        );
        unpack_safely_with(t.path(), d.path(), Room::Free { bytes: 4096 }, |_, _| {}).unwrap();
        assert_eq!(std::fs::read(d.path().join("db")).unwrap().len(), 4096);
    }
}
