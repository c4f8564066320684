//! Issue 26: taking over a running classic etcd deployment in place (`juju refresh etcd
//! --switch`). What the controller checks, as Juju 3.6 does, before any hook runs, and
//! that this charm passes those checks against the classic charm's metadata on every run
//! (so compatibility cannot regress unnoticed).

mod support;

use support::etcd::*;
use support::*;

/// A model whose machines run snapd, as the classic charm's machines do.
fn snapd_model(name: &str) -> Env {
    Env::new(
        name,
        &["harness-machine=snapd", "update-status-hook-interval=10s"],
    )
}

/// The classic footprint (tests/charms/classic-etcd, from ../shared/classic-footprint.md):
/// `n` units of it as `etcd`, related to easyrsa, formed into a cluster.
fn classic(env: &Env, n: usize) {
    let classic = repo_root().join("tests/charms/classic-etcd");
    let snap = fixtures().join("snaps/etcd_3.4.23-classic_amd64.snap");
    env.ok(&["deploy", "easyrsa"]);
    env.ok(&[
        "deploy",
        classic.to_str().unwrap(),
        "etcd",
        "-n",
        &n.to_string(),
        "--resource",
        &format!("etcd={}", snap.display()),
    ]);
    env.ok(&["integrate", "etcd:certificates", "easyrsa:client"]);
    env.wait_units(
        "etcd",
        n,
        "active",
        &format!("Healthy with {n} known peers"),
        5 * MIN,
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

/// The classic footprint forms a cluster as the classic charm does: the snap's service
/// on $SNAP_COMMON/etcd.conf.yml, members etcd0.. with the token in leader settings, the
/// kicker enabled, the reactive state database in the charm directory. A charm whose
/// `data` storage is a filesystem cannot replace it, whose `data` is a block device: Juju
/// refuses the switch before any hook runs (state/application.go, checkStorageUpgrade),
/// and so does the controller, with Juju's message; the application keeps its charm.
#[test]
fn a_classic_cluster_forms_refuses_a_filesystem_store_and_is_left_untouched_by_this_charm() {
    let work = tempfile::tempdir().unwrap();
    let env = snapd_model("classic-switch");
    classic(&env, 3);
    let units = env.units("etcd");
    for u in &units {
        env.exec_ok(
            u,
            "systemctl is-active --quiet snap.etcd.etcd && systemctl is-enabled --quiet cdk-service-kicker \
             && test -s /var/snap/etcd/common/etcd.conf.yml && test -d /var/snap/etcd/current/member/wal \
             && test -s /var/lib/juju/agents/unit-$(echo $JUJU_UNIT_NAME | tr / -)/charm/.unit-state.db",
        );
    }
    let members = env.exec_ok(
        &units[0],
        "ETCDCTL_API=3 /snap/bin/etcd.etcdctl --endpoints https://127.0.0.1:2379 \
         --cert /var/snap/etcd/common/server.crt --key /var/snap/etcd/common/server.key \
         --cacert /var/snap/etcd/common/ca.crt member list",
    );
    let mut names: Vec<&str> = members
        .lines()
        .filter_map(|l| l.split(", ").nth(2))
        .collect();
    names.sort();
    assert_eq!(names, ["etcd0", "etcd1", "etcd2"], "{members}");
    let leader = env.leader("etcd");
    let token = env.exec_ok(&leader, "leader-get token");
    assert_eq!(token.trim().len(), 6, "{token}");

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
    assert_eq!(env.status()["applications"]["etcd"]["charm-rev"], 1);

    // This charm: accepted (its `data` is a block device). Until the takeover is built it
    // finds the classic member on each machine and touches nothing: etcd keeps running
    // (the same process), this charm makes no directory, the reactive state database
    // (a file made at run time) is kept, and the units say why.
    let pids: Vec<String> = units
        .iter()
        .map(|u| env.exec_ok(u, "systemctl show -p MainPID --value snap.etcd.etcd"))
        .collect();
    let ours = repo_root();
    let r = env.run(&["refresh", "etcd", "--switch", ours.to_str().unwrap()]);
    assert_eq!(r.code, 0, "the switch was refused: {}", r.stderr);
    env.wait("every unit to find the classic member", 3 * MIN, |s| {
        units.iter().all(|u| {
            let w = &s["applications"]["etcd"]["units"][u.as_str()]["workload-status"];
            w["current"] == "blocked"
                && w["message"].as_str().is_some_and(|m| {
                    m.starts_with("this machine runs the classic etcd charm's etcd")
                })
        })
    });
    assert_ne!(env.status()["applications"]["etcd"]["charm-rev"], 1);
    for (u, pid) in units.iter().zip(&pids) {
        assert_eq!(
            &env.exec_ok(u, "systemctl show -p MainPID --value snap.etcd.etcd"),
            pid,
            "{u}'s etcd was restarted"
        );
        env.exec_ok(
            u,
            "test ! -e /var/lib/etcd-charm && test ! -e /etc/etcd \
             && test -s /var/lib/juju/agents/unit-$(echo $JUJU_UNIT_NAME | tr / -)/charm/.unit-state.db",
        );
    }
    // An action fails (by action-fail, so `juju run` exits 0 as Juju's does) saying why.
    let r = env.run(&["run", &units[0], "health"]);
    assert!(
        r.stdout
            .contains("failed: this machine runs the classic etcd charm's etcd"),
        "an action ran on the classic member: {}{}",
        r.stdout,
        r.stderr
    );
    let health = env.exec_ok(
        &units[0],
        "ETCDCTL_API=3 /snap/bin/etcd.etcdctl --endpoints https://127.0.0.1:2379 \
         --cert /var/snap/etcd/common/server.crt --key /var/snap/etcd/common/server.key \
         --cacert /var/snap/etcd/common/ca.crt endpoint health --cluster 2>&1",
    );
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
}
