//! Issue 26: taking over a running classic etcd deployment in place (`juju refresh etcd
//! --switch`). What the controller checks, as Juju 3.6 does, before any hook runs.

mod support;

use support::*;

/// The classic charm's `data` storage is a block device; this charm's is a filesystem, so
/// Juju refuses the switch before any hook runs (state/application.go, checkStorageUpgrade),
/// and so does the controller, with Juju's message; the application keeps its charm.
#[test]
fn the_switch_from_the_classic_charm_is_refused_as_juju_refuses_it() {
    let env = Env::new("classic-switch", &["update-status-hook-interval=1h"]);
    let classic = repo_root().join("tests/charms/classic-etcd");
    env.ok(&["deploy", classic.to_str().unwrap(), "etcd"]);
    env.wait_units(
        "etcd",
        1,
        "active",
        "classic fixture",
        std::time::Duration::from_secs(120),
    );
    let ours = repo_root();
    let r = env.run(&["refresh", "etcd", "--switch", ours.to_str().unwrap()]);
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
}
