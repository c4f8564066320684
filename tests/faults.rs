//! The fault suite: the faults an etcd operator fears, each under a continuous writer that
//! records every acknowledged write. Every case ends with all acknowledged writes readable,
//! all members agreeing on their keys (`endpoint hashkv`) and the charm's status back to
//! "Healthy with N known peers". Each fault leaves a row in `target/reliability/`, from which
//! `python3 tests/reliability.py` prints docs/RELIABILITY.md's table.

mod support;

use std::time::Duration;
use support::etcd::*;
use support::*;

/// How long a stopped process or a cut network stays so: several election timeouts.
const HOLD: Duration = Duration::from_secs(6);

/// Three healthy units (systemd machines) and the host's client credentials.
fn three_units(model: &str, work: &std::path::Path) -> (Env, Creds) {
    let tarball = etcd_tarball(work, &etcd35(), "3.5.1");
    let env = Env::new(model, &["update-status-hook-interval=10s"]);
    deploy_healthy(&env, 3, &tarball, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");
    (env, creds)
}

/// kill -9, SIGSTOP and a network cut of one member (`pick` chooses it anew for each),
/// under a writer each.
fn process_and_network_faults(env: &Env, creds: &Creds, role: &str, pick: impl Fn() -> String) {
    let who = if role == "leader" {
        "raft leader"
    } else {
        role
    };
    let hold = HOLD.as_secs();
    let kill9 = |unit: &str| {
        let pid = etcd_pid(env, unit);
        env.exec_ok(unit, &format!("kill -9 {pid}"));
        // systemd starts it again (Restart=on-failure): a new process, not the old one.
        env.wait(&format!("a new etcd process on {unit}"), MIN, |_| {
            let now = etcd_pid(env, unit);
            now != pid && now != "0"
        });
    };
    let sigstop = |unit: &str| {
        let pid = etcd_pid(env, unit);
        env.exec_ok(unit, &format!("kill -STOP {pid}"));
        std::thread::sleep(HOLD); // the fault's length, not a wait for anything
        env.exec_ok(unit, &format!("kill -CONT {pid}"));
    };
    let cut = |unit: &str| {
        env.ok(&["cut-network", unit]);
        std::thread::sleep(HOLD); // the fault's length
        env.ok(&["heal-network", unit]);
    };
    let faults: [(&str, String, &dyn Fn(&str)); 3] = [
        ("kill9", format!("kill -9 of the {who}"), &kill9),
        (
            "sigstop",
            format!("SIGSTOP of the {who} ({hold}s)"),
            &sigstop,
        ),
        ("cut", format!("network cut of the {who} ({hold}s)"), &cut),
    ];
    for (name, fault, inject) in faults {
        let unit = pick();
        under_writer(env, creds, &format!("{role}-{name}"), &fault, 3, || {
            inject(&unit)
        });
    }
}

#[test]
fn the_raft_leader_killed_stopped_and_cut_off_loses_no_acknowledged_write() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds) = three_units("fault-leader", work.path());
    process_and_network_faults(&env, &creds, "leader", || raft_leader_unit(&env, &creds));
}

#[test]
fn a_follower_killed_stopped_and_cut_off_loses_no_acknowledged_write() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds) = three_units("fault-follower", work.path());
    process_and_network_faults(&env, &creds, "follower", || {
        let leader = raft_leader_unit(&env, &creds);
        env.units("etcd")
            .into_iter()
            .find(|u| *u != leader)
            .unwrap()
    });
}

#[test]
fn machines_rebooted_crashed_and_all_crashed_at_once_lose_no_acknowledged_write() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds) = three_units("fault-machines", work.path());

    let unit = raft_leader_unit(&env, &creds);
    under_writer(
        &env,
        &creds,
        "reboot",
        "clean reboot of the raft leader's machine",
        3,
        || env.reboot_and_wait(&unit),
    );

    let unit = raft_leader_unit(&env, &creds);
    under_writer(
        &env,
        &creds,
        "crash",
        "crash of the raft leader's machine",
        3,
        || {
            let m = env.machine(&unit);
            let init = env.machine_pid(&m);
            env.ok(&["crash-machine", &unit]);
            env.ok(&["start-machine", &unit]);
            env.wait_booted(&m, init);
        },
    );

    under_writer(
        &env,
        &creds,
        "crash-all",
        "crash of every machine at once",
        3,
        || {
            let machines: Vec<(String, u32)> = env
                .units("etcd")
                .iter()
                .map(|u| {
                    let m = env.machine(u);
                    let pid = env.machine_pid(&m);
                    (m, pid)
                })
                .collect();
            for (m, _) in &machines {
                env.ok(&["crash-machine", m]);
            }
            for (m, init) in &machines {
                env.ok(&["start-machine", m]);
                env.wait_booted(m, *init);
            }
        },
    );
}

#[test]
fn a_unit_removed_while_the_raft_leader_is_cut_off_leaves_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds) = three_units("fault-remove", work.path());
    env.ok(&["add-unit", "etcd"]);
    env.wait_units("etcd", 4, "active", "Healthy with 4 known peers", 3 * MIN);
    let leader = raft_leader_unit(&env, &creds);
    let juju_leader = env.leader("etcd");
    let victim = env
        .units("etcd")
        .into_iter()
        .find(|u| *u != leader && *u != juju_leader)
        .unwrap();
    under_writer(
        &env,
        &creds,
        "remove-while-leader-cut",
        "a unit removed while the raft leader is cut off",
        3,
        || {
            env.ok(&["cut-network", &leader]);
            env.ok(&["remove-unit", "--no-prompt", &victim]);
            env.wait("the removed unit to go", 2 * MIN, |s| {
                !units_of(s, "etcd").contains(&victim)
            });
            env.ok(&["heal-network", &leader]);
        },
    );
    let out = creds.etcdctl(&endpoints(&env), true, &["member", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 3, "three members left: {list}");
    assert!(
        !list.contains(&victim.replace('/', "-")),
        "the removed unit is no member: {list}"
    );
}

/// Issue 22: an operator's mistakes under a writer. A non-ASCII duration (it panicked every
/// hook of every unit: H3) and an `auto_compaction_retention` etcd cannot read (it rolled
/// from unit to unit, each member down in turn: H1) block every unit with a status naming
/// the option, fail no hook and restart no member; resetting the option brings every unit
/// back. A corrupt `/etc/etcd/etcd.conf.yml` (every hook failed parsing it: M10) is set
/// aside and written again, in the unit's restart turn.
#[test]
fn operator_mistakes_block_with_the_cause_and_take_no_member_down() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds) = three_units("fault-mistakes", work.path());
    let pids =
        |env: &Env| -> Vec<String> { env.units("etcd").iter().map(|u| etcd_pid(env, u)).collect() };
    for (option, value) in [
        ("tls_certificate_lifetime", "30д"),
        ("auto_compaction_retention", "banana"),
        // a valid number, but below the database every member holds (etcd would raise
        // NOSPACE at once): checked against the running members, not applied
        ("quota_backend_bytes", "1024"),
    ] {
        under_writer(
            &env,
            &creds,
            &format!("mistake-{option}"),
            &format!("juju config etcd {option}={value}"),
            3,
            || {
                let before = pids(&env);
                env.ok(&["config", "etcd", &format!("{option}={value}")]);
                env.wait(
                    &format!("every unit blocked naming {option}"),
                    2 * MIN,
                    |s| {
                        env.units("etcd").iter().all(|u| {
                            let e = unit_entry(s, u);
                            e["workload-status"]["current"] == "blocked"
                                && unit_message(s, u).contains(option)
                        })
                    },
                );
                let s = env.status();
                for u in env.units("etcd") {
                    assert_ne!(
                        unit_entry(&s, &u)["workload-status"]["current"],
                        "error",
                        "{u}: a hook failed on {option}={value}"
                    );
                }
                assert_eq!(
                    pids(&env),
                    before,
                    "a member restarted into {option}={value}"
                );
                env.ok(&["config", "etcd", "--reset", option]);
            },
        );
    }
    let unit = env.units("etcd")[1].clone();
    under_writer(
        &env,
        &creds,
        "mistake-corrupt-config-file",
        "a corrupt /etc/etcd/etcd.conf.yml",
        3,
        || {
            env.exec_ok(&unit, "printf '{{{ not: [yaml' > /etc/etcd/etcd.conf.yml");
            env.wait("the file written again and the corrupt one kept aside", 2 * MIN, |_| {
                env.exec_ok(
                    &unit,
                    "grep -q '^data-dir:' /etc/etcd/etcd.conf.yml && ls /etc/etcd/ | grep -c 'etcd.conf.yml.corrupt-' || true",
                )
                .trim()
                    == "1"
            });
            let s = env.status();
            assert_ne!(unit_entry(&s, &unit)["workload-status"]["current"], "error");
        },
    );

    // A unit removed while a config value the operator got wrong is set (blocked, never
    // applied): it still leaves the membership before its member stops. Before, the leave
    // skipped the removal when the config did not parse, and the stopped member stayed in
    // the cluster (2 of 3 running, one more failure from losing quorum).
    env.ok(&["config", "etcd", "tls_certificate_lifetime=30д"]);
    let gone = env.units("etcd")[2].clone();
    env.ok(&["remove-unit", "--no-prompt", &gone]);
    env.wait("the unit gone", 3 * MIN, |_| env.units("etcd").len() == 2);
    let eps = endpoints(&env);
    until("the membership down to the two units left", MIN, || {
        let out = creds.etcdctl(&eps, true, &["member", "list"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == 2
    });
    env.ok(&["config", "etcd", "--reset", "tls_certificate_lifetime"]);
    env.wait_units("etcd", 2, "active", "Healthy with 2 known peers", 2 * MIN);
}

/// Issue 22 (H1): a config etcd cannot run with that no check can catch (a client port
/// another service holds on every machine). The first unit's restart fails its health
/// check; its previous config runs again and its status names the changed settings and
/// etcd's own error; the roll stops there, so no other member restarts; setting the option
/// back ends it. Before the fix the unit reported the restart as done and the leader handed
/// out the next turn: every member in turn went down into the same config.
#[test]
fn a_config_etcd_cannot_run_with_rolls_back_on_the_first_unit_and_stops_the_roll() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds) = three_units("fault-config-rollback", work.path());
    for u in env.units("etcd") {
        env.exec_ok(
            &u,
            "nohup python3 -m http.server 23790 --bind 0.0.0.0 >/dev/null 2>&1 &",
        );
    }
    for u in env.units("etcd") {
        env.wait(&format!("port 23790 held on {u}"), MIN, |_| {
            env.exec_ok(&u, "ss -ltn 'sport = :23790' | tail -n +2 | wc -l")
                .trim()
                == "1"
        });
    }
    under_writer(
        &env,
        &creds,
        "config-rolled-back",
        "juju config etcd port=23790 (a port another service holds)",
        3,
        || {
            let units = env.units("etcd");
            let before: Vec<String> = units.iter().map(|u| etcd_pid(&env, u)).collect();
            env.ok(&["config", "etcd", "port=23790"]);
            env.wait("one unit rolled back and the roll stopped", 4 * MIN, |s| {
                let msgs: Vec<String> = units.iter().map(|u| unit_message(s, u)).collect();
                msgs.iter()
                    .filter(|m| m.starts_with("Config not applied"))
                    .count()
                    == 1
                    && msgs
                        .iter()
                        .filter(|m| m.contains("Config change stopped"))
                        .count()
                        == 2
            });
            let s = env.status();
            let (i, failed) = units
                .iter()
                .enumerate()
                .find(|(_, u)| unit_message(&s, u).starts_with("Config not applied"))
                .unwrap();
            let msg = unit_message(&s, failed);
            assert!(msg.contains("listen-client-urls"), "{msg}");
            assert!(msg.contains("address already in use"), "{msg}");
            for (j, u) in units.iter().enumerate() {
                if j != i {
                    assert_eq!(
                        etcd_pid(&env, u),
                        before[j],
                        "{u} restarted after the failure"
                    );
                }
            }
            // The failed unit serves again on its previous port.
            let out = creds.etcdctl(&unit_endpoint(&env, failed), true, &["endpoint", "health"]);
            assert!(
                out.status.success(),
                "{failed} does not serve on 2379 again"
            );
            env.ok(&["config", "etcd", "--reset", "port"]);
        },
    );
}

/// Issue 22 (H2): a healthy unit removed while another member's machine is down. etcd
/// refuses the removal (strict reconfig: it would leave too few started members), so the
/// leaving member keeps running and its hook fails, naming the refusal; Juju retries the
/// hook, and once the crashed machine is back the removal completes. The cluster never
/// loses quorum (a write goes through while the removal waits) and no acknowledged write is
/// lost. On the code before the fix the member stood down anyway, leaving 1 of 3.
#[test]
fn a_unit_removed_while_another_machine_is_down_keeps_its_member_until_it_can_leave() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds) = three_units("fault-scale-down", work.path());
    let juju_leader = env.leader("etcd");
    let others: Vec<String> = env
        .units("etcd")
        .into_iter()
        .filter(|u| *u != juju_leader)
        .collect();
    let (down, victim) = (others[0].clone(), others[1].clone());
    under_writer(
        &env,
        &creds,
        "remove-while-one-down",
        "a unit removed while another unit's machine is down",
        2,
        || {
            let m = env.machine(&down);
            let init = env.machine_pid(&m);
            env.ok(&["crash-machine", &down]);
            env.ok(&["remove-unit", "--no-prompt", &victim]);
            env.wait("the refused removal's hook to fail", 3 * MIN, |s| {
                unit_entry(s, &victim)["workload-status"]["current"] == "error"
            });
            // The member still runs and the cluster keeps its quorum.
            assert_ne!(
                etcd_pid(&env, &victim),
                "0",
                "the refused member was stopped"
            );
            let live = [&juju_leader, &victim]
                .iter()
                .map(|u| unit_endpoint(&env, u))
                .collect::<Vec<_>>()
                .join(",");
            let put = creds.etcdctl(&live, true, &["put", "/faults/h2/quorum", "kept"]);
            assert!(
                put.status.success(),
                "no quorum while the removal waits: {}",
                String::from_utf8_lossy(&put.stderr)
            );
            let log = env.ok(&["debug-log", "--replay", "--no-tail", "--include", &victim]);
            assert!(
                log.contains("this member cannot leave the cluster yet"),
                "the refusal is not named in the log"
            );
            env.ok(&["start-machine", &down]);
            env.wait_booted(&m, init);
            env.wait("the removed unit to go", 5 * MIN, |s| {
                !units_of(s, "etcd").contains(&victim)
            });
        },
    );
    let out = creds.etcdctl(&endpoints(&env), true, &["member", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 2, "two members left: {list}");
    assert!(
        !list.contains(&victim.replace('/', "-")),
        "the removed unit is no member: {list}"
    );
}

#[test]
fn a_full_database_raises_nospace_and_compact_defrag_disarm_recover_it() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("fault-nospace", &["update-status-hook-interval=5s"]);
    deploy_healthy(
        &env,
        3,
        &tarball,
        &["--config", "quota_backend_bytes=16777216"],
    );
    let creds = Creds::from_unit(&env, "etcd/0");
    let eps = endpoints(&env);
    assert!(creds
        .etcdctl(&eps, true, &["put", "/kept", "yes"])
        .status
        .success());

    // Overwrite one key with 512 KiB values until etcd refuses: the old revisions fill it.
    let big = "x".repeat(512 * 1024);
    let value_file = work.path().join("value");
    std::fs::write(&value_file, &big).unwrap();
    let mut refused = String::new();
    for _ in 0..200 {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} --endpoints={eps} --cacert={} --cert={} --key={} put /big < {}",
                etcd35().join("etcdctl").display(),
                creds.path("ca.crt").display(),
                creds.path("client.crt").display(),
                creds.path("client.key").display(),
                value_file.display()
            ))
            .output()
            .unwrap();
        if !out.status.success() {
            refused = String::from_utf8_lossy(&out.stderr).into_owned();
            break;
        }
    }
    assert!(
        refused.contains("database space exceeded"),
        "etcd refused the write: {refused}"
    );

    env.wait("the NOSPACE alarm in status", 2 * MIN, |s| {
        unit_message(s, "etcd/0").contains("NOSPACE")
    });
    let s = env.status();
    let msg = unit_message(&s, "etcd/0");
    assert!(
        msg.contains("alarm-disarm"),
        "status says how to recover: {msg}"
    );
    // No upgrade starts over a raised alarm.
    let (_, task) = env.run_action("etcd/0", &["pre-upgrade-check", "version=3.5.2"]);
    assert_refused(&task, "alarm NOSPACE is raised");

    // The runbook: compact to the current revision, defrag every member, disarm.
    let (code, task) = env.run_action("etcd/0", &["compact", "physical=true"]);
    assert_eq!(code, 0, "compact: {task}");
    for unit in env.units("etcd") {
        let (code, task) = env.run_action(&unit, &["defrag"]);
        assert_eq!(code, 0, "defrag on {unit}: {task}");
        let before: u64 = task["results"]["db-size"]["before"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let after: u64 = task["results"]["db-size"]["after"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            after < before,
            "defrag shrank {unit}'s database: {before} -> {after}"
        );
    }
    let (code, task) = env.run_action("etcd/0", &["alarm-disarm"]);
    assert_eq!(code, 0, "alarm-disarm: {task}");
    assert_eq!(task["results"]["remaining"], "0", "{task}");

    assert!(
        creds
            .etcdctl(&eps, true, &["put", "/after", "ok"])
            .status
            .success(),
        "writes work again"
    );
    let out = creds.etcdctl(&eps, true, &["get", "/kept", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    wait_healthy_status(&env, 3, "alarm-disarm");
    members_agree(&env, &creds, "the NOSPACE recovery");
}

#[test]
fn a_majority_lost_for_good_is_rebuilt_by_recover_from_the_survivor() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds) = three_units("fault-majority", work.path());
    let survivor = env.leader("etcd");
    // The raft leader holds every committed write: make the survivor the raft leader, so that
    // nothing acknowledged can be missing from it.
    let id = member_id(&env, &creds, &survivor).expect("the survivor's member ID");
    let out = creds.etcdctl(&endpoints(&env), true, &["move-leader", &format!("{id:x}")]);
    assert!(
        out.status.success(),
        "move-leader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lost: Vec<String> = env
        .units("etcd")
        .into_iter()
        .filter(|u| *u != survivor)
        .collect();

    under_writer(
        &env,
        &creds,
        "majority-lost",
        "two of three machines destroyed, then recover",
        1,
        || {
            for u in &lost {
                env.ok(&["crash-machine", u]);
            }
            // Issue 22: while their units are deployed the lost members may come back: the
            // status does not name recover, and recover refuses naming the units that do
            // not answer (they may hold newer data) unless the operator names them.
            env.wait(
                "the survivor to wait for the deployed units",
                2 * MIN,
                |s| unit_message(s, &survivor).contains("still deployed"),
            );
            assert!(!unit_message(&env.status(), &survivor).contains("recover"));
            let (code, task) =
                env.run_action(&survivor, &["recover", "confirm-majority-lost=true"]);
            assert_eq!(code, 0, "{task}");
            assert_eq!(task["status"], "failed", "{task}");
            let why = task["message"].as_str().unwrap_or_default();
            assert!(
                lost.iter().all(|u| why.contains(u.as_str())) && why.contains("accept-unreachable"),
                "{task}"
            );
            let mut args = vec!["remove-unit", "--force", "--no-prompt"];
            args.extend(lost.iter().map(String::as_str));
            env.ok(&args);
            env.wait("the survivor to say it has no raft leader", 2 * MIN, |s| {
                units_of(s, "etcd") == vec![survivor.clone()]
                    && unit_message(s, &survivor).contains("run the recover action")
            });
            let (code, task) = env.run_action(&survivor, &["recover"]);
            assert_eq!(
                code, 0,
                "a refusal is a failed task that exits 0, as on Juju 3.6"
            );
            assert_eq!(task["status"], "failed", "{task}");
            assert!(
                task["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("confirm-majority-lost=true"),
                "the refusal says how to go on: {task}"
            );
            // Killed once after etcd restarted with force-new-cluster: the next action puts
            // the original data back first; recover then runs again from the start.
            env.crash_at(&survivor, "recover-forced");
            let (code, _) = env.run_action(&survivor, &["recover", "confirm-majority-lost=true"]);
            assert_ne!(code, 0, "recover was killed");
            assert!(env.crash_consumed(&survivor));
            // M3: until it is proven, the forced member serves clients on loopback only: the
            // undo that follows a crash there discards no acknowledged write.
            until("the forced member to answer on loopback", MIN, || {
                healthy_on_loopback(&env, &survivor)
            });
            let out = creds.etcdctl(
                &unit_endpoint(&env, &survivor),
                true,
                &[
                    "put",
                    "/while-unproven",
                    "v",
                    "--dial-timeout=2s",
                    "--command-timeout=5s",
                ],
            );
            assert!(
                !out.status.success(),
                "a client's write to the unproven forced member was acknowledged"
            );
            let (code, task) =
                env.run_action(&survivor, &["recover", "confirm-majority-lost=true"]);
            assert_eq!(code, 0, "recover after an interrupted one: {task}");
            // Said by the action itself, at once: the rebuilt member of one is healthy.
            let msg = unit_message(&env.status(), &survivor);
            assert!(msg.starts_with("Healthy with 1 known peers"), "{msg}");
        },
    );

    // The normal join path brings the cluster back to three.
    env.ok(&["add-unit", "etcd", "-n", "2"]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    members_agree(&env, &creds, "the rebuilt cluster grew back to three");
    let out = creds.etcdctl(&endpoints(&env), true, &["member", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[test]
fn hooks_killed_while_a_unit_leaves_and_while_an_upgrade_rolls_finish_the_operation() {
    let work = tempfile::tempdir().unwrap();
    let t34 = etcd_tarball(work.path(), &etcd34(), "3.4.23");
    let t35 = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("fault-hooks", &["update-status-hook-interval=10s"]);
    deploy_healthy(&env, 3, &t34, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");

    // leave: killed right after its member was removed, before etcd stopped.
    env.crash_at("etcd/2", "member-removed");
    under_writer(
        &env,
        &creds,
        "hook-kill-leave",
        "a leaving unit's hook killed right after its member was removed",
        2,
        || {
            env.ok(&["remove-unit", "--no-prompt", "etcd/2"]);
            env.wait("etcd/2 to go", 2 * MIN, |s| units_of(s, "etcd").len() == 2);
        },
    );
    let out = creds.etcdctl(&endpoints(&env), true, &["member", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "no member is stuck"
    );

    // upgrade: one unit killed after its binaries switched, the other after its restart.
    env.crash_at("etcd/0", "upgrade-switched");
    env.crash_at("etcd/1", "upgrade-restarted");
    under_writer(
        &env,
        &creds,
        "hook-kill-upgrade",
        "hooks killed after the binaries switched and after the restart (3.4.23 to 3.5.1)",
        2,
        || {
            env.ok(&[
                "attach-resource",
                "etcd",
                &format!("etcd={}", t35.display()),
            ]);
            wait_all_members_run(&env, &creds, 2, "3.5.1");
        },
    );
    assert!(
        env.crash_consumed("etcd/0") && env.crash_consumed("etcd/1"),
        "both hooks were killed"
    );
    for u in env.units("etcd") {
        assert!(running_etcd(&env, &u).contains("3.5.1"), "{u} runs 3.5.1");
    }
    // The killed turns held the member-down lock; the hooks that finished them freed it
    // (the roll did not wait for its 600 s lease, and nothing holds it now).
    let out = creds.etcdctl(&endpoints(&env), true, &["get", "etcd-charm/member-down"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the member-down lock is still held: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
