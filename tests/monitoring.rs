//! The classic charm's monitoring relation: `prometheus` (interface `prometheus-manual`).
//! A probe on the Prometheus side reads the registered job, writes the credentials it
//! carries and scrapes every target over mTLS, as Prometheus would with that job.

mod support;

use support::etcd::MIN;
use support::*;

#[test]
fn prometheus_gets_a_job_that_scrapes_every_member_over_mtls_and_follows_the_cluster() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("monitoring", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 3, &etcd_tarball(work.path(), &etcd35(), "3.5.1"), &[]);
    let probe = repo_root().join("tests/charms/prom-probe");
    env.ok(&["deploy", probe.to_str().unwrap()]);
    env.ok(&["integrate", "prom-probe:manual-jobs", "etcd:prometheus"]);
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
