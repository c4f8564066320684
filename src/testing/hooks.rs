//! Whole hooks in memory: Juju's side is the in-memory `World` (state in: config,
//! leadership, relation data, secrets, goal state; state out: statuses, relation data,
//! secrets, and every hook tool call), the unit's side is a real machine namespace with real
//! files and a real etcd (the fixtures' 3.5.1, installed by the hook from the `etcd`
//! resource). Each test names the phase it covers and checks its effect in both.

use super::juju::{Relation, World};
use super::machine::{Machine, ADDRESS};
use charmkit::juju::Bag;
use std::path::{Path, PathBuf};

const UNIT: &str = "etcd/0";

/// The fixtures' etcd 3.5.1 as an upstream release tarball in `dir`.
fn etcd_tarball(dir: &Path) -> PathBuf {
    let fixtures = std::env::var("ETCD_CHARM_FIXTURES")
        .unwrap_or_else(|_| "/var/cache/etcd-charm-test".into());
    let bin = Path::new(&fixtures).join("etcd-3.5.1");
    assert!(
        bin.is_dir(),
        "{} is missing: run tests/setup.sh",
        bin.display()
    );
    super::tarball::etcd_tarball(dir, &bin, "3.5.1")
}

/// The config Juju hands a charm nobody configured: every option's default.
fn default_config() -> std::collections::BTreeMap<String, serde_json::Value> {
    let doc: serde_json::Value = serde_yaml::from_str(include_str!("../../config.yaml")).unwrap();
    doc["options"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, o)| Some((k.clone(), o.get("default")?.clone())))
        .collect()
}

/// One unit of a fresh application: its peer relation holds it alone.
fn world(leader: bool, tarball: &Path) -> World {
    let mine: Bag = [
        ("ingress-address", ADDRESS.to_string()),
        ("private-address", ADDRESS.to_string()),
        ("egress-subnets", format!("{ADDRESS}/32")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let peers = Relation {
        endpoint: "cluster".into(),
        units: [(UNIT.to_string(), mine)].into(),
        apps: [("etcd".to_string(), Bag::new())].into(),
    };
    World {
        unit: UNIT.into(),
        leader,
        config: default_config(),
        relations: [("cluster:0".to_string(), peers)].into(),
        addresses: vec![ADDRESS.into()],
        resources: [("etcd".to_string(), tarball.display().to_string())].into(),
        goal: [(UNIT.to_string(), "active".to_string())].into(),
        ..World::default()
    }
}

/// Runs hooks in order; each must succeed.
fn hooks(m: &Machine, w: &mut World, names: &[&str]) {
    for h in names {
        let r = m.run(w, &format!("hooks/{h}"));
        assert!(
            r.ok,
            "hook {h} failed: {}\nstatus {:?}\nlog {:?}",
            r.error, w.unit_status, w.logs
        );
    }
}

fn app_bag(w: &World) -> &Bag {
    &w.relations["cluster:0"].apps["etcd"]
}

/// A deployed leader, formed and healthy: install, leader-elected, config-changed, start.
fn formed() -> (Machine, World) {
    let m = Machine::new();
    let tarball = etcd_tarball(m.scratch.path());
    let mut w = world(true, &tarball);
    hooks(
        &m,
        &mut w,
        &["install", "leader-elected", "config-changed", "start"],
    );
    (m, w)
}

/// etcdctl inside the machine, with the unit's own certificates.
fn etcdctl(m: &Machine, args: &str) -> String {
    m.sh(&format!(
        "ETCDCTL_API=3 /opt/etcd/current/etcdctl --endpoints https://{ADDRESS}:2379 \
         --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/server.crt \
         --key /etc/etcd/pki/server.key {args}"
    ))
}

/// install: the resource's etcd is installed, its version told to Juju, the unit's keys
/// are private; leader-elected: the leader makes the CA and the cluster token; then the
/// member forms alone and answers, and the unit says so.
#[test]
fn install_and_leader_elected_form_a_healthy_member() {
    let m = Machine::new();
    let tarball = etcd_tarball(m.scratch.path());
    let mut w = world(true, &tarball);
    hooks(&m, &mut w, &["install"]);
    assert!(m.sh("/opt/etcd/current/etcd --version").contains("3.5.1"));
    assert_eq!(w.version, "3.5.1");
    hooks(&m, &mut w, &["leader-elected"]);
    let app = app_bag(&w);
    assert!(
        app.contains_key("ca") && app.contains_key("token"),
        "{app:?}"
    );
    hooks(&m, &mut w, &["config-changed", "start", "update-status"]);
    assert_eq!(
        w.unit_status,
        ("active".into(), "Healthy with 1 known peers".into()),
        "{:?}",
        w.logs
    );
    let members = etcdctl(&m, "member list");
    assert!(
        members.contains("etcd0") && members.contains("started"),
        "{members}"
    );
    let mode = m.sh("stat -c %a /etc/etcd/pki/server.key");
    assert_eq!(mode.trim(), "600");
    assert!(
        w.opened_ports.contains(&"2379/tcp".to_string()),
        "{:?}",
        w.opened_ports
    );
}

/// update-status on a healthy member says so; on a member whose etcd was killed (and
/// whose supervisor is gone too) it says etcd does not run, and asks nothing it cannot.
#[test]
fn update_status_tells_a_healthy_member_from_a_broken_one() {
    let (m, mut w) = formed();
    hooks(&m, &mut w, &["update-status"]);
    assert_eq!(w.unit_status.0, "active", "{:?}", w.unit_status);
    // The member breaks: its supervisor and etcd are killed.
    m.sh("kill -9 $(cat /run/etcd-charm/supervisor.pid) $(cat /run/etcd-charm/etcd.pid)");
    let r = m.run(&mut w, "hooks/update-status");
    assert!(r.ok, "{}", r.error);
    assert_ne!(w.unit_status.0, "active", "{:?}", w.unit_status);
}

/// A bad config value blocks the unit with a message naming the option, and changes
/// nothing: etcd keeps its config and keeps answering.
#[test]
fn a_bad_config_value_blocks_and_changes_nothing() {
    let (m, mut w) = formed();
    let before = m.sh("cat /etc/etcd/etcd.conf.yml");
    w.config
        .insert("snapshot_count".into(), serde_json::json!(-5));
    w.config
        .insert("port".into(), serde_json::json!("two-three-seven-nine"));
    let r = m.run(&mut w, "hooks/config-changed");
    assert!(r.ok, "{}", r.error);
    assert_eq!(w.unit_status.0, "blocked", "{:?}", w.unit_status);
    assert!(w.unit_status.1.contains("port"), "{:?}", w.unit_status);
    assert_eq!(m.sh("cat /etc/etcd/etcd.conf.yml"), before);
    assert!(etcdctl(&m, "endpoint health").contains("is healthy"));
}

/// A peer joining: the leader adds the new unit's member as a learner and publishes the
/// join, once the unit says it is ready with its CSR signed.
#[test]
fn a_peer_joining_is_added_as_a_learner_and_published() {
    let (m, mut w) = formed();
    // etcd/1 enters the peer relation and publishes its member name and peer URL.
    let peer: Bag = [
        ("ingress-address", "10.77.0.2"),
        ("private-address", "10.77.0.2"),
        ("member-name", "etcd1"),
        ("peer-url", "https://10.77.0.2:2380"),
        ("client-url", "https://10.77.0.2:2379"),
        ("phase", "ready"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    w.relations
        .get_mut("cluster:0")
        .unwrap()
        .units
        .insert("etcd/1".into(), peer);
    w.goal.insert("etcd/1".into(), "active".into());
    hooks(
        &m,
        &mut w,
        &["cluster-relation-joined", "cluster-relation-changed"],
    );
    let join = app_bag(&w).get("join").cloned().unwrap_or_default();
    assert!(
        join.contains("etcd1") && join.contains("10.77.0.2"),
        "join: {join:?}"
    );
    let members = etcdctl(&m, "member list");
    assert!(
        members.contains("https://10.77.0.2:2380") && members.contains("true"),
        "{members}"
    );
}

/// A CA move's first step: a CA appears on `certificates`; the leader trusts both CAs
/// (`trust` holds the old and the new), the member restarts with the bundle (its `ca.crt`
/// holds both) and answers again, and the unit reports the bundle it runs with.
#[test]
fn a_new_ca_on_certificates_is_trusted_beside_the_old_one_first() {
    let (m, mut w) = formed();
    let old = app_bag(&w)["ca"].clone();
    let new = crate::pki::Ca::create("easyrsa").unwrap().cert_pem;
    let mine: Bag = w.relations["cluster:0"].units[UNIT].clone();
    let easyrsa: Bag = [("ca".to_string(), new.clone())].into();
    w.relations.insert(
        "certificates:1".into(),
        Relation {
            endpoint: "certificates".into(),
            units: [(UNIT.to_string(), mine), ("easyrsa/0".to_string(), easyrsa)].into(),
            apps: [("easyrsa".to_string(), Bag::new())].into(),
        },
    );
    hooks(
        &m,
        &mut w,
        &[
            "certificates-relation-joined",
            "certificates-relation-changed",
        ],
    );
    let trust = crate::pki::authority::split(&app_bag(&w)["trust"]);
    assert_eq!(trust, crate::pki::authority::split(&format!("{old}{new}")));
    // The request the unit sent the CA: its name and its addresses.
    let sent = &w.relations["certificates:1"].units[UNIT];
    assert_eq!(
        sent.get("unit_name").map(String::as_str),
        Some("etcd_0"),
        "{sent:?}"
    );
    let on_disk = crate::pki::authority::split(&m.sh("cat /etc/etcd/pki/ca.crt"));
    assert_eq!(on_disk, trust, "the member runs with both CAs");
    assert!(etcdctl(&m, "endpoint health").contains("is healthy"));
}

/// The unit leaving (stop): the member is removed from the cluster's view, etcd stopped
/// and not restarted by a later hook, and the unit says it left.
#[test]
fn the_unit_leaving_stops_its_member_for_good() {
    let (m, mut w) = formed();
    hooks(&m, &mut w, &["stop"]);
    assert_eq!(w.unit_status.0, "maintenance", "{:?}", w.unit_status);
    let running = m.sh("cat /run/etcd-charm/etcd.pid 2>/dev/null | xargs -r ps -o pid= -p || true");
    assert!(running.trim().is_empty(), "etcd still runs: {running}");
    hooks(&m, &mut w, &["update-status"]);
    let state = m.sh("cat /var/lib/etcd-charm/state.json");
    assert!(state.contains("\"left\": true"), "{state}");
}
