//! Issue 26: taking over a running classic etcd deployment in place (`juju refresh etcd
//! --switch`). What the controller checks, as Juju 3.6 does, before any hook runs, and
//! that this charm passes those checks against the classic charm's metadata on every run
//! (so compatibility cannot regress unnoticed).

mod support;

use support::etcd::*;
use support::*;

/// Deploys the classic charm's metadata fixture as `etcd` and waits for its unit.
fn classic(env: &Env) {
    let classic = repo_root().join("tests/charms/classic-etcd");
    env.ok(&["deploy", classic.to_str().unwrap(), "etcd"]);
    env.wait_units(
        "etcd",
        1,
        "active",
        "classic fixture",
        std::time::Duration::from_secs(120),
    );
}

/// This charm as it was before its `data` storage became a block device: a charm
/// directory whose metadata differs only there (hooks never run: the switch is refused).
fn charm_with_filesystem_storage(dir: &std::path::Path) -> std::path::PathBuf {
    let root = repo_root();
    let out = dir.join("etcd-filesystem");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.yaml", "actions.yaml", "dispatch"] {
        std::fs::copy(root.join(f), out.join(f)).unwrap();
    }
    let meta = std::fs::read_to_string(root.join("metadata.yaml")).unwrap();
    let (head, tail) = meta.split_once("storage:\n  data:\n").unwrap();
    let tail = tail.replacen("    type: block\n", "    type: filesystem\n", 1);
    assert!(tail.contains("type: filesystem"), "{tail}");
    std::fs::write(
        out.join("metadata.yaml"),
        format!("{head}storage:\n  data:\n{tail}"),
    )
    .unwrap();
    out
}

/// A charm whose `data` storage is a filesystem cannot replace the classic charm, whose
/// `data` is a block device: Juju refuses the switch before any hook runs
/// (state/application.go, checkStorageUpgrade), and so does the controller, with Juju's
/// message; the application keeps its charm. This charm's `data` is a block device, so
/// the switch to it is accepted and its upgrade-charm hook runs.
#[test]
fn the_switch_from_the_classic_charm_is_refused_for_a_filesystem_store_and_accepted_for_ours() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("classic-switch", &["update-status-hook-interval=1h"]);
    classic(&env);
    let before = charm_with_filesystem_storage(work.path());
    let r = env.run(&["refresh", "etcd", "--switch", before.to_str().unwrap()]);
    assert_ne!(r.code, 0, "the switch was accepted: {}", r.stdout);
    assert!(
        r.stderr.contains(
            "cannot upgrade application \"etcd\" to charm \"local:etcd-2\": existing storage \"data\" type changed from \"block\" to \"filesystem\""
        ),
        "{}",
        r.stderr
    );
    let s = env.status();
    assert_eq!(s["applications"]["etcd"]["charm-rev"], 1);
    assert_eq!(
        s["applications"]["etcd"]["units"]["etcd/0"]["workload-status"]["message"],
        "classic fixture"
    );

    // This charm: accepted; its own hooks run on the unit (here with nothing of the
    // classic footprint to adopt, it installs etcd from the resource and forms a cluster).
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let ours = repo_root();
    let r = env.run(&[
        "refresh",
        "etcd",
        "--switch",
        ours.to_str().unwrap(),
        "--resource",
        &format!("etcd={}", tarball.display()),
    ]);
    assert_eq!(r.code, 0, "the switch was refused: {}", r.stderr);
    env.wait("this charm's hooks running on etcd/0", 3 * MIN, |s| {
        s["applications"]["etcd"]["units"]["etcd/0"]["workload-status"]["message"]
            == "Healthy with 1 known peers"
    });
    assert_ne!(env.status()["applications"]["etcd"]["charm-rev"], 1);
}
