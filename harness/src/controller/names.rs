//! Names and places: the Juju version told to charms, defaults from the environment, where the controller keeps a model's files, unit and machine names, durations in Go's syntax, and the poison-tolerant lock.

use crate::state::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub const JUJU_VERSION: &str = "3.6.8";

/// Machines boot systemd unless the model says otherwise: a cloud image does, and the
/// charm's code paths for systemd are the ones operators run.
pub const DEFAULT_MACHINE_KIND: crate::state::Kind = crate::state::Kind::Systemd;

/// Snaps a `snapd` machine gets installed at its first boot, as a cloud image's seed would
/// hold them: the `.snap` files of the directory named by the controller's environment
/// `CHARM_HARNESS_SNAP_SEED` (bases first), installed with `--dangerous` as the store is
/// out of reach.
pub fn snap_seed() -> Option<PathBuf> {
    std::env::var_os("CHARM_HARNESS_SNAP_SEED")
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
}

/// The apt mirror machines use when the model does not set `apt-mirror`: the controller's
/// environment `CHARM_HARNESS_APT_MIRROR` (a `file:` directory with a flat Debian archive,
/// or an http URL on the model's bridge), else none (machines keep the host's sources).
pub fn default_apt_mirror() -> String {
    std::env::var("CHARM_HARNESS_APT_MIRROR").unwrap_or_default()
}

/// Locks a mutex even if a thread panicked while holding it: one failed request must not
/// make every later one panic too (the data is consistent between mutations, as each
/// mutation is a plain function of the world).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn state_path(home: &Path) -> PathBuf {
    home.join("state.json")
}

pub fn model_dir(home: &Path, model: &str) -> PathBuf {
    home.join("models").join(model)
}

pub fn unit_dir_name(unit: &str) -> String {
    format!("unit-{}", unit.replace('/', "-"))
}

pub fn agent_dir_in_machine(unit: &str) -> String {
    format!("/var/lib/juju/agents/{}", unit_dir_name(unit))
}

pub fn charm_dir_in_machine(unit: &str) -> String {
    format!("{}/charm", agent_dir_in_machine(unit))
}

pub fn unit_number(unit: &str) -> u32 {
    unit.rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub fn app_of(unit: &str) -> &str {
    unit.split('/').next().unwrap_or(unit)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses Go-style durations as Juju's model config takes them: "5m", "10s", "1h30m", "500ms".
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// Where storage `id` is in its unit's machine: a `block` store's device while attached
/// (`/dev/loop3`, empty before), a filesystem's directory.
pub fn storage_location(def: &StorageDef, id: &str, vol: Option<&Volume>) -> String {
    if def.kind == "block" {
        return vol
            .and_then(|v| v.device.as_deref())
            .map_or(String::new(), |d| format!("/dev/{d}"));
    }
    match &def.location {
        Some(l) => l.clone(),
        None => format!("/var/lib/juju/storage/{id}"),
    }
}

/// Removes one of the controller's directory trees; one already gone is fine, any other
/// failure goes to controller.log (what stays is then also seen by the host's leak check).
pub(crate) fn remove_tree(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("cannot remove {}: {e}", dir.display())
        }
        _ => {}
    }
}
