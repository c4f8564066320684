//! The etcd charm through the local controller, with real etcd and real TLS.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::etcd::*;
use support::*;

fn deploy(env: &Env, n: u32, resource: &Path) {
    deploy_etcd(env, n, resource, &[]);
}

#[test]
fn three_units_at_once_form_one_tls_cluster() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    // Machines with several addresses, as on Juju (an IPv6 ULA on eth0 beside IPv4, as
    // LXD's default bridge gives, and a second NIC, as on MAAS): network-get lists them
    // all, relation data carries only the first.
    let env = Env::new(
        "three",
        &[
            "update-status-hook-interval=1h",
            "harness-second-interface=true",
        ],
    );
    deploy(&env, 3, &tarball);
    let s = env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    for u in env.units("etcd") {
        let got = env.exec_ok(&u, "network-get cluster --format json");
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        let ingress = v["ingress-addresses"].as_array().unwrap();
        assert!(ingress.len() >= 3, "{u} has several addresses: {v}");
        assert_eq!(ingress[0], env.address(&u).as_str(), "{v}");
        // Each certificate verifies against its port's CA for the address its peers use.
        let addr = env.address(&u);
        for (cert, ca) in [("server", "ca"), ("peer", "peer-ca")] {
            let r = env.exec(
                &u,
                &format!("openssl verify -CAfile /etc/etcd/pki/{ca}.crt -verify_ip {addr} /etc/etcd/pki/{cert}.crt"),
            );
            assert_eq!(
                r.code, 0,
                "{u}'s {cert} certificate for {addr}: {}{}",
                r.stdout, r.stderr
            );
        }
    }
    assert_eq!(
        s["applications"]["etcd"]["application-status"]["current"],
        "active"
    );
    assert_eq!(s["applications"]["etcd"]["version"], "3.5.1");

    let creds = Creds::from_unit(&env, "etcd/0");
    let eps = endpoints(&env);
    let out = creds.etcdctl(&eps, true, &["member", "list", "-w", "json"]);
    assert!(
        out.status.success(),
        "member list with a client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(
        members
            .iter()
            .all(|m| m["name"].as_str().is_some_and(|n| !n.is_empty())
                && m.get("isLearner").is_none()),
        "{v}"
    );

    // Without a client certificate the TLS handshake is refused.
    let out = creds.etcdctl(&eps, false, &["member", "list"]);
    assert!(
        !out.status.success(),
        "member list without a client certificate must fail"
    );
    // Plain HTTP on the client port is refused too.
    let addr = env.address("etcd/0");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-m",
            "5",
            &format!("http://{addr}:2379/v3/cluster/member/list"),
            "-X",
            "POST",
            "-d",
            "{}",
        ])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        !body.contains("members"),
        "plain HTTP must not serve the API: {body}"
    );

    // H5: the peer port (raft, /members) takes members' peer certificates only: neither the
    // shared client certificate every `db` client holds nor a server certificate (both from
    // the client port's CA) gets a TLS session there. Asked from etcd/0, whose address its
    // own certificates name, of etcd/1's peer port.
    let ask = |pair: &str| ask_peer_port(&env, "etcd/0", "etcd/1", pair);
    let r = ask("peer");
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "200"),
        "a member's peer certificate is accepted on the peer port: {}",
        r.stderr
    );
    for pair in ["client", "server"] {
        let r = ask(pair);
        assert!(
            r.code != 0 && r.stdout.trim() != "200",
            "the {pair} certificate must be refused on the peer port: {} {}",
            r.stdout,
            r.stderr
        );
    }

    // Private keys are 0600 on every unit.
    for u in env.units("etcd") {
        let modes = env.exec_ok(&u, "stat -c '%a %n' /etc/etcd/pki/*.key");
        for line in modes.lines() {
            assert!(line.starts_with("600 "), "{u}: {line}");
        }
    }
    assert_no_key_material_in_logs(&env);
}

/// A deployed, healthy cluster of `n` with host credentials and a writer running through it.
fn cluster_with_writer(
    name: &str,
    n: u32,
    work: &Path,
) -> (Env, Creds, std::sync::Arc<std::sync::Mutex<String>>, Writer) {
    let tarball = etcd_tarball(work, &etcd35(), "3.5.1");
    let env = Env::new(name, &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, n, &tarball, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");
    let eps = std::sync::Arc::new(std::sync::Mutex::new(endpoints(&env)));
    let writer = Writer::start(creds.dir.path().to_path_buf(), eps.clone(), "/writer/");
    writer.wait_for_writes(20, "the writer to start");
    (env, creds, eps, writer)
}

#[test]
fn scale_1_3_5_3_1_without_losing_acknowledged_writes() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds, eps, writer) = cluster_with_writer("scale", 1, work.path());
    // Members of vanished units are also healed on update-status.
    env.ok(&["model-config", "update-status-hook-interval=10s"]);

    env.ok(&["add-unit", "etcd", "-n", "2"]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    *eps.lock().unwrap() = endpoints(&env);
    env.ok(&["add-unit", "etcd", "-n", "2"]);
    env.wait_units("etcd", 5, "active", "Healthy with 5 known peers", 3 * MIN);
    *eps.lock().unwrap() = endpoints(&env);

    // Remove the Juju leader and the raft leader (two different units if possible).
    let juju_leader = env.leader("etcd");
    let raft_leader = raft_leader_unit(&env, &creds);
    let mut victims = vec![juju_leader.clone()];
    if raft_leader != juju_leader {
        victims.push(raft_leader.clone());
    } else {
        victims.push(
            env.units("etcd")
                .into_iter()
                .find(|u| u != &juju_leader)
                .unwrap(),
        );
    }
    let remaining: Vec<String> = env
        .units("etcd")
        .into_iter()
        .filter(|u| !victims.contains(u))
        .collect();
    *eps.lock().unwrap() = remaining
        .iter()
        .map(|u| format!("https://{}:2379", env.address(u)))
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec!["remove-unit", "--no-prompt"];
    args.extend(victims.iter().map(String::as_str));
    env.ok(&args);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);

    let last = env.units("etcd")[0].clone();
    *eps.lock().unwrap() = format!("https://{}:2379", env.address(&last));
    let others: Vec<String> = env
        .units("etcd")
        .into_iter()
        .filter(|u| u != &last)
        .collect();
    let mut args = vec!["remove-unit", "--no-prompt"];
    args.extend(others.iter().map(String::as_str));
    env.ok(&args);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 3 * MIN);

    let ep = format!("https://{}:2379", env.address(&last));
    no_acknowledged_write_lost(&creds, &ep, writer, "scaling");
}

/// Three healthy units holding `/before-fault`; the client credentials of etcd/0.
fn three_healthy_with_a_key(env: &Env, tarball: &Path) -> Creds {
    deploy_healthy(env, 3, tarball, &[]);
    let creds = Creds::from_unit(env, "etcd/0");
    let out = creds.etcdctl(&endpoints(env), true, &["put", "/before-fault", "kept"]);
    assert!(out.status.success());
    creds
}

/// Waits until a unit's own endpoint serves the key written before a fault, with its old ID.
fn wait_member_back(env: &Env, creds: &Creds, unit: &str, id: u64, what: &str) {
    let ep = format!("https://{}:2379", env.address(unit));
    let deadline = std::time::Instant::now() + 2 * MIN;
    loop {
        let out = creds.etcdctl(
            &ep,
            true,
            &[
                "get",
                "/before-fault",
                "--print-value-only",
                "--consistency=s",
            ],
        );
        if String::from_utf8_lossy(&out.stdout).trim() == "kept" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{unit} did not serve its data again after {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        member_id(env, creds, unit),
        Some(id),
        "{unit} is the same member after {what}"
    );
}

#[test]
fn systemd_restarts_a_killed_member_and_a_rebooted_machine_rejoins_with_its_data() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    // No update-status: whatever brings etcd back here is systemd, not a hook.
    let env = Env::new("faults", &["update-status-hook-interval=1h"]);
    let creds = three_healthy_with_a_key(&env, &tarball);

    // kill -9 of etcd: systemd's Restart=on-failure brings the same member back.
    let id1 = member_id(&env, &creds, "etcd/1").expect("etcd/1 member ID");
    let show = |p: &str| {
        env.exec_ok(
            "etcd/1",
            &format!("systemctl show -p {p} --value etcd.service"),
        )
        .trim()
        .to_string()
    };
    let pid = show("MainPID");
    assert_ne!(pid, "0", "systemd runs etcd");
    env.exec_ok("etcd/1", &format!("kill -9 {pid}"));
    wait_member_back(&env, &creds, "etcd/1", id1, "kill -9");
    assert_eq!(show("NRestarts"), "1", "systemd restarted it once");
    assert_ne!(show("MainPID"), pid);
    // Restarts close together (a restore starts etcd twice, a roll once more): no start
    // rate limit leaves it down. Before, the limit stood in the unit's [Service] section,
    // which systemd ignores, and the sixth start within 10 s failed ("start-limit-hit").
    env.exec_ok(
        "etcd/1",
        "for i in 1 2 3 4 5 6 7; do systemctl restart etcd.service || exit 1; done; systemctl is-active etcd.service",
    );
    wait_member_back(&env, &creds, "etcd/1", id1, "seven restarts");

    // A clean reboot: etcd is stopped by systemd, started again at boot, same member.
    let id2 = member_id(&env, &creds, "etcd/2").expect("etcd/2 member ID");
    env.reboot_and_wait("etcd/2");
    wait_member_back(&env, &creds, "etcd/2", id2, "a reboot");
    env.exec_ok(
        "etcd/2",
        "systemctl is-enabled etcd.service && systemctl is-active etcd.service",
    );
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);

    // A corrupt local state file (etcd/1) or install record (etcd/2) stops the charm's
    // decisions with a message naming the file; the member keeps serving; a repaired file
    // brings the unit back.
    env.exec_ok("etcd/1", "cp /var/lib/etcd-charm/state.json /root/state.json && echo '{broken' > /var/lib/etcd-charm/state.json");
    env.exec_ok("etcd/2", "cp /var/lib/etcd-charm/install.json /root/install.json && echo '{\"version\": 3' > /var/lib/etcd-charm/install.json");
    env.ok(&["model-config", "update-status-hook-interval=2s"]);
    let msg = |s: &serde_json::Value, u: &str| unit_message(s, u);
    env.wait("etcd/1 and etcd/2 blocked naming their files", MIN, |s| {
        msg(s, "etcd/1").contains("/var/lib/etcd-charm/state.json is corrupt")
            && msg(s, "etcd/2").contains("/var/lib/etcd-charm/install.json is corrupt")
    });
    wait_member_back(&env, &creds, "etcd/1", id1, "a corrupt state file");
    wait_member_back(&env, &creds, "etcd/2", id2, "a corrupt install record");
    env.exec_ok(
        "etcd/1",
        "cp /root/state.json /var/lib/etcd-charm/state.json",
    );
    env.exec_ok(
        "etcd/2",
        "cp /root/install.json /var/lib/etcd-charm/install.json",
    );
    env.wait("etcd/1 and etcd/2 healthy again", MIN, |s| {
        msg(s, "etcd/1").starts_with("Healthy with 3")
            && msg(s, "etcd/2").starts_with("Healthy with 3")
    });
}

#[test]
fn a_member_that_left_the_cluster_stays_down_across_a_reboot() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("left", &["update-status-hook-interval=1h"]);
    let creds = three_healthy_with_a_key(&env, &tarball);
    // etcd/2 leaves as its stop hook makes it leave when Juju removes the unit (run here by
    // hand, so the machine is still there to reboot afterwards).
    env.exec_ok("etcd/2", "JUJU_DISPATCH_PATH=hooks/stop ./dispatch");
    let members = || {
        let out = creds.etcdctl(&endpoints(&env), true, &["member", "list"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    assert_eq!(members(), 2, "the member removed itself");
    env.exec_ok(
        "etcd/2",
        "! systemctl is-enabled etcd.service && ! systemctl is-active etcd.service",
    );
    env.reboot_and_wait("etcd/2");
    env.settle("2m");
    let after = env.exec("etcd/2", "systemctl is-active etcd.service; pgrep -x etcd");
    assert_eq!(
        after.stdout.trim(),
        "inactive",
        "etcd stays down after the reboot: {}",
        after.stdout
    );
    assert_eq!(members(), 2);
    let out = creds.etcdctl(
        &endpoints(&env),
        true,
        &["get", "/before-fault", "--print-value-only"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "kept",
        "the others serve on"
    );
}

/// A lone unit's install hook creates the CA and its client certificate and reports
/// Healthy, but the client certificate's secret can be read only after that hook commits:
/// the unit once reported Healthy without `client.crt`, and an operator's `juju exec`
/// (which runs between hooks) found no credentials; a benchmark that retried inside its exec
/// blocked the hooks that would have written them. Asked from inside the unit between
/// hooks: whenever it says Healthy, its client credentials are there.
#[test]
fn a_lone_unit_is_healthy_only_with_its_client_credentials() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("lonecreds", &["update-status-hook-interval=1h"]);
    deploy_etcd(&env, 1, &tarball, &[]);
    let deadline = std::time::Instant::now() + 2 * MIN;
    loop {
        // Queued as a task: it runs between two hooks, the first time just after install.
        let seen = env.exec_ok(
            "etcd/0",
            "case \"$(status-get --format json --include-data)\" in \
               *Healthy*) if [ -s /etc/etcd/pki/client.crt ] && [ -s /etc/etcd/pki/client.key ]; \
                 then echo with; else echo without; fi ;; \
               *) echo not-yet ;; esac",
        );
        match seen.trim() {
            "not-yet" => {}
            "with" => break,
            other => panic!("etcd/0 says Healthy {other} its client credentials"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "etcd/0 never said Healthy"
        );
    }
    let r = env.run(&[
        "ssh",
        "etcd/0",
        // `juju ssh` logs in as ubuntu: the charm's files are root's, read with sudo.
        "sudo openssl verify -CAfile /etc/etcd/pki/ca.crt /etc/etcd/pki/client.crt && sudo stat -c %a /etc/etcd/pki/client.key",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("client.crt: OK"), "{}", r.stdout);
    assert_eq!(r.stdout.lines().last(), Some("600"), "{}", r.stdout);

    // Hooks read the client secret only when the files are not the pair whose sha the
    // leader published: a client certificate lost or changed on disk is put back.
    let published = env.exec_ok(
        "etcd/0",
        "relation-get -r $(relation-ids cluster) --app client-cert-sha etcd",
    );
    assert_eq!(published.trim().len(), 16, "{published}");
    let original = env.exec_ok("etcd/0", "cat /etc/etcd/pki/client.crt");
    env.exec_ok("etcd/0", "rm /etc/etcd/pki/client.crt");
    env.ok(&["model-config", "update-status-hook-interval=2s"]);
    env.wait("the client certificate back", MIN, |_| {
        env.exec("etcd/0", "cat /etc/etcd/pki/client.crt").stdout == original
    });
    env.exec_ok("etcd/0", "echo changed > /etc/etcd/pki/client.crt");
    env.wait("the changed client certificate mended", MIN, |_| {
        env.exec("etcd/0", "cat /etc/etcd/pki/client.crt").stdout == original
    });
}

#[test]
fn a_leader_killed_right_after_member_add_still_admits_the_unit() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("joinkill", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 1, &tarball, &[]);
    // The leader's hook is SIGKILLed right after `member add`: its publication of the join
    // is discarded with the hook. Before the fix the learner waited for a join forever.
    env.crash_at("etcd/0", "member-added");
    env.ok(&["add-unit", "etcd"]);
    env.wait("the crash point to fire", 2 * MIN, |_| {
        env.crash_consumed("etcd/0")
    });
    env.wait_units("etcd", 2, "active", "Healthy with 2 known peers", 3 * MIN);
    let creds = Creds::from_unit(&env, "etcd/0");
    let out = creds.etcdctl(&endpoints(&env), true, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert!(
        members
            .iter()
            .all(|m| m["isLearner"].as_bool() != Some(true)),
        "the learner was promoted: {v}"
    );
}

#[test]
fn the_built_in_supervisor_runs_etcd_on_machines_without_an_init_system() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new(
        "supervisor",
        &[
            "update-status-hook-interval=1h",
            "harness-machine=namespace",
        ],
    );
    let creds = three_healthy_with_a_key(&env, &tarball);
    let id1 = member_id(&env, &creds, "etcd/1").expect("etcd/1 member ID");
    // Kill etcd and its supervisor: the next update-status reports the fault and restarts it.
    env.exec_ok(
        "etcd/1",
        "kill -9 $(cat /run/etcd-charm/supervisor.pid) $(cat /run/etcd-charm/etcd.pid)",
    );
    env.ok(&["model-config", "update-status-hook-interval=2s"]);
    env.wait("etcd/1 to report the fault", MIN, |s| {
        unit_message(s, "etcd/1").starts_with("UnHealthy")
    });
    wait_member_back(
        &env,
        &creds,
        "etcd/1",
        id1,
        "kill -9 of etcd and its supervisor",
    );
    env.wait("etcd/1 healthy again", MIN, |s| {
        unit_message(s, "etcd/1").starts_with("Healthy with 3")
    });
}

#[test]
fn config_changes_roll_one_unit_at_a_time_and_bad_values_block_without_change() {
    let work = tempfile::tempdir().unwrap();
    let (env, creds, _eps, writer) = cluster_with_writer("config", 3, work.path());

    // Invalid values block with a specific message and change nothing.
    let before = env.exec_ok("etcd/1", "md5sum /etc/etcd/etcd.conf.yml");
    env.ok(&[
        "config",
        "etcd",
        "heartbeat_interval=300",
        "election_timeout=1000",
    ]);
    env.wait_units(
        "etcd",
        3,
        "blocked",
        "invalid config: election_timeout 1000 must be at least 5 x heartbeat_interval",
        MIN,
    );
    assert_eq!(
        env.exec_ok("etcd/1", "md5sum /etc/etcd/etcd.conf.yml"),
        before
    );
    env.ok(&[
        "config",
        "etcd",
        "tls_cipher_suites=TLS_NOT_A_SUITE",
        "heartbeat_interval=100",
    ]);
    env.wait_units(
        "etcd",
        3,
        "blocked",
        "invalid config: unknown cipher suite \"TLS_NOT_A_SUITE\"",
        MIN,
    );
    env.ok(&[
        "config",
        "etcd",
        "--reset",
        "tls_cipher_suites,heartbeat_interval,election_timeout",
    ]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);
    assert_eq!(
        env.exec_ok("etcd/1", "md5sum /etc/etcd/etcd.conf.yml"),
        before
    );

    // A valid change rolls through the units one at a time: watched from the members
    // themselves (never two away at once), and every member's process restarted.
    let pid = |u: &str| env.exec_ok(u, "systemctl show -p MainPID --value etcd.service");
    let pids_before: Vec<String> = env.units("etcd").iter().map(|u| pid(u)).collect();
    let watch = Watch::start(&creds, endpoints(&env), Patience::Quick);
    env.ok(&[
        "config",
        "etcd",
        "heartbeat_interval=150",
        "election_timeout=1500",
    ]);
    env.wait("every unit to run with the new config", 3 * MIN, |_| {
        env.units("etcd").iter().all(|u| {
            env.exec_ok(u, "cat /etc/etcd/etcd.conf.yml")
                .contains("heartbeat-interval: 150")
        })
    });
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    let samples = watch.finish();
    // The watch sampled throughout the roll and never saw two members away. (A restart now
    // takes well under a second, so under load one can fall between two samples: that every
    // member restarted is proven by its PID below, not by the watch; the watch's samples
    // are a check that no two were seen away together, not a proof that none were.)
    assert!(
        samples.len() >= 2,
        "the watch did not sample while the roll ran: {samples:?}"
    );
    for s in &samples {
        assert!(
            s.versions.len() >= 2,
            "two members away at once during the config roll: {s:?}"
        );
    }
    let pids_after: Vec<String> = env.units("etcd").iter().map(|u| pid(u)).collect();
    for (i, (a, b)) in pids_before.iter().zip(&pids_after).enumerate() {
        assert_ne!(a, b, "etcd/{i} restarted with the new config");
    }

    // A new management port: every member's peer URL follows, one unit at a time.
    env.ok(&["config", "etcd", "management_port=2480"]);
    env.wait("peer URLs on 2480", 3 * MIN, |_| {
        let out = creds.etcdctl(&endpoints(&env), true, &["member", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().count() == 3 && text.lines().all(|l| l.contains(":2480"))
    });
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    no_acknowledged_write_lost(&creds, &endpoints(&env), writer, "rolling restarts");
}

#[test]
fn attaching_a_new_etcd_resource_upgrades_one_unit_at_a_time() {
    let work = tempfile::tempdir().unwrap();
    let t34 = etcd_tarball(work.path(), &etcd34(), "3.4.23");
    let t35 = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("upgrade", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 3, &t34, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");
    let eps = std::sync::Arc::new(std::sync::Mutex::new(endpoints(&env)));
    let writer = Writer::start(creds.dir.path().to_path_buf(), eps.clone(), "/writer/");
    writer.wait_for_writes(20, "the writer to start");
    // Watch every unit while the upgrade rolls: the binaries `current` points at and the
    // ones the running etcd was started from. A unit whose link already names the new
    // version while it runs the old one is switching; never two at once (before the fix,
    // every unit switched its link at the attach, long before its turn).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<bool>>::new()));
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        let env = env.share();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let row: Vec<bool> = ["etcd/0", "etcd/1", "etcd/2"]
                    .iter()
                    .map(|u| {
                        let out = env.exec(u, "echo $(readlink /opt/etcd/current) $(readlink /proc/$(systemctl show -p MainPID --value etcd.service)/exe)").stdout;
                        let f: Vec<&str> = out.split_whitespace().collect();
                        // switching: the link differs from the running binary's directory
                        !(f.len() == 2 && f[1].starts_with(&format!("{}/", f[0])))
                    })
                    .collect();
                samples.lock().unwrap().push(row);
            }
        })
    };
    // One hook at a time in the model: every unit's upgrade-charm hook runs before the
    // first restart turn, so a link switched out of turn is there for the sampler to see.
    env.ok(&["model-config", "harness-serial=true"]);
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", t35.display()),
    ]);
    wait_all_members_run(&env, &creds, 3, "3.5.1");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 2 * MIN);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap();
    let samples = samples.lock().unwrap();
    // (Samples queue behind hooks: a busy machine may take only a few.)
    assert!(!samples.is_empty(), "the sampler watched the upgrade");
    let worst = samples
        .iter()
        .map(|r| r.iter().filter(|x| **x).count())
        .max()
        .unwrap_or(0);
    assert!(
        worst <= 1,
        "at most one unit switches at a time; saw {worst} at once"
    );
    no_acknowledged_write_lost(&creds, &endpoints(&env), writer, "upgrade");
    assert_eq!(env.status()["applications"]["etcd"]["version"], "3.5.1");
}

#[test]
fn certificates_are_renewed_before_they_expire_without_disturbing_the_cluster() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("renew", &["update-status-hook-interval=1h"]);
    deploy_healthy(
        &env,
        3,
        &tarball,
        &["--config", "tls_certificate_lifetime=60s"],
    );
    let certs = |env: &Env| -> Vec<String> {
        env.units("etcd")
            .iter()
            .map(|u| env.exec_ok(u, "cat /etc/etcd/pki/server.crt /etc/etcd/pki/peer.crt"))
            .collect()
    };
    // H6: the shared client certificate (every client's, the packaged credentials') is
    // renewed on the same policy, by the leader, and every unit serves the new one.
    let client = |env: &Env| -> Vec<String> {
        env.units("etcd")
            .iter()
            .map(|u| env.exec_ok(u, "cat /etc/etcd/pki/client.crt"))
            .collect()
    };
    let first_client = client(&env)[0].clone();
    let first = certs(&env);
    env.ok(&["model-config", "update-status-hook-interval=3s"]);
    env.wait("every unit to get new certificates", 2 * MIN, |_| {
        certs(&env)
            .iter()
            .zip(&first)
            .all(|(now, before)| now != before)
    });
    env.wait(
        "the shared client certificate renewed on every unit",
        2 * MIN,
        |_| {
            let now = client(&env);
            now.iter().all(|c| *c != first_client && *c == now[0])
        },
    );
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", MIN);
    let creds = Creds::from_unit(&env, "etcd/0");
    let out = creds.etcdctl(&endpoints(&env), true, &["put", "/after-renewal", "ok"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = env.ok(&["debug-log"]);
    assert!(
        log.contains("due for renewal"),
        "renewal was requested by the units"
    );
    assert!(
        log.contains("renewed the shared client certificate"),
        "the leader renewed the client certificate"
    );
}

#[test]
fn an_upgrade_that_fails_on_one_unit_rolls_back_there_and_stops_the_roll() {
    let work = tempfile::tempdir().unwrap();
    let t35 = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    // An "etcd 3.5.99" that answers --version and cannot serve: it fails its health check.
    let fake = work.path().join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::copy(etcd35().join("etcdctl"), fake.join("etcdctl")).unwrap();
    std::fs::write(
        fake.join("etcd"),
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'etcd Version: 3.5.99'; exit 0; }\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(fake.join("etcd"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bad = etcd_tarball(work.path(), &fake, "3.5.99");
    let env = Env::new("upgrade-fails", &["update-status-hook-interval=10s"]);
    deploy_healthy(&env, 3, &t35, &[]);
    let creds = Creds::from_unit(&env, "etcd/0");

    // Every unit's hook is killed right after its restart on new binaries, before their
    // health check: the next hook must finish the turn, here by rolling the failed binaries
    // back. (A kill in a turn whose binaries work: tests/faults.rs.)
    for u in env.units("etcd") {
        env.crash_at(&u, "upgrade-restarted");
    }
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", bad.display()),
    ]);
    let s = env.wait(
        "one unit rolled back and the others stopped",
        3 * MIN,
        |s| {
            let msgs: Vec<String> = env
                .units("etcd")
                .iter()
                .map(|u| unit_message(s, u))
                .collect();
            msgs.iter()
                .filter(|m| m.contains("was rolled back to 3.5.1"))
                .count()
                == 1
                && msgs
                    .iter()
                    .filter(|m| m.starts_with("Upgrade stopped: etcd 3.5.99 failed"))
                    .count()
                    == 2
        },
    );
    // Let more hooks run: the roll stays stopped, every member still serves 3.5.1.
    env.settle("2m");
    wait_all_members_run(&env, &creds, 3, "3.5.1");
    let mut tried = 0;
    for u in env.units("etcd") {
        assert!(running_etcd(&env, &u).contains("3.5.1"), "{u} runs 3.5.1");
        if unit_message(&s, &u).contains("was rolled back to 3.5.1") {
            tried += 1;
        } else {
            let link = env.exec_ok(&u, "readlink /opt/etcd/current");
            assert!(
                !link.contains("3.5.99"),
                "{u} never switched to 3.5.99: {link}"
            );
        }
    }
    assert_eq!(tried, 1, "only one unit tried the failing version");
    let killed: Vec<String> = env
        .units("etcd")
        .into_iter()
        .filter(|u| env.crash_consumed(u))
        .collect();
    assert_eq!(
        killed.len(),
        1,
        "only the unit that tried was killed: {killed:?}"
    );

    // A working resource clears the stop.
    let again_dir = work.path().join("again");
    std::fs::create_dir_all(&again_dir).unwrap();
    let again = etcd_tarball(&again_dir, &etcd35(), "3.5.1");
    env.ok(&[
        "attach-resource",
        "etcd",
        &format!("etcd={}", again.display()),
    ]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    wait_all_members_run(&env, &creds, 3, "3.5.1");
    for u in env.units("etcd") {
        let record = env.exec_ok(&u, "cat /var/lib/etcd-charm/install.json");
        let record: serde_json::Value = serde_json::from_str(&record).unwrap();
        assert!(
            record["previous"].is_null(),
            "{u} finished its turn: {record}"
        );
    }
}

/// Issue 21: Juju places a unit on a machine that hosted a removed one (`--to`; manual,
/// MAAS and co-located machines). The new unit takes nothing of the old one's for its own
/// (its state said "left", its member's data and keys were the old member's): it moves
/// them aside and joins as a new member. A unit of another etcd application placed on a
/// machine where etcd runs touches nothing there and says why.
#[test]
fn a_unit_on_a_machine_that_hosted_a_removed_one_joins_and_a_second_etcd_there_refuses() {
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("reuse", &["update-status-hook-interval=1h"]);
    env.ok(&["add-machine"]);
    deploy_healthy(&env, 2, &tarball, &["--to", "0"]);
    assert_eq!(env.machine("etcd/0"), "0");
    env.ok(&["remove-unit", "--no-prompt", "etcd/0"]);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", 3 * MIN);
    // The machine stays (it came from add-machine), with what etcd/0 left on it.
    assert!(env.exec_ok("etcd/1", "true").is_empty());
    env.ok(&["add-unit", "etcd", "--to", "0"]);
    let s = env.wait_units("etcd", 2, "active", "Healthy with 2 known peers", 3 * MIN);
    assert_eq!(env.machine("etcd/2"), "0", "{s}");
    let creds = Creds::from_unit(&env, "etcd/1");
    let out = creds.etcdctl(&endpoints(&env), true, &["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["etcd1", "etcd2"], "{v}");
    // etcd/0's data and files were moved aside, not deleted.
    let kept = env.exec_ok(
        "etcd/2",
        "ls -d /var/lib/etcd.retired-etcd-0-* /var/lib/etcd-charm.retired-etcd-0-*",
    );
    assert_eq!(kept.lines().count(), 2, "{kept}");
    members_agree(&env, &creds, "after the reused machine joined");

    // Another etcd application's unit on etcd/1's machine: blocked, and nothing of
    // etcd/1's is touched, not even by its removal.
    let m1 = env.machine("etcd/1");
    let root = repo_root();
    let res = format!("etcd={}", tarball.display());
    env.ok(&[
        "deploy",
        root.to_str().unwrap(),
        "other",
        "--to",
        &m1,
        "--resource",
        &res,
    ]);
    env.wait("the second etcd refuses", 3 * MIN, |s| {
        let u = &s["applications"]["other"]["units"]["other/0"];
        u["workload-status"]["current"] == "blocked"
            && u["workload-status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("etcd unit etcd/1 is deployed on this machine too"))
    });
    env.ok(&["remove-application", "--no-prompt", "other"]);
    env.wait("the second etcd gone", 3 * MIN, |s| {
        s["applications"]["other"].is_null()
    });
    env.ok(&["run", "etcd/1", "health", "--wait", "2m"]);
    env.wait_units("etcd", 2, "active", "Healthy with 2 known peers", 3 * MIN);
    members_agree(&env, &creds, "after the second etcd went");
}
