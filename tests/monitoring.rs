//! The classic charm's monitoring relations: `prometheus` (interface `prometheus-manual`): a
//! probe on the Prometheus side reads the registered job, writes the credentials it carries
//! and scrapes every target over mTLS, as Prometheus would with that job; `grafana`
//! (interface `grafana-dashboard`): a probe on the Grafana side imports the dashboard.

mod support;

use support::etcd::MIN;
use support::*;

/// Three healthy units of etcd 3.5.1 in a model of their own, and the probe charm `probe`
/// (under tests/charms) related to them through `relation` (its endpoint, then etcd's).
fn etcd_with_probe(model: &str, probe: &str, relation: [&str; 2]) -> (tempfile::TempDir, Env) {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new(model, &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 3, &etcd_tarball(work.path(), &etcd35(), "3.5.1"), &[]);
    let probe = repo_root().join("tests/charms").join(probe);
    env.ok(&["deploy", probe.to_str().unwrap()]);
    env.ok(&["integrate", relation[0], relation[1]]);
    (work, env)
}

#[test]
fn prometheus_gets_a_job_that_scrapes_every_member_over_mtls_and_follows_the_cluster() {
    let (_work, env) = etcd_with_probe(
        "monitoring",
        "prom-probe",
        ["prom-probe:manual-jobs", "etcd:prometheus"],
    );
    let scraped = |n: usize| {
        move |s: &serde_json::Value| {
            unit_message(s, "prom-probe/0") == format!("etcd: scraped {n} of {n} targets")
        }
    };
    env.wait(
        "every member scraped with the job's credentials",
        2 * MIN,
        scraped(3),
    );
    // The targets are the members' client URLs, and the key is kept private by the probe
    // as Prometheus keeps it (the job carries the client key, as the classic charm's does).
    let targets = env.exec_ok("prom-probe/0", "cat /var/lib/prom-probe/job_etcd.targets");
    for u in env.units("etcd") {
        let want = format!("{}:2379", env.address(&u));
        assert!(targets.lines().any(|l| l == want), "{want} in {targets}");
    }
    // A new member becomes a new target.
    env.ok(&["add-unit", "etcd"]);
    env.wait_units("etcd", 4, "active", "Healthy with 4 known peers", 3 * MIN);
    env.wait("the new member scraped too", 2 * MIN, scraped(4));
}

/// `grafana` (interface `grafana-dashboard`): the leader asks Grafana to import a dashboard; a
/// probe on the Grafana side checks and keeps it and answers the request. Every metric the
/// dashboard's queries name is one the members serve.
#[test]
fn grafana_imports_a_dashboard_whose_queries_name_metrics_the_members_serve() {
    let (_work, env) = etcd_with_probe(
        "grafana",
        "grafana-probe",
        ["grafana-probe:dashboards", "etcd:grafana"],
    );
    env.wait("the dashboard imported", 2 * MIN, |s| {
        unit_message(s, "grafana-probe/0").starts_with("imported: etcd (")
    });
    let dashboard: serde_json::Value = serde_json::from_str(
        &env.exec_ok("grafana-probe/0", "cat /var/lib/grafana-probe/etcd.json"),
    )
    .unwrap();
    // Metric names in the queries (words that are not PromQL's own), each served.
    let promql = [
        "sum",
        "by",
        "rate",
        "increase",
        "histogram_quantile",
        "instance",
        "le",
        "grpc_type",
        "grpc_code",
        "unary",
    ];
    let mut names = std::collections::BTreeSet::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut word = String::new();
            for c in expr.chars().chain(std::iter::once(' ')) {
                if c.is_ascii_alphanumeric() || c == '_' {
                    word.push(c);
                } else {
                    if word.contains('_') && !promql.contains(&word.as_str()) {
                        names.insert(std::mem::take(&mut word));
                    }
                    word.clear();
                }
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    // Every name served (etcd observes the peer round trip on its first probe status round,
    // half a minute after start: wait for it with the others).
    let creds = support::etcd::Creds::from_unit(&env, "etcd/0");
    let missing = |_: &serde_json::Value| {
        let out = creds
            .curl()
            .arg(format!(
                "{}/metrics",
                support::etcd::unit_endpoint(&env, "etcd/0")
            ))
            .output()
            .unwrap();
        let metrics = String::from_utf8_lossy(&out.stdout);
        let gone: Vec<&String> = names
            .iter()
            .filter(|n| {
                !metrics
                    .lines()
                    .any(|l| l.starts_with(&format!("{n} ")) || l.starts_with(&format!("{n}{{")))
            })
            .collect();
        if !gone.is_empty() {
            eprintln!("not served yet: {gone:?}");
        }
        gone.is_empty()
    };
    env.wait(
        "every metric the dashboard queries to be served",
        2 * MIN,
        missing,
    );
    // Grafana's answer reached the leader's side of the relation.
    let rel = env.exec_ok(
        "grafana-probe/0",
        "cat /var/lib/grafana-probe/requests.json",
    );
    assert!(rel.contains("request_etcd-charm-dashboard"), "{rel}");
}
