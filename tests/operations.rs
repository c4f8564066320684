//! Day-two operations an etcd operator asks for: snapshots on a schedule, taken by one unit
//! (not the raft leader's) from a systemd timer, pruned to the retention, their age in status
//! and a warning when they stop.

mod support;

use serde_json::Value;
use support::etcd::*;
use support::*;

const TARGET: &str = "/var/backups/etcd-test";

/// The units whose machine runs the snapshot timer.
fn timer_units(env: &Env) -> Vec<String> {
    env.units("etcd")
        .into_iter()
        .filter(|u| {
            env.exec(u, "systemctl is-active --quiet etcd-charm-snapshot.timer")
                .code
                == 0
        })
        .collect()
}

/// The taker's record of its scheduled snapshots.
fn record(env: &Env, unit: &str) -> Value {
    let r = env.exec(unit, "cat /var/lib/etcd-charm/snapshot-record.json");
    serde_json::from_str(&r.stdout).unwrap_or(Value::Null)
}

fn taken(env: &Env, unit: &str) -> u64 {
    record(env, unit)["taken"].as_u64().unwrap_or(0)
}

/// The archives in the target on `unit`, oldest first.
fn archives(env: &Env, unit: &str) -> Vec<String> {
    env.exec_ok(unit, &format!("ls {TARGET}"))
        .lines()
        .filter(|l| l.ends_with(".tar.gz"))
        .map(str::to_string)
        .collect()
}

#[test]
fn scheduled_snapshots_are_taken_by_one_unit_pruned_and_watched() {
    let work = tempfile::tempdir().unwrap();
    let t = etcd_tarball(work.path(), &etcd_build("3.5.16"), "3.5.16");
    let env = Env::new("backups", &["update-status-hook-interval=4s"]);
    deploy_healthy(&env, 3, &t, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");
    let eps = endpoints(&env);
    let out = creds.etcdctl(&eps, true, &["put", "/backed-up", "by the timer"]);
    assert!(out.status.success(), "{out:?}");

    // Bad input blocks with a message naming it, and sets up nothing.
    for (kv, says) in [
        (
            "snapshot_schedule=5s",
            "snapshot_schedule \"5s\" is too short",
        ),
        (
            "snapshot_retention=0",
            "snapshot_retention 0 must be between",
        ),
        (
            "snapshot_target=backups",
            "snapshot_target \"backups\" must be an absolute path",
        ),
        (
            "snapshot_target=/var/lib/etcd/backups",
            "must be outside etcd's own files",
        ),
    ] {
        env.ok(&["config", "etcd", kv]);
        env.wait(&format!("every unit to refuse {kv}"), MIN, |s| {
            env.units("etcd").iter().all(|u| {
                s["applications"]["etcd"]["units"][u]["workload-status"]["current"] == "blocked"
                    && unit_message(s, u).contains(says)
            })
        });
        let key = kv.split('=').next().unwrap();
        let default = match key {
            "snapshot_retention" => "snapshot_retention=7".to_string(),
            "snapshot_target" => "snapshot_target=/var/backups/etcd".to_string(),
            _ => format!("{key}="),
        };
        env.ok(&["config", "etcd", &default]);
        env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);
        assert!(timer_units(&env).is_empty(), "{kv} set up a timer");
    }
    // A calendar expression systemd does not take blocks the unit that would take them.
    env.ok(&["config", "etcd", "snapshot_schedule=every day"]);
    env.wait("the taker to refuse the calendar expression", MIN, |s| {
        env.units("etcd")
            .iter()
            .any(|u| unit_message(s, u).contains("is not a systemd calendar expression"))
    });
    assert!(timer_units(&env).is_empty());

    // Every 12 s, two kept: one unit, not the raft leader's, takes them.
    env.ok(&[
        "config",
        "etcd",
        "snapshot_schedule=12s",
        "snapshot_retention=2",
        &format!("snapshot_target={TARGET}"),
    ]);
    env.wait("one unit to keep the snapshot timer", MIN, |_| {
        timer_units(&env).len() == 1
    });
    let taker = timer_units(&env).remove(0);
    assert_ne!(
        taker,
        raft_leader_unit(&env, &creds),
        "the raft leader's unit is spared"
    );
    env.wait("three scheduled snapshots", 2 * MIN, |_| {
        taken(&env, &taker) >= 3
    });
    assert_eq!(timer_units(&env), vec![taker.clone()], "still one taker");
    let kept = archives(&env, &taker);
    assert_eq!(kept.len(), 2, "pruned to the retention: {kept:?}");
    // Each one: 0600, its digest beside it, and the database in it holds the key.
    env.exec_ok(
        &taker,
        &format!(
            "set -e; cd {TARGET}; sha256sum -c --quiet *.tar.gz.sha256; \
             test \"$(stat -c %a *.tar.gz | sort -u)\" = 600"
        ),
    );
    let newest = kept.last().unwrap();
    let st = env.exec_ok(
        &taker,
        &format!(
            "set -e; d=$(mktemp -d); tar -xzf {TARGET}/{newest} -C $d db; \
             /opt/etcd/current/etcdutl snapshot status $d/db -w json; rm -r $d"
        ),
    );
    let st: Value = serde_json::from_str(st.trim()).unwrap();
    assert!(st["totalKey"].as_u64().unwrap_or(0) >= 1, "{st}");
    // Status: the taker's own and the application's (the leader's) say how old the last is.
    env.wait("status to show the last scheduled snapshot", MIN, |s| {
        unit_message(s, &taker).contains("last scheduled snapshot")
            && s["applications"]["etcd"]["application-status"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("last scheduled snapshot"))
    });

    // Snapshots that fail (the target full): a warning once the last good one is two
    // periods old, the failure named, nothing pruned; it clears when they work again.
    env.exec_ok(
        &taker,
        &format!(
            "mount -t tmpfs -o size=64k,mode=0700 tmpfs {TARGET}; \
             dd if=/dev/zero of={TARGET}/filler bs=4k 2>/dev/null || true"
        ),
    );
    env.wait("the overdue warning", 2 * MIN, |s| {
        let m = unit_message(s, &taker);
        m.contains("WARNING: the last good scheduled snapshot is")
            && m.contains("last attempt failed")
    });
    env.exec_ok(&taker, &format!("umount {TARGET}"));
    assert_eq!(
        archives(&env, &taker),
        kept,
        "nothing pruned while they failed"
    );
    env.wait("the warning to clear", 2 * MIN, |s| {
        unit_message(s, &taker).contains("last scheduled snapshot")
            && !unit_message(s, &taker).contains("WARNING")
    });

    // A calendar expression: every 10 s by the clock.
    let before = taken(&env, &taker);
    env.ok(&["config", "etcd", "snapshot_schedule=*:*:0/10"]);
    env.wait("two snapshots on the calendar", 2 * MIN, |_| {
        taken(&env, &taker) >= before + 2
    });
    env.exec_ok(
        &taker,
        "grep -q '^OnCalendar=\\*:\\*:0/10$' /etc/systemd/system/etcd-charm-snapshot.timer",
    );

    // Off: no timer anywhere; the snapshots stay.
    env.ok(&["config", "etcd", "snapshot_schedule="]);
    env.wait("the timer to go", MIN, |_| timer_units(&env).is_empty());
    assert_eq!(archives(&env, &taker).len(), 2);
}
