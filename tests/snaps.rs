//! The snap delivery on `snapd` machines (systemd plus snapd from the apt mirror, seeded
//! offline), with locally packed etcd snaps: the store itself cannot be reached here.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::*;

const MIN: Duration = Duration::from_secs(60);

/// An etcdctl command line inside the unit (the snap's or the package's binary) with the
/// unit's client certificate, ready for its arguments.
fn etcdctl_cmd(env: &Env, unit: &str, bin: &str) -> String {
    let ep = format!("https://{}:2379", env.address(unit));
    format!("{bin} --endpoints={ep} --cacert=/etc/etcd/pki/ca.crt --cert=/etc/etcd/pki/client.crt --key=/etc/etcd/pki/client.key")
}

/// The snap's etcdctl inside the unit.
fn etcdctl(env: &Env, unit: &str, args: &str) -> Run {
    env.exec(
        unit,
        &format!("{} {args}", etcdctl_cmd(env, unit, "/snap/bin/etcdctl")),
    )
}

fn member_id(env: &Env, unit: &str, bin: &str) -> u64 {
    let out = env.exec(
        unit,
        &format!("{} endpoint status -w json", etcdctl_cmd(env, unit, bin)),
    );
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|_| panic!("endpoint status: {}{}", out.stdout, out.stderr));
    v[0]["Status"]["header"]["member_id"].as_u64().unwrap()
}

#[test]
fn an_attached_snap_installs_offline_runs_under_systemd_upgrades_by_the_install_action_and_sets_the_refresh_timer(
) {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new(
        "snaps",
        &["update-status-hook-interval=1h", "harness-machine=snapd"],
    );
    // Recognised by content: the file's name says nothing of a snap.
    let payload = work.path().join("etcd-payload.bin");
    std::fs::copy(snap_fixture("3.4.23"), &payload).unwrap();
    deploy_etcd(&env, 1, &payload, &[]);
    // Without a resource and without the store, a unit says what to attach (no hang).
    env.ok(&["deploy", repo_root().to_str().unwrap(), "nostore"]);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 4 * MIN);
    env.exec_ok(
        "etcd/0",
        "snap list etcd | grep -q '3.4.23' && test -x /snap/bin/etcd && test -e /snap/bin/etcdctl \
         && test -d /var/snap/etcd/common/data/member \
         && systemctl show -p ExecStart etcd.service | grep -q /snap/bin/etcd",
    );
    assert!(etcdctl(&env, "etcd/0", "put /snap-key kept")
        .stdout
        .contains("OK"));
    let id = member_id(&env, "etcd/0", "/snap/bin/etcdctl");

    // snapd_refresh: "max" is a monthly window of this unit's own; a timer is set as given;
    // a bad value blocks and changes nothing.
    let timer = || {
        env.exec_ok("etcd/0", "snap get system refresh.timer")
            .trim()
            .to_string()
    };
    assert_eq!(timer(), "fri5,00:00-00:59");
    env.ok(&["config", "etcd", "snapd_refresh=mon,10:00~12:00"]);
    env.wait("the new refresh timer", MIN, |_| {
        timer() == "mon,10:00~12:00"
    });
    env.ok(&["config", "etcd", "snapd_refresh=someday"]);
    env.wait("a blocked status naming snapd_refresh", MIN, |_| {
        unit_message(&env.status(), "etcd/0").contains("snapd_refresh")
    });
    assert_eq!(timer(), "mon,10:00~12:00", "a bad value changes nothing");
    env.ok(&["config", "etcd", "--reset", "snapd_refresh"]);
    env.wait("the default refresh timer", MIN, |_| {
        timer() == "fri5,00:00-00:59"
    });

    // kill -9 of etcd: systemd brings the same member back.
    let pid = env
        .exec_ok("etcd/0", "systemctl show -p MainPID --value etcd.service")
        .trim()
        .to_string();
    env.exec_ok("etcd/0", &format!("kill -9 {pid}"));
    env.wait("etcd restarted by systemd", MIN, |_| {
        env.exec("etcd/0", "systemctl show -p NRestarts --value etcd.service")
            .stdout
            .trim()
            == "1"
            && etcdctl(&env, "etcd/0", "get /snap-key --print-value-only")
                .stdout
                .trim()
                == "kept"
    });

    let msg = env.wait("nostore blocked", 5 * MIN, |s| {
        s["applications"]["nostore"]["units"]["nostore/0"]["workload-status"]["current"]
            == "blocked"
    });
    let m = unit_message(&msg, "nostore/0");
    assert!(m.contains("attach etcd.snap"), "{m}");
    // (Gone before the model must settle: it asks the store again in every hook.)
    env.ok(&["remove-application", "nostore"]);

    // A newer snap attached, then the install action: the same member, every key, 3.5.1.
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", snap_fixture("3.5.1").display()),
    ]);
    env.settle("2m");
    assert!(
        env.exec_ok("etcd/0", "snap list etcd").contains("3.4.23"),
        "attaching alone does not upgrade"
    );
    let r = env.run(&["run", "--format", "json", "etcd/0", "install"]);
    assert_eq!(r.code, 0, "install action: {}{}", r.stdout, r.stderr);
    assert!(env.exec_ok("etcd/0", "snap list etcd").contains("3.5.1"));
    assert_eq!(member_id(&env, "etcd/0", "/snap/bin/etcdctl"), id);
    // The action says the member's health when it ends (no hook follows an action).
    let msg = unit_message(&env.status(), "etcd/0");
    assert!(msg.starts_with("Healthy with 1 known peers"), "{msg}");
    assert_eq!(
        etcdctl(&env, "etcd/0", "get /snap-key --print-value-only")
            .stdout
            .trim(),
        "kept"
    );
}

/// Keys under /m/ as the unit's own etcdctl sees them (the package's or the snap's).
fn key_count(env: &Env, unit: &str, bin: &str) -> usize {
    env.exec_ok(
        unit,
        &format!(
            "{} get /m/ --prefix --keys-only",
            etcdctl_cmd(env, unit, bin)
        ),
    )
    .lines()
    .filter(|l| !l.is_empty())
    .count()
}

#[test]
fn snap_upgrade_moves_a_debian_package_unit_to_the_attached_snap_keeping_its_member_and_data() {
    // A systemd machine without snapd: the Debian package, from the apt mirror.
    let env = Env::new("debsnap", &["update-status-hook-interval=1h"]);
    let root = repo_root();
    env.ok(&["deploy", root.to_str().unwrap(), "etcd"]);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 3 * MIN);
    let etcdctl = etcdctl_cmd(&env, "etcd/0", "etcdctl");
    env.exec_ok(
        "etcd/0",
        &format!("for i in $(seq -w 1 20); do {etcdctl} put /m/$i v >/dev/null; done"),
    );
    let id = member_id(&env, "etcd/0", "etcdctl");
    let exe = || running_etcd(&env, "etcd/0");
    assert_eq!(exe(), "/usr/bin/etcd");

    // snapd becomes available (from the mirror; the seed snaps stand in for the store).
    offer_snap_upgrade(&env, "attach-resource");
    assert_eq!(exe(), "/usr/bin/etcd", "attaching alone migrates nothing");

    let snap_upgrade = || {
        env.run(&[
            "run",
            "--format",
            "json",
            "etcd/0",
            "snap-upgrade",
            "target=/root/migration",
        ])
    };
    // A failure mid-way rolls back: the package's etcd runs with its data where it was.
    env.exec_ok(
        "etcd/0",
        "mkdir -p /var/lib/etcd-charm/crashpoints && touch /var/lib/etcd-charm/crashpoints/verify",
    );
    let r = snap_upgrade();
    // A failed task that exits 0: `juju run` exits 0 too, as on Juju 3.6.
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"failed\""), "{}", r.stdout);
    assert!(r.stdout.contains("rolled back"), "{}", r.stdout);
    assert_eq!(exe(), "/usr/bin/etcd");
    env.exec_ok(
        "etcd/0",
        "test -d /var/lib/etcd/member && dpkg -s etcd-server | grep -q 'ok installed'",
    );
    assert_eq!(key_count(&env, "etcd/0", "etcdctl"), 20);

    env.exec_ok("etcd/0", "rm -r /var/lib/etcd-charm/crashpoints");

    // The action killed (SIGKILL, no unwinding) after the snap is installed, and after the
    // data moved and the snap's etcd started: the next action (or hook) rolls back first.
    for step in ["snap-upgrade-move-data", "snap-upgrade-verify"] {
        env.crash_at("etcd/0", step);
        let r = snap_upgrade();
        assert_ne!(r.code, 0, "the action died at {step}");
        assert!(
            env.crash_consumed("etcd/0"),
            "the crash point at {step} fired"
        );
        // The first action undoes the interrupted migration; etcd then starts.
        env.wait(
            &format!("a healthy member after a kill at {step}"),
            MIN,
            |_| env.run_action("etcd/0", &["health"]).1["status"] == "completed",
        );
        assert_eq!(
            exe(),
            "/usr/bin/etcd",
            "the package's etcd runs after a kill at {step}"
        );
        env.exec_ok(
            "etcd/0",
            "test -d /var/lib/etcd/member && test ! -e /var/lib/etcd-charm/txn.json",
        );
        assert_eq!(
            key_count(&env, "etcd/0", "etcdctl"),
            20,
            "every key after a kill at {step}"
        );
    }

    // The real migration: the snap runs the same member with every key, data moved.
    let r = snap_upgrade();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["etcd/0"]["results"]["delivery"], "snap", "{v}");
    assert_eq!(v["etcd/0"]["results"]["member-id"], format!("{id:x}"));
    assert_eq!(
        key_count(&env, "etcd/0", "/snap/bin/etcdctl"),
        20,
        "every key is there"
    );
    env.exec_ok(
        "etcd/0",
        "test -d /var/snap/etcd/common/data/member && ! dpkg -s etcd-server 2>/dev/null | grep -q 'ok installed' \
         && systemctl show -p ExecStart etcd.service | grep -q /snap/bin/etcd && snap list etcd | grep -q 3.5.1",
    );
    env.ok(&["run", "etcd/0", "health"]);
}
