//! The snap delivery: snapd, the store with a deadline, a sideloaded .snap, revert, the refresh timer.

use super::common::*;
use super::record::*;
use std::io::Read;
use std::path::Path;

pub fn snapd_present() -> bool {
    Path::new("/run/snapd.socket").exists() && run_bounded("snap", &["version"], SNAP_QUICK).is_ok()
}

/// How long a snap call may take: quick queries, and installs (a sideload unpacks and
/// mounts; a store install downloads). Every snap call is bounded: snapd retries an
/// unreachable store for a long time.
pub(crate) const SNAP_QUICK: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) const SNAP_INSTALL: std::time::Duration = std::time::Duration::from_secs(300);

/// How long a failed store install is reported without asking the store again.
pub(crate) const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(600);

/// Is this file a snap (a squashfs image)? Recognised by content, whatever its name.
pub fn is_snap_file(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"hsqs")
        .unwrap_or(false)
}

/// The snap's commands as the classic charm uses them: /snap/bin/etcd and
/// /snap/bin/etcdctl (an alias of etcd.etcdctl, which a sideloaded snap does not get).
///
/// A snap whose `etcd` app is a daemon (the classic charm's snap: a wrapper that runs etcd
/// on the snap's own config file, whatever it is given) has its service stopped and
/// disabled, and this charm runs the snap's binary itself.
pub(crate) fn snap_installed(source_stamp: Option<String>) -> Result<Installed> {
    run_bounded("snap", &["alias", "etcd.etcdctl", "etcdctl"], SNAP_QUICK)?;
    let bin_dir = if etcd_app_is_daemon()? {
        disable_snap_daemon()?;
        CLASSIC_SNAP_BIN
    } else {
        "/snap/bin"
    };
    record_snap(bin_dir, source_stamp)
}

/// The install record of the snap delivery whose binaries are in `bin_dir`.
fn record_snap(bin_dir: &str, source_stamp: Option<String>) -> Result<Installed> {
    let version = binary_version(&Path::new(bin_dir).join("etcd"))?;
    let inst = Installed {
        delivery: Delivery::Snap,
        version,
        bin_dir: bin_dir.into(),
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

/// Where the classic charm's snap keeps the binaries: its daemon app runs a wrapper on the
/// snap's own config file, so this charm runs the binary itself.
pub const CLASSIC_SNAP_BIN: &str = "/snap/etcd/current/bin";

/// The `etcd` snap a classic charm installed, taken as this charm's snap delivery: the
/// binaries of the snap's current revision, the `etcd` resource it came from (`resource`,
/// recorded so the same file is never installed again, which would copy the data of the
/// revision into a new one). Nothing is installed or refreshed here.
pub fn adopt_snap(resource: Option<&Path>) -> Result<Installed> {
    record_snap(CLASSIC_SNAP_BIN, resource.and_then(stamp))
}

/// The snap's own `etcd` daemon stopped and disabled (`snap stop --disable` holds across
/// refreshes and reboots): this charm's `etcd.service` runs the snap's binary instead.
pub fn disable_snap_daemon() -> Result<()> {
    run_bounded("snap", &["stop", "--disable", "etcd.etcd"], SNAP_QUICK).map(|_| ())
}

/// Whether the installed etcd snap's `etcd` app is a daemon (its meta/snap.yaml says so).
fn etcd_app_is_daemon() -> Result<bool> {
    let p = "/snap/etcd/current/meta/snap.yaml";
    let text = std::fs::read_to_string(p).map_err(io(format!("reading {p}")))?;
    let meta: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| InstallError::Failed(format!("{p} is not YAML: {e}")))?;
    Ok(meta
        .get("apps")
        .and_then(|a| a.get("etcd"))
        .and_then(|e| e.get("daemon"))
        .is_some())
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

/// The etcd snap's current revision (snapd's `/snap/etcd/current` link), if it is installed.
pub fn snap_revision() -> Option<String> {
    std::fs::read_link("/snap/etcd/current")
        .ok()
        .map(|r| r.display().to_string())
}

/// The etcd snap at `revision` again (one snapd keeps: the one before a refresh).
pub fn revert_snap_to(revision: &str) -> Result<()> {
    run_bounded(
        "snap",
        &["revert", "etcd", "--revision", revision],
        SNAP_INSTALL,
    )
    .map(|_| ())
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
