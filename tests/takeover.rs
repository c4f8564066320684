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

/// The classic member's client credentials (easyrsa's global client pair, what every `db`
/// client of the classic charm holds), copied out of `unit`'s machine.
fn classic_creds(env: &Env, unit: &str) -> Creds {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca.crt", "client.crt", "client.key"] {
        let body = env.exec_ok(unit, &format!("cat /var/snap/etcd/common/{f}"));
        std::fs::write(dir.path().join(f), body).unwrap();
    }
    Creds { dir }
}

/// Each member's (ID, name), sorted.
fn members(creds: &Creds, eps: &str) -> Vec<(String, String)> {
    let out = creds.etcdctl(eps, true, &["member", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            Some((f.first()?.to_string(), f.get(2)?.to_string()))
        })
        .collect();
    v.sort();
    v
}

/// Issue 26's acceptance: a 3-unit classic cluster switched to this charm under a writer.
/// First the fixture's footprint is checked (the snap's service on its own config, members
/// etcd0.., the token in leader settings, the kicker, the reactive state database) and a
/// charm whose `data` storage is a filesystem is refused the switch, as Juju refuses it
/// (state/application.go, checkStorageUpgrade: the classic `data` is a block device).
/// No acknowledged write is lost and never more than one member is away (sampled
/// throughout); the members keep their names and IDs; the `db` client's credentials keep
/// working; every unit ends "Healthy with 3 known peers"; after a reboot no second etcd
/// runs (the snap's service and the kicker stay disabled); then a unit is added and
/// another removed as usual. Each step of a unit's takeover is killed once on the way
/// (SIGKILL at a named step: start, certificates, services stopped, data moved, recorded),
/// and the hook's retry finishes it.
#[test]
fn a_classic_cluster_is_taken_over_in_place_one_member_at_a_time_under_a_writer() {
    let work = tempfile::tempdir().unwrap();
    let env = snapd_model("classic-takeover");
    classic(&env, 3);
    // The classic footprint, as the classic charm leaves it.
    let units = env.units("etcd");
    for u in &units {
        env.exec_ok(
            u,
            "systemctl is-active --quiet snap.etcd.etcd && systemctl is-enabled --quiet cdk-service-kicker \
             && test -s /var/snap/etcd/common/etcd.conf.yml && test -d /var/snap/etcd/current/member/wal \
             && test -s /var/lib/juju/agents/unit-$(echo $JUJU_UNIT_NAME | tr / -)/charm/.unit-state.db",
        );
    }
    let creds = classic_creds(&env, "etcd/0");
    let eps = endpoints(&env);
    let before = members(&creds, &eps);
    let mut names: Vec<&str> = before.iter().map(|(_, n)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["etcd0", "etcd1", "etcd2"], "{before:?}");
    let leader = env.leader("etcd");
    let token = env.exec_ok(&leader, "leader-get token");
    assert_eq!(token.trim().len(), 6, "{token}");

    let filesystem = charm_with_filesystem_storage(work.path());
    let r = env.run(&["refresh", "etcd", "--switch", filesystem.to_str().unwrap()]);
    assert_ne!(r.code, 0, "the switch was accepted: {}", r.stdout);
    assert!(
        r.stderr.contains(
            "cannot upgrade application \"etcd\" to charm \"local:etcd-2\": existing storage \"data\" type changed from \"block\" to \"filesystem\""
        ),
        "{}",
        r.stderr
    );
    assert_eq!(env.status()["applications"]["etcd"]["charm-rev"], 1);

    let client = repo_root().join("tests/charms/etcd-client");
    env.ok(&["deploy", client.to_str().unwrap(), "client"]);
    env.ok(&["integrate", "etcd:db", "client:db"]);
    // The credentials the client saved from the classic units' db data. (It asks etcd's
    // JSON gateway, which etcd 3.4 does not serve with a config file that does not turn
    // it on, as the classic charm's does not: its clients speak gRPC, as etcdctl here.)
    env.wait("the client to receive its credentials", 3 * MIN, |_| {
        env.exec("client/0", "test -s /var/lib/etcd-client/connection_string")
            .code
            == 0
    });
    let db_creds = {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.crt", "client.crt", "client.key"] {
            let body = env.exec_ok("client/0", &format!("cat /var/lib/etcd-client/{f}"));
            std::fs::write(dir.path().join(f), body).unwrap();
        }
        Creds { dir }
    };
    let works = |creds: &Creds, eps: &str| {
        eps.split(',').all(|ep| {
            creds
                .etcdctl(ep, true, &["get", "/", "--prefix", "--limit=1"])
                .status
                .success()
        })
    };
    assert!(
        works(&db_creds, &endpoints(&env)),
        "the db client's credentials do not work"
    );
    let shared = std::sync::Arc::new(std::sync::Mutex::new(eps.clone()));
    let writer = Writer::start(creds.dir.path().to_path_buf(), shared, "/takeover/");
    writer.wait_for_writes(20, "before the switch");
    let watch = Watch::start(&creds, eps.clone(), Patience::Quick);

    // Every step of a unit's takeover killed once (SIGKILL): each hook's retry finishes it.
    let leader = env.leader("etcd");
    let others: Vec<String> = units.iter().filter(|u| **u != leader).cloned().collect();
    let kills: [(&str, &[&str]); 3] = [
        (&leader, &["takeover-start", "takeover-stopped"]),
        (&others[0], &["takeover-certs", "takeover-recorded"]),
        (&others[1], &["takeover-data-moved"]),
    ];
    for (u, steps) in kills {
        env.crash_at_each(u, steps);
    }
    let ours = repo_root();
    env.ok(&["refresh", "etcd", "--switch", ours.to_str().unwrap()]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 6 * MIN);
    for u in &units {
        assert!(env.crash_consumed(u), "{u}'s crash points did not all fire");
    }
    let samples = watch.finish();
    let fewest = samples.iter().map(|s| s.versions.len()).min().unwrap_or(0);
    assert!(
        fewest >= 2,
        "{fewest} of 3 members answered at one point of the takeover ({} samples)",
        samples.len()
    );
    assert_eq!(members(&creds, &eps), before, "member names or IDs changed");
    for u in env.units("etcd") {
        env.exec_ok(
            &u,
            "systemctl is-active --quiet etcd.service \
             && ! systemctl is-active --quiet snap.etcd.etcd \
             && ! systemctl is-enabled --quiet cdk-service-kicker \
             && grep -q '^data-dir: /var/snap/etcd/common/data' /etc/etcd/etcd.conf.yml",
        );
    }
    // The db client's saved credentials (the classic ones) still work, on every member.
    assert!(
        works(&db_creds, &eps),
        "the db client's credentials stopped working"
    );
    no_acknowledged_write_lost(&creds, &eps, writer, "takeover");

    // A reboot: only this charm's etcd comes back.
    env.reboot_and_wait("etcd/1");
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    env.exec_ok(
        "etcd/1",
        "systemctl is-active --quiet etcd.service && ! systemctl is-active --quiet snap.etcd.etcd \
         && test \"$(pgrep -x etcd | wc -l)\" = 1",
    );

    // Then scaling as usual: a unit added (its snap from the same resource), one removed.
    env.ok(&["add-unit", "etcd"]);
    env.wait_units("etcd", 4, "active", "Healthy with 4 known peers", 4 * MIN);
    env.ok(&["remove-unit", "--no-prompt", "etcd/2"]);
    env.wait_units("etcd", 3, "active", "Healthy with 3 known peers", 3 * MIN);
    let after = members(&creds, &endpoints(&env));
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(!after.iter().any(|(_, n)| n == "etcd2"), "{after:?}");
}
