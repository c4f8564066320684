//! The classic charm's monitoring relations: `prometheus` (interface `prometheus-manual`): a
//! probe on the Prometheus side reads the registered job, writes the credentials it carries
//! and scrapes every target over mTLS, as Prometheus would with that job; `grafana`
//! (interface `grafana-dashboard`): a probe on the Grafana side imports the dashboard;
//! `nrpe-external-master`: a subordinate probe installs NRPE beside each unit, as the nrpe
//! charm does, and runs the checks through it as Nagios would. And COS over `cos-agent`: the
//! shipped alert rules checked and unit-tested with Debian's promtool, and a subordinate probe
//! (cosl, Debian's Prometheus) that scrapes what each unit names and loads its rules.

mod support;

use support::etcd::{self, Creds, MIN};
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

/// What NRPE answers for `command` on the probe's machine (`check_nrpe`, as Nagios asks):
/// the plugin's exit code and output.
fn nrpe_check(env: &Env, probe: &str, command: &str) -> (i32, String) {
    let out = env.exec_ok(
        probe,
        &format!("/usr/lib/nagios/plugins/check_nrpe -H 127.0.0.1 -c {command}; echo \"rc=$?\""),
    );
    let (text, rc) = out.trim_end().rsplit_once("rc=").expect("an exit code");
    (rc.trim().parse().unwrap(), text.trim().to_string())
}

/// Waits until NRPE on the probe's machine answers `command` with `code` (NRPE reloads its
/// commands after the charm writes them, and the alarm list is refreshed by a timer).
fn wait_check(env: &Env, probe: &str, command: &str, code: i32, says: &str) -> String {
    let deadline = std::time::Instant::now() + MIN;
    loop {
        let (rc, text) = nrpe_check(env, probe, command);
        if rc == code && text.contains(says) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{command} on {probe}: wanted {code} saying {says:?}, last {rc}: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `nrpe-external-master` (container-scoped): the nrpe subordinate comes to each unit's
/// machine, and the two classic checks run through a real NRPE: etcd's service
/// (CRITICAL while it is stopped) and the cluster's alarms (CRITICAL while NOSPACE is raised,
/// OK once disarmed), with Nagios service definitions exported under the host name NRPE gives.
/// The subordinate follows the principal's scale and leaves with the relation, taking
/// every check with it.
#[test]
fn nrpe_runs_the_service_and_alarm_checks_beside_each_unit_and_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let env = Env::new("nrpe", &["update-status-hook-interval=1h"]);
    deploy_healthy(&env, 1, &etcd_tarball(work.path(), &etcd35(), "3.5.1"), &[]);
    let probe = repo_root().join("tests/charms/nrpe-probe");
    env.ok(&["deploy", probe.to_str().unwrap()]);
    // A subordinate has no units of its own to add.
    let r = env.run(&["add-unit", "nrpe-probe"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("subordinate"), "{}", r.stderr);
    env.ok(&["integrate", "etcd:nrpe-external-master", "nrpe-probe"]);
    let s = env.wait("the probe beside etcd/0 runs both checks", 3 * MIN, |s| {
        unit_message(s, "nrpe-probe/0").starts_with("checks: ")
    });
    // Juju's shape: the subordinate is nested under its principal, on its machine.
    assert_eq!(
        s["applications"]["nrpe-probe"]["subordinate-to"],
        serde_json::json!(["etcd"])
    );
    assert!(s["applications"]["nrpe-probe"]["units"].is_null(), "{s}");
    let nested = &s["applications"]["etcd"]["units"]["etcd/0"]["subordinates"]["nrpe-probe/0"];
    assert_eq!(nested["public-address"], env.address("etcd/0"), "{s}");
    // Its hooks name its principal (Juju's context/env.go keeps JUJU_PRINCIPAL_UNIT).
    assert_eq!(
        env.exec_ok("nrpe-probe/0", "echo $JUJU_PRINCIPAL_UNIT")
            .trim(),
        "etcd/0"
    );
    wait_check(
        &env,
        "nrpe-probe/0",
        "check_etcd",
        0,
        "OK: etcd.service is active",
    );
    wait_check(
        &env,
        "nrpe-probe/0",
        "check_etcd-alarms",
        0,
        "OK: no etcd alarms",
    );
    // The commands NRPE runs, and the Nagios services exported under NRPE's host name.
    let cfg = env.exec_ok("etcd/0", "cat /etc/nagios/nrpe.d/check_etcd-alarms.cfg");
    assert!(
        cfg.contains("command[check_etcd-alarms]=/usr/local/lib/nagios/plugins/etcd-charm-check nagios-check alarms"),
        "{cfg}"
    );
    let host = format!("probe-{}", env.exec_ok("etcd/0", "hostname").trim());
    let export = format!("/var/lib/nagios/export/service__{host}_check_etcd.cfg");
    let service = env.exec_ok("etcd/0", &format!("cat {export}"));
    assert!(
        service.contains(&format!("host_name                       {host}")),
        "{service}"
    );
    assert!(
        service.contains("check_command                   check_nrpe!check_etcd\n"),
        "{service}"
    );
    assert!(
        service.contains("servicegroups                   juju\n"),
        "{service}"
    );
    let monitors = env.exec_ok("nrpe-probe/0", "cat /var/lib/nrpe-probe/monitors.yaml");
    assert!(
        monitors.contains("command: check_etcd-alarms"),
        "{monitors}"
    );
    assert_eq!(
        env.exec_ok(
            "etcd/0",
            "systemctl is-active etcd-charm-nagios-alarms.timer"
        )
        .trim(),
        "active"
    );

    // A raised alarm is CRITICAL once the timer's job has read it; disarmed, OK again.
    let creds = Creds::from_unit(&env, "etcd/0");
    creds.raise_alarm(
        &format!("https://{}:2379", env.address("etcd/0")),
        "NOSPACE",
    );
    env.exec_ok("etcd/0", "systemctl start etcd-charm-nagios-alarms.service");
    let text = wait_check(
        &env,
        "nrpe-probe/0",
        "check_etcd-alarms",
        2,
        "CRITICAL: alarm NOSPACE on",
    );
    assert!(text.contains("etcd"), "the member is named: {text}");
    let (_, task) = env.run_action("etcd/0", &["alarm-disarm"]);
    assert_eq!(task["status"], "completed", "{task}");
    env.exec_ok("etcd/0", "systemctl start etcd-charm-nagios-alarms.service");
    wait_check(
        &env,
        "nrpe-probe/0",
        "check_etcd-alarms",
        0,
        "OK: no etcd alarms",
    );

    // The service check follows etcd's service.
    env.exec_ok("etcd/0", "systemctl stop etcd.service");
    wait_check(
        &env,
        "nrpe-probe/0",
        "check_etcd",
        2,
        "CRITICAL: etcd.service is inactive",
    );
    env.exec_ok("etcd/0", "systemctl start etcd.service");
    wait_check(
        &env,
        "nrpe-probe/0",
        "check_etcd",
        0,
        "OK: etcd.service is active",
    );

    // Service groups come from the configuration; a name Nagios cannot take blocks.
    env.ok(&["config", "etcd", "nagios_servicegroups=etcd-prod,storage"]);
    env.wait("the exported services in the new groups", MIN, |_| {
        env.exec_ok("etcd/0", &format!("cat {export}"))
            .contains("servicegroups                   etcd-prod,storage\n")
    });
    env.ok(&["config", "etcd", "nagios_context=two words"]);
    env.wait("a bad nagios_context blocks", MIN, |s| {
        unit_message(s, "etcd/0").contains("nagios_context \"two words\"")
    });
    env.ok(&["config", "etcd", "nagios_context="]);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", MIN);

    // H4: 200 KB of nagios_hostname from the other application (over 128 KiB, one argument
    // of status-set failed with E2BIG, and every later hook of the unit with it): the unit
    // blocks with the value quoted bounded and no hook fails; a plain name clears it.
    env.exec_ok(
        "nrpe-probe/0",
        "python3 -c \"print('nagios_hostname: ' + 'x' * 200000)\" > /tmp/big.yaml && relation-set -r $(relation-ids nrpe-external-master) --file /tmp/big.yaml",
    );
    env.ok(&["config", "etcd", "nagios_servicegroups=big"]);
    let s = env.wait("the oversized host name refused", MIN, |s| {
        unit_message(s, "etcd/0").contains("nagios_hostname")
    });
    let msg = unit_message(&s, "etcd/0");
    assert!(msg.len() < 1100, "the status quotes {} bytes", msg.len());
    assert_eq!(
        unit_entry(&s, "etcd/0")["workload-status"]["current"],
        "blocked"
    );
    env.exec_ok(
        "nrpe-probe/0",
        "relation-set -r $(relation-ids nrpe-external-master) nagios_hostname=probe-$(hostname)",
    );
    env.ok(&["config", "etcd", "--reset", "nagios_servicegroups"]);
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", MIN);

    // A new unit gets its own subordinate and checks; a removed one takes its subordinate.
    env.ok(&["add-unit", "etcd"]);
    env.wait_units("etcd", 2, "active", "Healthy with 2 known peers", 3 * MIN);
    let s = env.wait("a probe beside etcd/1", 3 * MIN, |s| {
        unit_message(s, "nrpe-probe/1").starts_with("checks: ")
    });
    assert!(
        !s["applications"]["etcd"]["units"]["etcd/1"]["subordinates"]["nrpe-probe/1"].is_null(),
        "{s}"
    );
    wait_check(
        &env,
        "nrpe-probe/1",
        "check_etcd-alarms",
        0,
        "OK: no etcd alarms",
    );
    env.ok(&["remove-unit", "--no-prompt", "etcd/1"]);
    env.wait("etcd/1 and its subordinate gone", 2 * MIN, |s| {
        unit_entry(s, "nrpe-probe/1").is_null()
            && unit_entry(s, "etcd/1").is_null()
            && s["machines"].as_object().is_some_and(|m| m.len() == 1)
    });

    // The relation goes: the subordinate leaves and every check with it.
    env.ok(&["remove-relation", "etcd", "nrpe-probe"]);
    env.wait("the subordinate gone", 2 * MIN, |s| {
        unit_entry(s, "nrpe-probe/0").is_null()
    });
    env.wait("the checks removed from etcd/0", MIN, |_| {
        env.exec_ok(
            "etcd/0",
            "ls /etc/nagios/nrpe.d/check_etcd*.cfg /var/lib/nagios/export/*check_etcd* \
             /usr/local/lib/nagios/plugins/etcd-charm-check \
             /etc/systemd/system/etcd-charm-nagios-alarms.timer 2>/dev/null | wc -l",
        )
        .trim()
            == "0"
    });
    env.wait_units("etcd", 1, "active", "Healthy with 1 known peers", MIN);
}

/// The topology the rules are rendered with on the host (the charm fills in its own).
const TOPOLOGY: &str = r#"juju_model="m",juju_model_uuid="u",juju_application="etcd""#;

/// The alert rules the charm ships (templates/cos/etcd-alerts.yaml: the upstream etcd mixin's
/// and the charm's own), with a topology filled in, pass `promtool check rules`, and
/// `promtool test rules` runs tests/cos/etcd-alerts.test.yaml over them: each of the charm's
/// alerts fires on the series it is about, with its labels and text, and not before.
#[test]
fn the_shipped_alert_rules_pass_promtool_check_and_its_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(repo_root().join("templates/cos/etcd-alerts.yaml"))
        .unwrap()
        .replace("%%juju_topology%%", TOPOLOGY);
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    std::fs::copy(
        repo_root().join("tests/cos/etcd-alerts.test.yaml"),
        dir.path().join("test.yaml"),
    )
    .unwrap();
    for args in [
        ["check", "rules", "rules.yaml"],
        ["test", "rules", "test.yaml"],
    ] {
        let out = std::process::Command::new(fixtures().join("prometheus/promtool"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}: {said}");
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

/// A PromQL query to the cos-probe's Prometheus on a unit's machine: the result vector.
fn prom_query(env: &Env, unit: &str, query: &str) -> Vec<serde_json::Value> {
    let q: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let out = env.exec(
        unit,
        &format!("curl -sS --max-time 5 'http://127.0.0.1:9090/api/v1/query?query={q}'"),
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// What listens on the two metrics ports of a unit's machine.
fn metrics_listeners(env: &Env, unit: &str) -> String {
    env.exec_ok(unit, "ss -Hltn '( sport = :2381 or sport = :2382 )'")
}

/// COS over `cos-agent`: a subordinate on each unit's machine (the probe: cosl and Debian's
/// Prometheus, as grafana-agent would) finds the two jobs the unit names on loopback, a real
/// scrape reaches every member's etcd metrics and the charm's own, the 24 rules load in
/// Prometheus and pass promtool there, the dashboard decompresses with cosl. etcd's metrics
/// listener is on 127.0.0.1 only and serves no keys; the members restart for it one at a time
/// and stay healthy; without the relation the listeners are gone.
#[test]
fn cos_agent_is_scraped_on_loopback_with_the_charms_rules_and_dashboard() {
    let (_work, env) = etcd_with_probe(
        "cos",
        "cos-probe",
        ["cos-probe:cos-agent", "etcd:cos-agent"],
    );
    let said = "scraping 2 jobs, 2 rule groups, 1 dashboards, promtool ok";
    env.wait("a probe beside each unit scraping", 3 * MIN, |s| {
        (0..3).all(|i| unit_message(s, &format!("cos-probe/{i}")) == said)
    });
    etcd::wait_healthy_status(&env, 3, "after the metrics listener was opened");
    let report = env.exec_ok("cos-probe/0", "cat /var/lib/cos-probe/report.json");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["dashboards"][0], "etcd (etcd charm)", "{report}");
    let targets = serde_json::json!(["localhost:2381", "localhost:2382"]);
    assert_eq!(report["targets"], targets, "{report}");
    for u in env.units("etcd") {
        until(&format!("{u}: both jobs scraped"), 2 * MIN, || {
            let up = prom_query(&env, &u, "up");
            up.len() == 2 && up.iter().all(|s| s["value"][1] == "1")
        });
        let leader = prom_query(&env, &u, "etcd_server_has_leader");
        assert_eq!(leader.len(), 1, "{u}: {leader:?}");
        assert_eq!(leader[0]["metric"]["juju_unit"], u.as_str());
        let q = r#"etcd_charm_certificate_expiry_timestamp_seconds{file="server.crt"} - time()"#;
        let expiry = prom_query(&env, &u, q);
        let left: f64 = expiry[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(left > 86400.0 * 30.0, "{u}: server.crt expires in {left} s");
        let errors = prom_query(&env, &u, "etcd_charm_read_errors");
        assert_eq!(errors[0]["value"][1], "0", "{u}");
        let rules = env.exec_ok(
            &u,
            "curl -sS --max-time 5 http://127.0.0.1:9090/api/v1/rules",
        );
        let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
        let n: usize = rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["rules"].as_array().unwrap().len())
            .sum();
        assert_eq!(n, 24, "{u}: rules loaded in Prometheus");
        // Loopback only, and no key read on the metrics listener.
        let listening = metrics_listeners(&env, &u);
        for l in listening.lines() {
            assert!(
                l.contains("127.0.0.1:238"),
                "{u} listens beyond loopback: {l}"
            );
        }
        assert_eq!(listening.lines().count(), 2, "{u}: {listening}");
        let kv = env.exec_ok(
            &u,
            r#"curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"key":"Lw=="}' http://127.0.0.1:2381/v3/kv/range"#,
        );
        assert_eq!(
            kv.trim(),
            "404",
            "{u}: the metrics listener answered a key read"
        );
    }
    let other = env.address("etcd/1");
    let r = env.exec(
        "etcd/0",
        &format!("curl -s --max-time 3 http://{other}:2381/metrics"),
    );
    assert_ne!(
        r.code, 0,
        "etcd/1's metrics listener answered from another machine"
    );
    // Without the relation: the listeners are gone, the members healthy.
    env.ok(&["remove-relation", "etcd:cos-agent", "cos-probe:cos-agent"]);
    until("the metrics listeners closed", 4 * MIN, || {
        env.units("etcd")
            .iter()
            .all(|u| metrics_listeners(&env, u).trim().is_empty())
    });
    etcd::wait_healthy_status(&env, 3, "after the metrics listener was closed");
}
