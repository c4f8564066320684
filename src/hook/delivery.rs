//! Which etcd this unit runs: the delivery chosen from the attached resource, the config
//! and what is installed (docs/ARCHITECTURE.md §3.3), and snapd's refresh timer where snapd runs.

use crate::config::Config;
use crate::juju;
use crate::unit::LocalState;
use etcdkit::install::{self, Delivery, InstallError, Installed};
use std::path::Path;

/// Chooses and runs the delivery (docs/ARCHITECTURE.md §3.3), given the attached `etcd` resource's
/// path if there is one. Returns what is installed.
pub(crate) fn ensure_installed(
    cfg: &Config,
    resource: Option<&str>,
) -> std::result::Result<Installed, InstallError> {
    let current = Installed::load();
    let snap_resource = resource.is_some_and(|p| install::is_snap_file(Path::new(p)));
    if let Some(cur) = &current {
        if cur.delivery == Delivery::Deb && resource.is_some() {
            // Attaching a resource never migrates a Debian-package unit by itself.
            return Ok(cur.clone());
        }
        // A snap unit takes a newly attached snap through the install action, unit by unit;
        // an archive unit never switches to a snap by itself.
        if cur.delivery != Delivery::Archive
            || snap_resource
            || (resource.is_none() && cfg.archive_url.is_none())
        {
            return Ok(cur.clone());
        }
    }
    if let Some(path) = resource.filter(|_| snap_resource) {
        if !install::snapd_present() {
            return Err(InstallError::Bad("the etcd resource is a snap but snapd does not run on this machine: attach an etcd release tarball (etcd-vX.Y.Z-linux-amd64.tar.gz) instead".into()));
        }
        return install::install_snap_file(Path::new(path));
    }
    // A unit that runs archive binaries already switches to new ones in its rolling turn.
    let defer = current
        .as_ref()
        .is_some_and(|c| c.delivery == Delivery::Archive);
    if let Some(path) = resource {
        return install::install_archive(
            Path::new(&path),
            cfg.archive_sha256.as_deref(),
            "etcd resource",
            defer,
        );
    }
    if let (Some(url), Some(sha)) = (&cfg.archive_url, &cfg.archive_sha256) {
        let file = install::download(url, sha)?;
        return install::install_archive(&file, Some(sha), &format!("archive {url}"), defer);
    }
    if let Some(cur) = current {
        return Ok(cur);
    }
    if install::snapd_present() {
        return install::install_snap(&cfg.channel);
    }
    install::install_deb(&mut |m| crate::juju::log("WARNING", m))
}

/// Sets snapd's refresh.timer from `snapd_refresh` where snapd runs. "max" means monthly
/// (the last Friday), each unit in an hour of its own so units never refresh together.
/// Remembered once applied, so hooks do not ask snapd every time.
pub(crate) fn apply_snapd_refresh(
    st: &mut LocalState,
    cfg: &Config,
    unit: &str,
) -> std::result::Result<(), String> {
    let timer = if cfg.snapd_refresh == "max" {
        let hour = (unit_number(unit) * 7) % 24;
        format!("fri5,{hour:02}:00-{hour:02}:59")
    } else {
        cfg.snapd_refresh.clone()
    };
    if st.snapd_refresh.as_deref() == Some(timer.as_str()) || !install::snapd_present() {
        return Ok(());
    }
    install::set_snap_refresh_timer(&timer).map_err(|e| e.to_string())?;
    juju::log("INFO", &format!("snapd refresh.timer set to {timer}"));
    st.snapd_refresh = Some(timer);
    Ok(())
}

fn unit_number(unit: &str) -> u32 {
    unit.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
