//! Version upgrades along etcd's supported path, as an operator drives them: attach a newer
//! etcd resource and watch it roll. 3.4.23 (the classic charm's) → 3.5.16 (Debian 13's) →
//! 3.5.30 (Debian unstable's), under a continuous writer, one member at a time with the raft
//! leader last (watched from the members' own versions, not from logs), the second step
//! paused after its first unit and resumed by the action, then a downgrade refused with the
//! cluster untouched. The pre-upgrade check refuses each state it names (a NOSPACE alarm in
//! tests/faults.rs). The Debian package takes the same path from the machines' apt mirror.

mod support;

use serde_json::Value;
use std::sync::{Arc, Mutex};
use support::etcd::*;
use support::*;

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
    // The last sample in which every member answered: one that missed a slow answer (3 s
    // under the suite's load) says nothing about that member's version.
    let last = samples
        .iter()
        .rev()
        .find(|s| s.versions.len() == n)
        .expect("a sample with every member");
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

/// Twenty keys under /before/ and a writer that records every acknowledged write.
fn keys_and_writer(env: &Env) -> (Creds, Writer) {
    let creds = Creds::from_unit(env, "etcd/0");
    for i in 0..20 {
        let out = creds.etcdctl(
            &endpoints(env),
            true,
            &["put", &format!("/before/{i}"), "v"],
        );
        assert!(out.status.success());
    }
    let eps = Arc::new(Mutex::new(endpoints(env)));
    let writer = Writer::start(creds.dir.path().to_path_buf(), eps, "/writer/");
    writer.wait_for_writes(20, "the writer to start");
    (creds, writer)
}

fn keys_before_kept(env: &Env, creds: &Creds) {
    let out = creds.etcdctl(
        &endpoints(env),
        true,
        &["get", "/before/", "--prefix", "--keys-only"],
    );
    let kept = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(kept, 20, "the keys written on 3.4.23 are all there");
}

#[test]
fn the_classic_charms_3_4_steps_to_the_newest_3_5_one_member_at_a_time_leader_last() {
    let work = tempfile::tempdir().unwrap();
    let t34 = etcd_tarball(work.path(), &etcd_build("3.4.23"), "3.4.23");
    let t3516 = etcd_tarball(work.path(), &etcd_build("3.5.16"), "3.5.16");
    let t3530 = etcd_tarball(work.path(), &etcd_build("3.5.30"), "3.5.30");
    let env = Env::new("upgrades", &["update-status-hook-interval=3s"]);
    // The classic charm served the v2 API, and its v2 clients' keys come along.
    deploy_healthy(&env, 3, &t34, &["--config", "enable_v2=true"]);
    let (creds, writer) = keys_and_writer(&env);
    let v2_ep = unit_endpoint(&env, "etcd/0");
    creds.v2(&v2_ep, "PUT", "/classic/v2-key", Some("written on 3.4.23"));

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
    let watch = Watch::start(&creds, endpoints(&env), Patience::Patient);
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
    assert_refused(&task, "upgrade to 3.5.26 or later first");
    env.ok(&["config", "etcd", "pause_after_unit_upgrade=first"]);
    env.settle("2m");
    let watch = Watch::start(&creds, endpoints(&env), Patience::Patient);
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
        let s = sample(&creds, &endpoints(env), Patience::Patient);
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
    keys_before_kept(&env, &creds);
    for u in env.units("etcd") {
        assert_eq!(
            creds.v2(&unit_endpoint(&env, &u), "GET", "/classic/v2-key", None)["node"]["value"],
            "written on 3.4.23",
            "{u} serves the v2 key written before the upgrades"
        );
    }
    members_agree(&env, &creds, "after the upgrades");
    assert_eq!(env.status()["applications"]["etcd"]["version"], "3.5.30");
}

/// Each state the pre-upgrade check names is refused, and passes again once mended. The
/// cluster runs 3.5.30 and the check is for 3.6.0 (a 3.6 binary cannot be had here, the check
/// needs none), which adds the v2 store to what it looks at: the v2 API served, as the classic
/// charm did, with a v2 snapshot every 100 entries.
#[test]
fn the_pre_upgrade_check_refuses_each_bad_state_it_names() {
    let work = tempfile::tempdir().unwrap();
    let t = etcd_tarball(work.path(), &etcd_build("3.5.30"), "3.5.30");
    let env = Env::new("precheck", &["update-status-hook-interval=1h"]);
    deploy_healthy(
        &env,
        3,
        &t,
        &[
            "--config",
            "enable_v2=true",
            "--config",
            "snapshot_count=100",
        ],
    );
    let leader = env.leader("etcd");
    let refused = |says: &[&str]| {
        let (_, task) = env.run_action(&leader, &["pre-upgrade-check", "version=3.6.0"]);
        assert_eq!(task["status"], "failed", "{task}");
        let msg = task["message"].as_str().unwrap_or("").to_string();
        for s in says {
            assert!(msg.contains(s), "the refusal says {s:?}: {msg}");
        }
        msg
    };

    // A learner that has not started (a join half done): refused until it is gone.
    let creds = Creds::from_unit(&env, "etcd/0");
    let eps = endpoints(&env);
    // etcd refuses a new member until every member has been connected for a while.
    let added = std::cell::RefCell::new(Value::Null);
    env.wait("etcd to take a new learner", MIN, |_| {
        let out = creds.etcdctl(
            &eps,
            true,
            &[
                "member",
                "add",
                "pending",
                "--learner",
                "--peer-urls=https://10.254.254.254:2380",
                "-w",
                "json",
            ],
        );
        *added.borrow_mut() = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        out.status.success()
    });
    let id = added.borrow()["member"]["ID"].as_u64().unwrap();
    refused(&["has not started", "10.254.254.254"]);
    let out = creds.etcdctl(&eps, true, &["member", "remove", &format!("{id:x}")]);
    assert!(out.status.success(), "{out:?}");
    let (code, task) = env.run_action(&leader, &["pre-upgrade-check", "version=3.6.0"]);
    assert_eq!(code, 0, "ready again once the learner is gone: {task}");

    // Too little disk for the upgrade's snapshot: the leader's data moved onto a small tmpfs
    // (in its machine's own mount namespace), then filled. Room for what etcd allocates as
    // it starts (a 64 MiB WAL segment, bbolt's growth): a tmpfs of the data's size alone
    // failed to start etcd at times.
    env.exec_ok(
        &leader,
        "set -e; D=$(sed -n \"s/^data-dir: '\\?\\([^']*\\)'\\?$/\\1/p\" /etc/etcd/etcd.conf.yml); \
         systemctl stop etcd.service; mkdir -p /root/etcd-data; cp -a \"$D/.\" /root/etcd-data/; \
         mount -t tmpfs -o mode=0700,size=$(( $(du -sm \"$D\" | cut -f1) + 128 ))m tmpfs \"$D\"; \
         cp -a /root/etcd-data/. \"$D/\"; systemctl start etcd.service; \
         dd if=/dev/zero of=\"$D/filler\" bs=1M 2>/dev/null || true",
    );
    env.wait("the leader's member to answer again", MIN, |_| {
        creds
            .etcdctl(&eps, true, &["endpoint", "health", "--cluster"])
            .status
            .success()
    });
    refused(&["MiB free", "free some space first"]);
    env.exec_ok(
        &leader,
        "rm \"$(sed -n \"s/^data-dir: '\\?\\([^']*\\)'\\?$/\\1/p\" /etc/etcd/etcd.conf.yml)/filler\"",
    );
    let (code, task) = env.run_action(&leader, &["pre-upgrade-check", "version=3.6.0"]);
    assert_eq!(code, 0, "ready again with the space back: {task}");

    // A member down.
    let other = env
        .units("etcd")
        .into_iter()
        .find(|u| *u != leader)
        .unwrap();
    env.exec_ok(&other, "systemctl stop etcd.service");
    let (_, task) = env.run_action(&leader, &["pre-upgrade-check", "version=3.6.0"]);
    assert_eq!(task["status"], "failed", "{task}");
    let msg = task["message"].as_str().unwrap_or("").to_string();
    assert!(
        msg.contains(&other.replace('/', "")) && msg.contains("does not answer"),
        "the refusal names the member that is down: {msg}"
    );
    env.exec_ok(&other, "systemctl start etcd.service");
    env.wait("the check to pass again", MIN, |_| {
        env.run_action(&leader, &["pre-upgrade-check", "version=3.6.0"])
            .0
            == 0
    });

    // Keys written through the v2 API (as the classic charm's v2 clients did): 3.6 has no v2
    // store, so the step into it is refused until they are gone; 3.5 steps are not.
    let ep = unit_endpoint(&env, &leader);
    for i in 0..120 {
        creds.v2(&ep, "PUT", &format!("/classic/{i}"), Some("v2 value"));
    }
    assert_eq!(
        creds.v2(&ep, "GET", "/classic/7", None)["node"]["value"],
        "v2 value"
    );
    refused(&["v2 store", "written through the v2 API", "snapshot_count=1"]);
    let (code, task) = env.run_action(&leader, &["pre-upgrade-check", "version=3.5.30"]);
    assert_eq!(code, 0, "a 3.5 step does not care for the v2 store: {task}");
    for i in 0..120 {
        creds.v2(&ep, "DELETE", &format!("/classic/{i}"), None);
    }
    // The keys are gone, their v2 directory is not, and it counts as data too.
    refused(&["v2 store"]);
    creds.v2(&ep, "DELETE", "/classic?dir=true", None);
    // The newest v2 snapshot may still hold them (it can date from before the deletes): the
    // refusal's remedy, snapshot_count=1 for a while, makes etcd write one.
    env.ok(&["config", "etcd", "snapshot_count=1"]);
    let task = std::cell::RefCell::new(Value::Null);
    env.wait(
        "the check to pass once the v2 keys are gone",
        2 * MIN,
        |_| {
            // An entry for etcd to apply (and snapshot after), in case the restart made none.
            creds.etcdctl(&eps, true, &["put", "/nudge", "x"]);
            let (_, t) = env.run_action(&leader, &["pre-upgrade-check", "version=3.6.0"]);
            let done = t["status"] == "completed";
            *task.borrow_mut() = t;
            done
        },
    );
    let task = task.into_inner();
    assert!(
        task["results"]["output"]
            .as_str()
            .unwrap_or("")
            .contains("the v2 store holds only membership"),
        "{task}"
    );
}

/// A flat apt archive of one test's own, which its machines use as their mirror (under the
/// fixtures: the host's /var is the lower layer of the machines' overlays, so what is
/// published here later is seen there too). It starts with the fixtures' packages.
struct Mirror {
    dir: tempfile::TempDir,
}

impl Mirror {
    fn new() -> Mirror {
        let dir = tempfile::Builder::new()
            .prefix("mirror-")
            .tempdir_in(fixtures())
            .unwrap();
        let m = Mirror { dir };
        m.publish(&fixtures().join("archive"));
        m
    }

    fn url(&self) -> String {
        format!("apt-mirror=file:{}", self.dir.path().display())
    }

    /// Adds every .deb of `from` and indexes the archive again.
    fn publish(&self, from: &std::path::Path) {
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "deb") {
                let to = self.dir.path().join(p.file_name().unwrap());
                std::fs::hard_link(&p, &to)
                    .or_else(|_| std::fs::copy(&p, &to).map(|_| ()))
                    .unwrap();
            }
        }
        let out = std::process::Command::new("dpkg-scanpackages")
            .args(["--multiversion", "."])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::write(self.dir.path().join("Packages"), out.stdout).unwrap();
    }
}

/// Repacks the fixtures' etcd 3.4.23 packages as `version`, with an `etcd` that reports that
/// version and fails to start: a broken package as a mirror could serve one.
fn broken_packages(work: &std::path::Path, version: &str) -> std::path::PathBuf {
    let out_dir = work.join(format!("debs-{version}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    for pkg in ["etcd-server", "etcd-client"] {
        let deb = std::fs::read_dir(fixtures().join("debs"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{pkg}_"))
            })
            .unwrap();
        let root = work.join(format!("{pkg}-root"));
        let script = format!(
            "set -e; dpkg-deb -R '{deb}' '{root}'; \
             sed -i 's/^Version: .*/Version: {version}/' '{root}/DEBIAN/control'; \
             if [ -e '{root}/usr/bin/etcd' ]; then \
               printf '#!/bin/sh\\n[ \"$1\" = --version ] && {{ echo \"etcd Version: {upstream}\"; exit 0; }}\\necho broken >&2; exit 1\\n' > '{root}/usr/bin/etcd'; \
             fi; \
             dpkg-deb -Znone -b --root-owner-group '{root}' '{out}/{pkg}_{version}_amd64.deb' >/dev/null",
            deb = deb.display(),
            root = root.display(),
            out = out_dir.display(),
            upstream = version.split('-').next().unwrap(),
        );
        let st = std::process::Command::new("bash")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(st.success(), "repacking {pkg} as {version}");
    }
    out_dir
}

fn package_everywhere(env: &Env, version: &str) {
    for u in env.units("etcd") {
        env.exec_ok(
            &u,
            &format!(
                "test \"$(dpkg-query -W -f '${{Version}}' etcd-server)\" = '{version}' && \
                 test \"$(dpkg-query -W -f '${{Version}}' etcd-client)\" = '{version}' && \
                 apt-mark showhold | grep -qx etcd-server"
            ),
        );
    }
}

#[test]
fn the_debian_package_steps_up_from_the_apt_mirror_through_the_same_gates() {
    let work = tempfile::tempdir().unwrap();
    let mirror = Mirror::new();
    let env = Env::new(
        "debupgrade",
        &[&mirror.url(), "update-status-hook-interval=3s"],
    );
    env.ok(&["deploy", repo_root().to_str().unwrap(), "etcd", "-n", "3"]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 4 * MIN);
    assert_eq!(env.status()["applications"]["etcd"]["version"], "3.4.23");
    package_everywhere(&env, "3.4.23-4+b4");
    let (creds, writer) = keys_and_writer(&env);
    let leader = env.leader("etcd");

    // Input is checked where it enters; nothing newer in the mirror yet.
    for (args, says) in [
        (vec!["upgrade-package"], "is installed already"),
        (
            vec!["upgrade-package", "version=3.5;touch /tmp/x"],
            "is not a Debian package version",
        ),
        (
            vec!["upgrade-package", "version=3.9.9-1"],
            "the apt sources have no etcd-server 3.9.9-1",
        ),
    ] {
        let (_, task) = env.run_action(&leader, &args);
        assert_eq!(task["status"], "failed", "{args:?}: {task}");
        assert!(
            task["message"].as_str().unwrap_or("").contains(says),
            "{args:?}: {task}"
        );
    }

    // A broken package: the first unit to switch fails its health check and goes back to
    // the package it ran; the roll stops there; every member keeps serving 3.4.23.
    mirror.publish(&broken_packages(work.path(), "3.4.99-1"));
    let (code, task) = env.run_action(&leader, &["upgrade-package"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["target"], "3.4.99-1", "{task}");
    env.wait("the roll to stop on the broken package", 4 * MIN, |_| {
        let m = unit_messages(&env);
        m.len() == 3 && m.iter().all(|m| m.contains("3.4.99-1"))
    });
    wait_all_members_run(&env, &creds, 3, "3.4.23");
    package_everywhere(&env, "3.4.23-4+b4");
    let failed: Vec<String> = unit_messages(&env)
        .into_iter()
        .filter(|m| m.contains("was rolled back to 3.4.23"))
        .collect();
    assert_eq!(failed.len(), 1, "one unit rolled back: {failed:?}");

    // The real next release: staged everywhere, then one member at a time, leader last.
    mirror.publish(&fixtures().join("debs-3.5.16"));
    let watch = Watch::start(&creds, endpoints(&env), Patience::Patient);
    let (code, task) = env.run_action(&leader, &["upgrade-package"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["target"], "3.5.16-4", "{task}");
    wait_all_members_run(&env, &creds, 3, "3.5.16");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    assert_rolled(&watch.finish(), 3, "3.4.23", "3.5.16");
    package_everywhere(&env, "3.5.16-4");
    env.exec_ok(
        &leader,
        "ls /var/lib/etcd-charm/upgrade-snapshots/etcd-pre-upgrade-3.5.16-*.db",
    );

    // Back to the old package: refused by the same check, nothing changes.
    let (_, task) = env.run_action(&leader, &["upgrade-package", "version=3.4.23-4+b4"]);
    assert_refused(&task, "does not support downgrades");
    package_everywhere(&env, "3.5.16-4");

    no_acknowledged_write_lost(&creds, &endpoints(&env), writer, "package upgrade");
    keys_before_kept(&env, &creds);
    members_agree(&env, &creds, "after the package upgrade");
}

/// Issue 22 (M6): the install action takes its member down, so it refuses while another
/// member is down (two units at once could cost the quorum), and it checks the version step
/// as a rolling upgrade does: a downgrade from the running 3.5.1 to 3.4.23 is refused
/// before anything of it is put in place. Before, both went ahead.
#[test]
fn the_install_action_refuses_a_downgrade_and_a_second_member_down() {
    let work = tempfile::tempdir().unwrap();
    let t35 = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let t34 = etcd_tarball(work.path(), &etcd34(), "3.4.23");
    let env = Env::new("install-gates", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 3, &t35, &[]);
    let units = env.units("etcd");
    // Another member down: refused, this one untouched.
    let pid = etcd_pid(&env, &units[0]);
    env.exec_ok(&units[1], "systemctl stop etcd");
    let (_, task) = env.run_action(&units[0], &["install"]);
    assert_refused(&task, "does not answer healthy");
    assert_eq!(etcd_pid(&env, &units[0]), pid, "the member was restarted");
    env.exec_ok(&units[1], "systemctl start etcd");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);

    // M6/M11: another unit's operation holds the member-down lock (taken here by hand as
    // etcd/1's install action would, with its lease): the install action is refused and a
    // config change's turn waits, every member untouched; once it is released the roll goes.
    let creds = Creds::from_unit(&env, &units[0]);
    let eps = endpoints(&env);
    let lease = creds.etcdctl(&eps, true, &["lease", "grant", "600"]);
    let lease_id = String::from_utf8_lossy(&lease.stdout)
        .split_whitespace()
        .nth(1)
        .expect("a lease ID")
        .to_string();
    let out = creds.etcdctl(
        &eps,
        true,
        &[
            "put",
            "etcd-charm/member-down",
            &format!("{} install-action 0123", units[1]),
            "--lease",
            &lease_id,
        ],
    );
    assert!(out.status.success());
    let pids: Vec<String> = units.iter().map(|u| etcd_pid(&env, u)).collect();
    let (_, task) = env.run_action(&units[0], &["install"]);
    assert_refused(
        &task,
        &format!("{} install-action has its member down", units[1]),
    );
    env.ok(&["model-config", "update-status-hook-interval=3s"]);
    env.ok(&[
        "config",
        "etcd",
        "heartbeat_interval=150",
        "election_timeout=1500",
    ]);
    env.wait("a turn to wait for the lock", 2 * MIN, |s| {
        units
            .iter()
            .any(|u| unit_message(s, u).contains("the member-down lock"))
    });
    let now: Vec<String> = units.iter().map(|u| etcd_pid(&env, u)).collect();
    assert_eq!(now, pids, "a member restarted while another held the lock");
    let out = creds.etcdctl(&eps, true, &["lease", "revoke", &lease_id]);
    assert!(out.status.success());
    env.wait(
        "every member restarted with the new config",
        3 * MIN,
        |_| {
            units.iter().zip(&pids).all(|(u, p)| {
                etcd_pid(&env, u) != *p
                    && env
                        .exec_ok(u, "cat /etc/etcd/etcd.conf.yml")
                        .contains("heartbeat-interval: 150")
            })
        },
    );
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    env.ok(&["model-config", "update-status-hook-interval=1h"]);
    let out = creds.etcdctl(&eps, true, &["get", "etcd-charm/member-down"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "every turn released the lock"
    );

    // A downgrade: refused naming the step; 3.5.1 still runs.
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", t34.display()),
    ]);
    env.settle("2m");
    let (_, task) = env.run_action(&units[0], &["install"]);
    assert_refused(&task, "3.4.23");
    assert!(
        env.exec_ok(&units[0], "/opt/etcd/current/etcd --version")
            .contains("etcd Version: 3.5.1"),
        "the downgrade was installed"
    );
    assert!(
        env.exec(&units[0], "test -e /opt/etcd/3.4.23").code != 0,
        "the refused version was put in place"
    );

    // Issue 23: the action SIGKILLed once the new binaries are switched in, before they are
    // proven: the unit's transaction is left, and the next hook undoes it (3.5.1 again,
    // healthy). Before, nothing finished a killed install action. The roll the new
    // resource starts is paused after its first unit, so a unit it has not reached keeps
    // 3.5.1 unless the undo failed.
    env.ok(&["config", "etcd", "pause_after_unit_upgrade=first"]);
    let t3516 = etcd_tarball(work.path(), &etcd_build("3.5.16"), "3.5.16");
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", t3516.display()),
    ]);
    let current = |u: &str| {
        env.exec_ok(u, "readlink /opt/etcd/current")
            .trim()
            .to_string()
    };
    env.wait("the upgrade paused after one unit", 3 * MIN, |_| {
        unit_messages(&env)
            .iter()
            .any(|m| m.contains("paused after"))
    });
    let unit = units
        .iter()
        .find(|u| current(u).ends_with("3.5.1"))
        .expect("a unit the paused roll has not reached")
        .clone();
    env.crash_at(&unit, "install-action-switched");
    let (code, _) = env.run_action(&unit, &["install"]);
    assert_ne!(code, 0, "the killed install action fails");
    env.exec_ok(&unit, "test -e /var/lib/etcd-charm/txn.json");
    assert!(
        current(&unit).ends_with("3.5.16"),
        "the kill came after the switch"
    );
    env.ok(&["model-config", "update-status-hook-interval=2s"]);
    env.wait("the next hook to undo the switch", 2 * MIN, |_| {
        env.exec(&unit, "test ! -e /var/lib/etcd-charm/txn.json")
            .code
            == 0
    });
    assert!(current(&unit).ends_with("3.5.1"), "the undo put 3.5.1 back");
    wait_all_healthy(&env, &creds, "after the undo of the killed install action");
    env.ok(&["model-config", "update-status-hook-interval=1h"]);
    assert!(env
        .exec_ok(&unit, "/opt/etcd/current/etcd --version")
        .contains("etcd Version: 3.5.1"));
    // Run again, it goes through.
    let (code, task) = env.run_action(&unit, &["install"]);
    assert_eq!(code, 0, "{task}");
    assert_eq!(task["results"]["version"], "3.5.16", "{task}");
}

/// H5 for a deployment made before the peer port had a CA of its own (the charm of commit
/// 6c7d532, built by tests/setup.sh): `refresh --path` to this charm moves the peer port to
/// the peer CA by the steps of a CA move (both trusted, new peer certificates one healthy
/// unit at a time, the old CA dropped), under a writer: no acknowledged write lost, never two
/// members away at once, the client port's CA untouched, and at the end the shared client
/// certificate is refused on the peer port.
#[test]
fn a_deployment_from_before_the_peer_ca_moves_its_peer_port_to_it_one_member_at_a_time() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("peer-ca", &[]);
    let old = fixtures().join("charm-6c7d532");
    let res = format!("etcd={}", tarball.display());
    env.ok(&[
        "deploy",
        old.to_str().unwrap(),
        "etcd",
        "-n",
        "3",
        "--resource",
        &res,
    ]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    let r = env.exec("etcd/0", "test -e /etc/etcd/pki/peer-ca.crt");
    assert_ne!(r.code, 0, "the old charm has no peer CA");
    let client_ca = env.exec_ok("etcd/0", "cat /etc/etcd/pki/ca.crt");
    let (creds, writer) = keys_and_writer(&env);
    let pids: Vec<String> = env
        .units("etcd")
        .iter()
        .map(|u| etcd_pid(&env, u))
        .collect();
    let watch = Watch::start(&creds, endpoints(&env), Patience::Quick);
    let root = repo_root();
    env.ok(&["refresh", "etcd", "--path", root.to_str().unwrap()]);
    until(
        "every unit's peer port on the peer CA alone",
        5 * MIN,
        || {
            let s = env.status();
            env.units("etcd").iter().all(|u| {
                let peer_ca = env.exec_ok(u, "cat /etc/etcd/pki/peer-ca.crt 2>/dev/null || true");
                let peer = env.exec_ok(u, "cat /etc/etcd/pki/peer.crt");
                peer_ca.matches("BEGIN CERTIFICATE").count() == 1
                    && peer_ca.trim() != client_ca.trim()
                    && openssl_verifies(&peer_ca, &peer)
                    && unit_message(&s, u) == "Healthy with 3 known peers"
            })
        },
    );
    let samples = watch.finish();
    assert!(samples.len() > 3, "too few samples: {}", samples.len());
    for s in &samples {
        assert!(
            s.versions.len() + 1 >= 3,
            "two members away at once while the peer port moved: {s:?}"
        );
    }
    // etcd reads its trusted CAs only when it starts: every member restarted.
    for (u, before) in env.units("etcd").iter().zip(&pids) {
        assert_ne!(
            &etcd_pid(&env, u),
            before,
            "{u} never restarted onto the peer CA"
        );
    }
    for u in env.units("etcd") {
        assert_eq!(
            env.exec_ok(&u, "cat /etc/etcd/pki/ca.crt").trim(),
            client_ca.trim(),
            "{u}: the client port's CA is not touched"
        );
    }
    let r = ask_peer_port(&env, "etcd/0", "etcd/1", "client");
    assert!(
        r.code != 0 && r.stdout.trim() != "200",
        "the client certificate is refused on the peer port after the move: {} {}",
        r.stdout,
        r.stderr
    );
    let tally = no_acknowledged_write_lost(&creds, &endpoints(&env), writer, "peer CA move");
    println!(
        "peer CA move: {} writes acknowledged, longest time without an acknowledged write {:.1} s",
        tally.acked,
        tally.longest_gap.as_secs_f64()
    );
    members_agree(&env, &creds, "after the peer CA move");
    keys_before_kept(&env, &creds);
}
