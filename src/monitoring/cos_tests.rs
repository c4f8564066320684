use super::*;

fn topology() -> Topology {
    Topology {
        model: "prod".into(),
        model_uuid: "0123abcd-0000-0000-0000-000000000000".into(),
        application: "etcd".into(),
        charm: "etcd".into(),
    }
}

#[test]
fn every_rule_selects_this_application_and_carries_its_topology() {
    let rules = alert_rules(&topology()).unwrap();
    let groups = rules["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let mut names = std::collections::BTreeSet::new();
    let mut count = 0;
    for g in groups {
        assert!(names.insert(g["name"].as_str().unwrap().to_string()));
        for r in g["rules"].as_array().unwrap() {
            count += 1;
            let expr = r["expr"].as_str().unwrap();
            assert!(!expr.contains("%%"), "{expr}");
            assert!(
                expr.contains(r#"juju_application="etcd""#)
                    && expr.contains(r#"juju_model_uuid="0123abcd-0000-0000-0000-000000000000""#),
                "{expr}"
            );
            for k in [
                "juju_model",
                "juju_model_uuid",
                "juju_application",
                "juju_charm",
            ] {
                assert!(r["labels"][k].is_string(), "{r}");
            }
            assert!(["warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap()));
        }
    }
    assert_eq!(count, 24, "the upstream mixin's 15 and the charm's 9");
}

#[test]
fn a_topology_value_cannot_break_out_of_its_matcher() {
    let mut t = topology();
    t.model = "a\",evil=\"x".into();
    let rules = alert_rules(&t).unwrap();
    let expr = rules["groups"][0]["rules"][0]["expr"].as_str().unwrap();
    assert!(expr.contains(r#"juju_model="a\",evil=\"x""#), "{expr}");
}

#[test]
fn the_dashboard_goes_compressed_and_comes_back_whole() {
    use base64::Engine as _;
    let packed = dashboard().unwrap();
    let xz = base64::engine::general_purpose::STANDARD
        .decode(&packed)
        .unwrap();
    let mut json = vec![];
    lzma_rs::xz_decompress(&mut xz.as_slice(), &mut json).unwrap();
    let d: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(d["title"], "etcd (etcd charm)");
    let exprs: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs
        .iter()
        .any(|e| e.contains("etcd_charm_certificate_expiry")));
    assert!(
        exprs.iter().all(|e| e.contains("$juju_application")),
        "{exprs:?}"
    );
}

#[test]
fn the_unit_says_what_to_scrape_on_loopback_only() {
    let v: serde_json::Value =
        serde_json::from_str(&unit_config(&topology(), 2381).unwrap()).unwrap();
    let jobs = v["metrics_scrape_jobs"].as_array().unwrap();
    let targets: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| {
            let sc = &j["static_configs"][0];
            (
                sc["targets"][0].as_str().unwrap(),
                sc["labels"]["etcd_charm_scrape"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [("localhost:2381", "etcd"), ("localhost:2382", "charm")]
    );
    for k in [
        "metrics_alert_rules",
        "log_alert_rules",
        "dashboards",
        "log_slots",
    ] {
        assert!(!v[k].is_null(), "{k}");
    }
}

#[test]
fn the_defragmentation_record_follows_each_pass() {
    use crate::ops::defrag::Outcome::*;
    let r = metrics::DefragRecord::default();
    let r = r.after(Waiting, 100).after(Waiting, 200);
    assert_eq!(r.pending_since, Some(100));
    let r = r.after(Failed, 300);
    assert_eq!((r.last_failure, r.pending_since), (Some(300), Some(100)));
    let r = r.after(Done, 400);
    assert_eq!(
        (r.last_ok, r.last_failure, r.pending_since),
        (Some(400), Some(300), None)
    );
    assert_eq!(r.clone().after(Clean, 500), r);
}

#[test]
fn the_metrics_text_is_prometheus_exposition() {
    let text = metrics::charm_metrics();
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP etcd_charm_") || line.starts_with("# TYPE etcd_charm_"),
                "{line}"
            );
        } else {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("etcd_charm_"), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
    assert!(text.contains("etcd_charm_up 1\n"), "{text}");
}
