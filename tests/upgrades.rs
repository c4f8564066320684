//! Version upgrades along etcd's supported path, as an operator drives them: attach a newer
//! etcd resource and watch it roll. 3.4.23 (the classic charm's) → 3.5.16 (Debian 13's) →
//! 3.5.30 (Debian unstable's), under a continuous writer, one member at a time with the raft
//! leader last (watched from the members' own versions, not from logs), the second step
//! paused after its first unit and resumed by the action, then a downgrade refused with the
//! cluster untouched. The pre-upgrade check refuses each state it names.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use support::etcd::*;
use support::*;

/// One look at the cluster from the host: each answering member's version, and the raft
/// leader's member ID.
#[derive(Debug, Clone)]
struct Sample {
    versions: BTreeMap<u64, String>,
    leader: u64,
}

/// Each endpoint is asked on its own with a short timeout, so a member that is down (in its
/// turn) shows as missing instead of holding the sample until it is back.
fn sample(creds: &Creds, eps: &str) -> Sample {
    let mut s = Sample {
        versions: BTreeMap::new(),
        leader: 0,
    };
    let answers: Vec<Value> = eps
        .split(',')
        .filter_map(|ep| {
            let out = creds.etcdctl(
                ep,
                true,
                &["endpoint", "status", "-w", "json", "--command-timeout=3s"],
            );
            serde_json::from_slice::<Value>(&out.stdout).ok()
        })
        .collect();
    for e in answers
        .iter()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
    {
        let st = &e["Status"];
        if let Some(id) = st["header"]["member_id"].as_u64() {
            s.versions
                .insert(id, st["version"].as_str().unwrap_or("").to_string());
            s.leader = s.leader.max(st["leader"].as_u64().unwrap_or(0));
        }
    }
    s
}

/// Samples the members until stopped.
struct Watch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Watch {
    fn start(creds: &Creds, eps: String) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(vec![]));
        let creds = creds.copy();
        let (s2, v2) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                let s = sample(&creds, &eps);
                v2.lock().unwrap().push(s);
            }
        });
        Watch {
            stop,
            samples,
            thread,
        }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.samples).unwrap().into_inner().unwrap()
    }
}

/// Checks a roll from `from` to `to` on `n` members, as the samples saw it: never more than
/// one member away (restarting) at once, every member ends on `to`, members switch one at a
/// time, and the member still on `from` when all others had switched was the raft leader.
fn assert_rolled(samples: &[Sample], n: usize, from: &str, to: &str) {
    assert!(samples.len() > 3, "too few samples: {}", samples.len());
    for s in samples {
        assert!(
            s.versions.len() + 1 >= n,
            "two members away at once during the {from} → {to} roll: {s:?}"
        );
        assert!(
            s.versions.values().all(|v| v == from || v == to),
            "a member on a third version: {s:?}"
        );
    }
    let on_new = |s: &Sample| s.versions.values().filter(|v| *v == to).count();
    let last = samples.last().unwrap();
    assert_eq!(on_new(last), n, "every member ends on {to}: {last:?}");
    // The number of members on the new version never drops, and rises one at a time.
    let counts: Vec<usize> = samples
        .iter()
        .filter(|s| s.versions.len() == n)
        .map(on_new)
        .collect();
    for w in counts.windows(2) {
        assert!(w[1] >= w[0], "a member went back to {from}: {counts:?}");
    }
    // No member is switched while it leads, unless it is the last one (leadership can move
    // by itself between turns; the leader's unit then waits for the end).
    let full: Vec<&Sample> = samples.iter().filter(|s| s.versions.len() == n).collect();
    let switched_while_leading = full.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        (on_new(b) < n)
            .then(|| {
                b.versions
                    .iter()
                    .find(|(id, v)| {
                        *v == to
                            && a.versions.get(id).map(String::as_str) == Some(from)
                            && **id == a.leader
                    })
                    .map(|(id, _)| *id)
            })
            .flatten()
    });
    let mut history: Vec<String> = samples
        .iter()
        .map(|s| {
            let v: Vec<String> = s
                .versions
                .iter()
                .map(|(id, v)| {
                    format!(
                        "{:x}{}={v}",
                        id & 0xfff,
                        if *id == s.leader { "*" } else { "" }
                    )
                })
                .collect();
            v.join(" ")
        })
        .collect();
    history.dedup();
    assert!(
        switched_while_leading.is_none(),
        "member {:x} was switched while it was the raft leader and others still waited; the \
         roll as sampled (* = raft leader):\n{}",
        switched_while_leading.unwrap_or(0),
        history.join("\n")
    );
    eprintln!(
        "{from} → {to} as sampled (* = raft leader):\n{}",
        history.join("\n")
    );
}

fn unit_messages(env: &Env) -> Vec<String> {
    let s = env.status();
    env.units("etcd")
        .iter()
        .map(|u| unit_message(&s, u))
        .collect()
}

#[test]
fn the_classic_charms_3_4_steps_to_the_newest_3_5_one_member_at_a_time_leader_last() {
    let work = tempfile::tempdir().unwrap();
    let t34 = etcd_tarball(work.path(), &etcd_build("3.4.23"), "3.4.23");
    let t3516 = etcd_tarball(work.path(), &etcd_build("3.5.16"), "3.5.16");
    let t3530 = etcd_tarball(work.path(), &etcd_build("3.5.30"), "3.5.30");
    let env = Env::new("upgrades", &["update-status-hook-interval=3s"]);
    deploy_healthy(&env, 3, &t34, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");
    for i in 0..20 {
        let out = creds.etcdctl(
            &endpoints(&env),
            true,
            &["put", &format!("/before/{i}"), "v"],
        );
        assert!(out.status.success());
    }
    let eps = Arc::new(Mutex::new(endpoints(&env)));
    let writer = Writer::start(creds.dir.path().to_path_buf(), eps.clone(), "/writer/");
    writer.wait_for_writes(20, "the writer to start");

    // The pre-upgrade check: ready for 3.5.16; each bad step refused with the next step.
    let leader = env.leader("etcd");
    let (code, task) = env.run_action(&leader, &["pre-upgrade-check", "version=3.5.16"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["ready"], "true", "{task}");
    for (version, says) in [
        ("3.4.0", "does not support downgrades"),
        ("3.6.2", "skips 3.5"),
        ("3.7.0", "skips 3.5"),
    ] {
        let (_, task) = env.run_action(
            &leader,
            &["pre-upgrade-check", &format!("version={version}")],
        );
        assert_eq!(task["status"], "failed", "{version}: {task}");
        assert!(
            task["message"].as_str().unwrap_or("").contains(says),
            "{version}: {task}"
        );
    }

    // 3.4.23 → 3.5.16
    let watch = Watch::start(&creds, endpoints(&env));
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", t3516.display()),
    ]);
    wait_all_members_run(&env, &creds, 3, "3.5.16");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    assert_rolled(&watch.finish(), 3, "3.4.23", "3.5.16");
    // The snapshot taken before the first turn is kept on the leader.
    env.exec_ok(
        &leader,
        "ls /var/lib/etcd-charm/upgrade-snapshots/etcd-pre-upgrade-3.5.16-*.db",
    );

    // 3.5.16 → 3.5.30, paused after the first unit.
    let (_, task) = env.run_action(&leader, &["pre-upgrade-check", "version=3.6.0"]);
    assert!(
        task["message"]
            .as_str()
            .unwrap_or("")
            .contains("upgrade to 3.5.26 or later first"),
        "{task}"
    );
    env.ok(&["config", "etcd", "pause_after_unit_upgrade=first"]);
    env.settle("2m");
    let watch = Watch::start(&creds, endpoints(&env));
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", t3530.display()),
    ]);
    env.wait("the upgrade paused after one unit", 3 * MIN, |_| {
        unit_messages(&env)
            .iter()
            .any(|m| m.contains("paused after"))
    });
    let on_new = |env: &Env| {
        let s = sample(&creds, &endpoints(env));
        s.versions.values().filter(|v| *v == "3.5.30").count()
    };
    assert_eq!(
        on_new(&env),
        1,
        "exactly one member upgraded before the pause"
    );
    // The leader itself holds the roll (its own status says so, from a hook after the pause).
    env.wait("the leader to hold the roll", MIN, |s| {
        unit_message(s, &leader).contains("(1 of 3 units done): run the resume-upgrade action")
    });
    assert_eq!(on_new(&env), 1, "the pause holds");
    let (code, task) = env.run_action(&leader, &["resume-upgrade"]);
    assert_eq!(code, 0, "{task}");
    wait_all_members_run(&env, &creds, 3, "3.5.30");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    assert_rolled(&watch.finish(), 3, "3.5.16", "3.5.30");
    let (_, task) = env.run_action(&leader, &["resume-upgrade"]);
    assert_eq!(task["status"], "failed", "nothing paused: {task}");

    // A downgrade is refused: every unit blocked saying so, every member still on 3.5.30.
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", t3516.display()),
    ]);
    env.wait("every unit to refuse the downgrade", 2 * MIN, |_| {
        let m = unit_messages(&env);
        m.len() == 3 && m.iter().all(|m| m.contains("does not support downgrades"))
    });
    wait_all_members_run(&env, &creds, 3, "3.5.30");
    for u in env.units("etcd") {
        env.exec_ok(&u, "readlink /opt/etcd/current | grep -q 3.5.30");
    }
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", t3530.display()),
    ]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);

    no_acknowledged_write_lost(&creds, &endpoints(&env), writer, "upgrades");
    let out = creds.etcdctl(
        &endpoints(&env),
        true,
        &["get", "/before/", "--prefix", "--keys-only"],
    );
    let kept = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(kept, 20, "the keys written on 3.4.23 are all there");
    members_agree(&env, &creds, "after the upgrades");
    assert_eq!(env.status()["applications"]["etcd"]["version"], "3.5.30");
}

#[test]
fn the_pre_upgrade_check_refuses_while_a_member_is_down() {
    let work = tempfile::tempdir().unwrap();
    let t = etcd_tarball(work.path(), &etcd_build("3.5.16"), "3.5.16");
    let env = Env::new("precheck", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 3, &t, &[]);
    let leader = env.leader("etcd");
    let other = env
        .units("etcd")
        .into_iter()
        .find(|u| *u != leader)
        .unwrap();
    env.exec_ok(&other, "systemctl stop etcd.service");
    let (_, task) = env.run_action(&leader, &["pre-upgrade-check", "version=3.5.30"]);
    assert_eq!(task["status"], "failed", "{task}");
    let msg = task["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.contains(&other.replace('/', "")) && msg.contains("does not answer"),
        "the refusal names the member that is down: {msg}"
    );
    env.exec_ok(&other, "systemctl start etcd.service");
    env.wait("the check to pass again", MIN, |_| {
        env.run_action(&leader, &["pre-upgrade-check", "version=3.5.30"])
            .0
            == 0
    });
}
