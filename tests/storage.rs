//! Storage as the classic charm's runbook uses it (`list-storage-pools`, `add-storage`):
//! a `loop` volume added to a running unit is mounted in its machine, the member's data moves
//! onto it (verified, etcd stopped only for the copy) and the member keeps its ID and keys;
//! `remove-storage` moves the data back off before the volume goes. A writer runs
//! throughout and loses no acknowledged write. Bad storage input is refused by name.

mod support;

use serde_json::Value;
use support::etcd::*;
use support::*;

const LOCATION: &str = "/var/lib/juju/storage/data/0";

/// The filesystem type mounted at the storage location in etcd/0's machine ("" if none).
fn mounted_fs(env: &Env) -> String {
    env.exec(
        "etcd/0",
        &format!("findmnt -n -o FSTYPE {LOCATION} || true"),
    )
    .stdout
    .trim()
    .to_string()
}

fn configured_data_dir(env: &Env) -> String {
    env.exec_ok(
        "etcd/0",
        "sed -n 's/^data-dir: *//p' /etc/etcd/etcd.conf.yml",
    )
    .trim()
    .trim_matches(|c| c == '"' || c == '\'')
    .to_string()
}

fn settled_healthy(env: &Env, s: &Value) -> bool {
    let units = s["applications"]["etcd"]["units"].as_object();
    units.is_some_and(|u| {
        u.len() == 3
            && u.values().all(|x| {
                x["workload-status"]["message"] == "Healthy with 3 known peers"
                    && x["juju-status"]["current"] == "idle"
            })
    }) && env.run(&["wait-settled", "--timeout", "1s"]).code == 0
}

#[test]
fn a_loop_volume_added_to_a_running_unit_takes_its_data_and_gives_it_back_on_removal() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("storage", &["update-status-hook-interval=1h"]);

    let pools = env.ok(&["list-storage-pools"]);
    assert!(pools.lines().any(|l| l.starts_with("loop ")), "{pools}");
    assert!(pools.lines().any(|l| l.starts_with("rootfs ")), "{pools}");
    let pools: Value =
        serde_json::from_str(&env.ok(&["storage-pools", "--format", "json"])).unwrap();
    assert_eq!(pools["loop"]["provider"], "loop");

    deploy_healthy(&env, 3, &tarball, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");
    let out = creds.etcdctl(&endpoints(&env), true, &["put", "/storage/kept", "yes"]);
    assert!(out.status.success());
    let id = member_id(&env, &creds, "etcd/0").expect("etcd/0's member ID");
    let eps = std::sync::Arc::new(std::sync::Mutex::new(endpoints(&env)));
    let writer = Writer::start(creds.dir.path().to_path_buf(), eps, "/writer/");
    writer.wait_for_writes(20, "before the storage moves");

    // Bad input: named, and nothing changes.
    for (args, says) in [
        (
            vec!["add-storage", "etcd/0", "data=ebs-ssd,10G"],
            "pool \"ebs-ssd\" not found",
        ),
        (
            vec!["add-storage", "etcd/9", "data=loop,1G"],
            "unit \"etcd/9\" not found",
        ),
        (
            vec!["add-storage", "etcd/0", "logs=loop"],
            "has no storage \"logs\"",
        ),
        (
            vec!["remove-storage", "data/7"],
            "storage \"data/7\" not found",
        ),
    ] {
        let r = env.run(&args);
        assert_ne!(r.code, 0, "{args:?} was accepted");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
    assert_eq!(env.ok(&["storage"]).trim(), "No storage to display.");

    // On: the volume is mounted, the data moves onto it, the member stays itself.
    let r = env.run(&["add-storage", "etcd/0", "data=loop,1G"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("added storage data/0"), "{}", r.stderr);
    env.wait("etcd/0 running on its volume", 3 * MIN, |s| {
        settled_healthy(&env, s) && configured_data_dir(&env) == LOCATION
    });
    assert_eq!(mounted_fs(&env), "ext4");
    assert!(
        env.exec("etcd/0", &format!("test -d {LOCATION}/member/wal"))
            .code
            == 0
    );
    assert_eq!(member_id(&env, &creds, "etcd/0"), Some(id), "same member");
    writer.wait_for_writes(20, "with etcd/0 on its volume");
    let r = env.run(&["add-storage", "etcd/0", "data=loop,1G"]);
    assert!(
        r.code != 0 && r.stderr.contains("at most 1"),
        "{}",
        r.stderr
    );
    let listed: Value = serde_json::from_str(&env.ok(&["storage", "--format", "json"])).unwrap();
    assert_eq!(listed["filesystems"]["data-0"]["pool"], "loop", "{listed}");
    assert!(listed["storage"]["data/0"]["attachments"]["units"]["etcd/0"].is_object());

    // Off: the data leaves the volume before it goes.
    env.ok(&["remove-storage", "data/0"]);
    env.wait("etcd/0 back on its own disk", 3 * MIN, |s| {
        settled_healthy(&env, s)
            && configured_data_dir(&env) == "/var/lib/etcd"
            && env.ok(&["storage"]).trim() == "No storage to display."
    });
    assert_eq!(mounted_fs(&env), "", "the volume is unmounted");
    assert_eq!(member_id(&env, &creds, "etcd/0"), Some(id), "same member");
    let out = creds.etcdctl(
        &format!("https://{}:2379", env.address("etcd/0")),
        true,
        &[
            "get",
            "/storage/kept",
            "--print-value-only",
            "--consistency=s",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    writer.wait_for_writes(20, "with etcd/0 back on its own disk");
    no_acknowledged_write_lost(&creds, &endpoints(&env), writer, "storage moves");
}

/// Juju runs a dying unit's `data-storage-detaching` before its departed, broken and stop
/// hooks (internal/worker/uniter/storage/resolver.go); the controller does too. A unit
/// removed with its data on a volume leaves the cluster then, without first copying the
/// database to its root disk: here the root disk's default data directory cannot be
/// written at all (a full or small root disk), and the removal still finishes.
#[test]
fn a_unit_removed_with_its_data_on_a_volume_leaves_without_copying_it_to_the_root_disk() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("storage-removal", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 3, &tarball, &["--storage", "data=loop,1G"]);
    let creds = Creds::from_unit(&env, "etcd/0");
    for u in env.units("etcd") {
        let dir = env.exec_ok(&u, "sed -n 's/^data-dir: *//p' /etc/etcd/etcd.conf.yml");
        assert!(
            dir.contains("/var/lib/juju/storage/data/"),
            "{u} runs on its volume: {dir}"
        );
    }
    // No room on the root disk: a copy there fails at once.
    env.exec_ok(
        "etcd/2",
        "rm -rf /var/lib/etcd && touch /var/lib/etcd; test -f /var/lib/etcd",
    );
    env.ok(&["remove-unit", "etcd/2"]);
    env.wait("etcd/2 gone and two healthy members", 3 * MIN, |s| {
        let units = s["applications"]["etcd"]["units"].as_object();
        units.is_some_and(|u| {
            u.len() == 2
                && u.values()
                    .all(|x| x["workload-status"]["message"] == "Healthy with 2 known peers")
        })
    });
    let out = creds.etcdctl(&endpoints(&env), true, &["member", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(!list.contains("etcd2"), "{list}");
}
