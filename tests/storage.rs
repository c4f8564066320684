//! Storage as the classic charm's runbook uses it (`list-storage-pools`, `add-storage`):
//! the `data` store is a block device, as the classic charm declares it. A `loop` volume
//! added to a running unit reaches the charm as a raw device (/dev/loopN); the charm makes
//! its filesystem, mounts it at /media/etcd, names it in /etc/fstab by UUID, and the
//! member's data moves onto it (verified, etcd stopped only for the copy); the member keeps
//! its ID and keys, also across a reboot that may give the volume another device name;
//! `remove-storage` moves the data back off and unmounts the volume before it goes. A
//! writer runs throughout and loses no acknowledged write. Bad storage input is refused by
//! name.

mod support;

use serde_json::Value;
use support::etcd::*;
use support::*;

const LOCATION: &str = "/media/etcd/data";

/// The filesystem type and source mounted at /media/etcd in `unit`'s machine ("" if none).
fn mounted(env: &Env, unit: &str) -> String {
    env.exec(unit, "findmnt -n -o FSTYPE,SOURCE /media/etcd || true")
        .stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The /etc/fstab lines for /media/etcd in `unit`'s machine.
fn fstab_lines(env: &Env, unit: &str) -> Vec<String> {
    env.exec_ok(unit, "cat /etc/fstab")
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("/media/etcd"))
        .map(String::from)
        .collect()
}

/// The volume is `unit`'s raw device, formatted ext4 by the charm, mounted at /media/etcd
/// and named in fstab by its filesystem's UUID.
fn assert_on_its_volume(env: &Env, unit: &str, storage: &str) {
    let dev = env.exec_ok(unit, &format!("storage-get -s {storage} location"));
    let dev = dev.trim();
    assert!(dev.starts_with("/dev/loop"), "{unit}: {dev}");
    assert_eq!(mounted(env, unit), format!("ext4 {dev}"), "{unit}");
    let uuid = env.exec_ok(unit, &format!("blkid -p -o value -s UUID {dev}"));
    assert_eq!(
        fstab_lines(env, unit),
        [format!(
            "UUID={} /media/etcd ext4 defaults,nofail 0 2",
            uuid.trim()
        )],
        "{unit}"
    );
    assert_eq!(configured_data_dir(env, unit), LOCATION, "{unit}");
    env.exec_ok(unit, &format!("test -d {LOCATION}/member/wal"));
}

fn configured_data_dir(env: &Env, unit: &str) -> String {
    env.exec_ok(unit, "sed -n 's/^data-dir: *//p' /etc/etcd/etcd.conf.yml")
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

    // On: the volume is mounted, the data moves onto it, the member stays itself. The
    // first attached hook is killed between the fstab line and the mount; its retry mounts.
    env.crash_at("etcd/0", "volume-in-fstab");
    let r = env.run(&["add-storage", "etcd/0", "data=loop,1G"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("added storage data/0"), "{}", r.stderr);
    env.wait("etcd/0 running on its volume", 3 * MIN, |s| {
        settled_healthy(&env, s) && configured_data_dir(&env, "etcd/0") == LOCATION
    });
    assert!(env.crash_consumed("etcd/0"), "the crash point never fired");
    assert_on_its_volume(&env, "etcd/0", "data/0");
    assert_eq!(member_id(&env, &creds, "etcd/0"), Some(id), "same member");
    writer.wait_for_writes(20, "with etcd/0 on its volume");
    let r = env.run(&["add-storage", "etcd/0", "data=loop,1G"]);
    assert!(
        r.code != 0 && r.stderr.contains("at most 1"),
        "{}",
        r.stderr
    );
    let listed: Value = serde_json::from_str(&env.ok(&["storage", "--format", "json"])).unwrap();
    assert_eq!(listed["volumes"]["data-0"]["pool"], "loop", "{listed}");
    assert_eq!(listed["storage"]["data/0"]["kind"], "block", "{listed}");
    assert!(listed["storage"]["data/0"]["attachments"]["units"]["etcd/0"].is_object());

    // Off: the data leaves the volume before it goes; the detaching hook is killed between
    // the unmount and the fstab edit, and its retry finishes the release.
    env.crash_at("etcd/0", "volume-unmounted");
    env.ok(&["remove-storage", "data/0"]);
    env.wait("etcd/0 back on its own disk", 3 * MIN, |s| {
        settled_healthy(&env, s)
            && configured_data_dir(&env, "etcd/0") == "/var/lib/etcd"
            && env.ok(&["storage"]).trim() == "No storage to display."
    });
    assert!(env.crash_consumed("etcd/0"), "the crash point never fired");
    assert_eq!(mounted(&env, "etcd/0"), "", "the volume is unmounted");
    assert!(
        fstab_lines(&env, "etcd/0").is_empty(),
        "its fstab line stays"
    );
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
/// written at all (a full or small root disk), and the removal still finishes. Before,
/// a machine on its volume reboots and its member comes back on it.
#[test]
fn a_rebooted_unit_keeps_its_volume_and_a_unit_removed_on_one_leaves_without_copying_it_off() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("storage-removal", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 3, &tarball, &["--storage", "data=loop,1G"]);
    let creds = Creds::from_unit(&env, "etcd/0");
    for (i, u) in env.units("etcd").iter().enumerate() {
        assert_on_its_volume(&env, u, &format!("data/{i}"));
    }
    // A reboot: the volume may come back as another loop device. fstab names it by UUID,
    // etcd's unit waits for the mount (never starts on the empty directory under it),
    // and the member comes back on its volume, itself.
    let id = member_id(&env, &creds, "etcd/1").expect("etcd/1's member ID");
    env.reboot_and_wait("etcd/1");
    env.wait("etcd/1 back on its volume", 3 * MIN, |s| {
        s["applications"]["etcd"]["units"]["etcd/1"]["workload-status"]["message"]
            == "Healthy with 3 known peers"
            && env.run(&["wait-settled", "--timeout", "1s"]).code == 0
    });
    assert_on_its_volume(&env, "etcd/1", "data/1");
    assert_eq!(member_id(&env, &creds, "etcd/1"), Some(id), "same member");
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
