//! The Debian package delivery: apt, dpkg, held packages, kept .deb files for a rollback, staging a newer package.

use super::common::*;
use super::record::*;
use std::path::{Path, PathBuf};
use std::process::Command;

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

pub(crate) const PACKAGES: [&str; 2] = ["etcd-server", "etcd-client"];

pub(crate) fn hold_packages() -> Result<()> {
    run("apt-mark", &["hold", PACKAGES[0], PACKAGES[1]]).map(|_| ())
}

/// The package version a kept directory holds (its name).
pub(crate) fn package_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The kept .deb files of one package version, when both are there.
pub(crate) fn kept_debs(dir: &Path) -> Option<Vec<PathBuf>> {
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
pub(crate) fn install_debs(dir: &Path) -> Result<()> {
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
        .map_err(|e| InstallError::Failed(format!("writing {e}")))?;
    }
    let installed = run("dpkg", &args);
    if ours {
        std::fs::remove_file(policy).map_err(io(POLICY_RC_D))?;
    }
    installed?;
    hold_packages()
}

pub(crate) const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub(crate) const POLICY_MARK: &str = "etcd-charm: etcd restarts in the unit's rolling turn";

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
