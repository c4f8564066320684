//! Which unit the charm's files on this machine belong to. Juju places a new unit on a
//! machine that hosted a removed one (`--to`, manual and MAAS machines, co-location with
//! kubernetes-control-plane); the files the old unit left (its state saying "left", its
//! member's data, its keys and certificates) must not be taken for the new unit's own.
//!
//! `/var/lib/etcd-charm/unit` names the owner. A file written by a unit whose agent is gone
//! from the machine (`/var/lib/juju/agents/unit-<name>`, which Juju's deployer removes with
//! the unit) is the past: it is moved aside, never deleted, and the new unit starts afresh.
//! A file of a unit still deployed here is another etcd unit on the same machine: this
//! unit refuses to touch anything (both would need the same ports, directories and
//! service) and says so.

use crate::juju;
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};

pub const CHARM_DIR: &str = "/var/lib/etcd-charm";
const OWNER: &str = "/var/lib/etcd-charm/unit";
const AGENTS: &str = "/var/lib/juju/agents";

#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The charm's files on this machine are this unit's (now).
    Mine,
    /// Another unit, still deployed on this machine, owns them.
    Taken(String),
}

/// Claims the charm's files for `unit` (see the module's doc).
pub fn claim(unit: &str) -> Result<Claim> {
    claim_in(Path::new("/"), unit)
}

/// `claim` with every path under `root` (tests).
fn claim_in(root: &Path, unit: &str) -> Result<Claim> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let owner_file = at(OWNER);
    let owner = match std::fs::read_to_string(&owner_file) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No owner yet: a fresh machine, or files from a version of this charm that
            // did not name its unit (those are this unit's: unit names are never reused).
            write_owner(&owner_file, unit)?;
            return Ok(Claim::Mine);
        }
        Err(e) => bail!("cannot read {}: {e}", owner_file.display()),
    };
    if owner == unit {
        return Ok(Claim::Mine);
    }
    if !valid_unit_name(&owner) {
        bail!(
            "{} names no unit ({:?}); write this unit's name ({unit}) into it if the charm's \
             files here are its own",
            owner_file.display(),
            owner.chars().take(64).collect::<String>()
        );
    }
    if at(AGENTS).join(agent_dir_name(&owner)).exists() {
        return Ok(Claim::Taken(owner));
    }
    retire(root, &owner)?;
    write_owner(&owner_file, unit)?;
    Ok(Claim::Mine)
}

/// Juju's unit names: `<application>/<number>`, the application in lowercase letters,
/// digits and hyphens.
fn valid_unit_name(s: &str) -> bool {
    let Some((app, n)) = s.split_once('/') else {
        return false;
    };
    s.len() <= 64
        && !app.is_empty()
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

fn agent_dir_name(unit: &str) -> String {
    format!("unit-{}", unit.replace('/', "-"))
}

fn write_owner(file: &Path, unit: &str) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::pki::write_file(file, format!("{unit}\n").as_bytes(), 0o600)
        .context("writing the unit's claim")?;
    Ok(())
}

/// Puts a removed unit's files out of the way: its etcd stopped (its unit is gone; a
/// removal that ran no hooks leaves it running), its scheduled snapshots and Nagios checks
/// removed, and its state, configuration, keys and data renamed to `<path>.retired-<unit>`
/// (kept for the operator; the data is never deleted).
fn retire(root: &Path, owner: &str) -> Result<()> {
    let real = root == Path::new("/");
    juju::log(
        "INFO",
        &format!("this machine hosted {owner}, which is gone: its files are moved aside"),
    );
    if real {
        crate::ops::standdown::stand_down(
            &crate::ops::standdown::service(),
            &format!("{owner}'s "),
        )
        .with_context(|| format!("stopping the etcd of {owner}"))?;
    }
    let suffix = format!("retired-{}-{}", owner.replace('/', "-"), crate::unit::now());
    for dir in [
        etcdkit::DATA_DIR,
        etcdkit::SNAP_DATA_DIR,
        "/etc/etcd",
        CHARM_DIR,
    ] {
        let from = root.join(dir.trim_start_matches('/'));
        if !from.exists() {
            continue;
        }
        let to = PathBuf::from(format!("{}.{suffix}", from.display()));
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        juju::log(
            "INFO",
            &format!("moved {} to {}", from.display(), to.display()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, p: &str, text: &str) {
        let f = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    }

    #[test]
    fn a_fresh_machine_and_files_without_an_owner_become_this_units() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(claim_in(d.path(), "etcd/3").unwrap(), Claim::Mine);
        assert_eq!(
            std::fs::read_to_string(d.path().join("var/lib/etcd-charm/unit")).unwrap(),
            "etcd/3\n"
        );
        assert_eq!(claim_in(d.path(), "etcd/3").unwrap(), Claim::Mine);
    }

    #[test]
    fn a_removed_units_files_are_moved_aside_with_its_data_and_the_new_unit_starts_afresh() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "/var/lib/etcd-charm/unit", "etcd/0\n");
        touch(
            d.path(),
            "/var/lib/etcd-charm/state.json",
            "{\"left\": true}",
        );
        touch(d.path(), "/var/lib/etcd/member/wal/0.wal", "wal");
        touch(d.path(), "/etc/etcd/pki/ca.crt", "old ca");
        assert_eq!(claim_in(d.path(), "etcd/3").unwrap(), Claim::Mine);
        assert!(!d.path().join("var/lib/etcd-charm/state.json").exists());
        assert!(!d.path().join("var/lib/etcd").exists());
        assert!(!d.path().join("etc/etcd").exists());
        let kept: Vec<String> = std::fs::read_dir(d.path().join("var/lib"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".retired-etcd-0-"))
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let wal = kept.iter().find(|n| n.starts_with("etcd.")).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("var/lib").join(wal).join("member/wal/0.wal"))
                .unwrap(),
            "wal"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("var/lib/etcd-charm/unit")).unwrap(),
            "etcd/3\n"
        );
    }

    #[test]
    fn files_of_a_unit_still_deployed_here_are_left_alone() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "/var/lib/etcd-charm/unit", "etcd/0\n");
        touch(
            d.path(),
            "/var/lib/juju/agents/unit-etcd-0/charm/metadata.yaml",
            "",
        );
        touch(d.path(), "/var/lib/etcd/member/wal/0.wal", "wal");
        assert_eq!(
            claim_in(d.path(), "new-etcd/0").unwrap(),
            Claim::Taken("etcd/0".into())
        );
        assert!(d.path().join("var/lib/etcd/member/wal/0.wal").exists());
        assert_eq!(
            std::fs::read_to_string(d.path().join("var/lib/etcd-charm/unit")).unwrap(),
            "etcd/0\n"
        );
    }

    #[test]
    fn an_owner_file_that_names_no_unit_is_an_error_that_says_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "/var/lib/etcd-charm/unit", "../../etc\n");
        let e = claim_in(d.path(), "etcd/1").unwrap_err().to_string();
        assert!(e.contains("names no unit") && e.contains("etcd/1"), "{e}");
    }
}
