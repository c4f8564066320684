//! The client relations with the classic charm's wire contracts (anchor-charms §4):
//! `db` (interface `etcd`): connection_string, version, client_ca, client_cert, client_key,
//! identical on every unit; `proxy` (interface `etcd-proxy`): cluster plus the TLS trio;
//! `prometheus` (interface `prometheus-manual`): the leader's scrape job; `grafana` (interface
//! `grafana-dashboard`): the leader's dashboard import request.

use crate::juju::{self, Bag};
use crate::pki;
use crate::unit::peers::Key;

pub fn publish(unit: &str, view: &ClusterView, version: &str) -> anyhow::Result<()> {
    let db = juju::relation_ids("db")?;
    let proxy = juju::relation_ids("proxy")?;
    if db.is_empty() && proxy.is_empty() {
        return Ok(());
    }
    let Some((ca, cert, key)) = client_trio(view)? else {
        return Ok(());
    };
    let trio = |b: &mut Bag, prefix: &str| {
        b.insert(format!("{prefix}ca"), ca.clone());
        b.insert(format!("{prefix}cert"), cert.clone());
        b.insert(format!("{prefix}key"), key.clone());
    };
    for rel in db {
        let mut b = Bag::new();
        b.insert("connection_string".into(), view.members.clone());
        b.insert("version".into(), version.to_string());
        trio(&mut b, "client_");
        set_if_changed(unit, &rel, b)?;
    }
    for rel in proxy {
        let mut b = Bag::new();
        b.insert("cluster".into(), view.cluster.clone());
        trio(&mut b, "client_");
        set_if_changed(unit, &rel, b)?;
    }
    Ok(())
}

/// `prometheus` (interface `prometheus-manual`), as that interface's provider writes it: the
/// leader registers job `etcd` in the application data, key `job_etcd`, a JSON object with
/// `job_name`, `job_data` (https static targets of every member, a `tls_config` whose file
/// names the requirer replaces with where it writes the given credentials), `ca_cert`,
/// `client_cert` and `client_key` (the client credentials the `db` relation gives, as the
/// classic charm sends them for mTLS scraping).
pub fn publish_prometheus(app: &str, view: &ClusterView) -> anyhow::Result<()> {
    let rels = juju::relation_ids("prometheus")?;
    if rels.is_empty() {
        return Ok(());
    }
    let Some((ca, cert, key)) = client_trio(view)? else {
        return Ok(());
    };
    let targets: Vec<String> = view
        .members
        .split(',')
        .filter_map(|u| u.trim().strip_prefix("https://"))
        .map(|hp| hp.trim_end_matches('/').to_string())
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let job = serde_json::json!({
        "job_name": "etcd",
        "job_data": {
            "static_configs": [{"targets": targets}],
            "scheme": "https",
            "tls_config": {
                "ca_file": "__ca_file__",
                "cert_file": "__cert_file__",
                "key_file": "__key_file__",
            },
        },
        "ca_cert": ca,
        "client_cert": cert,
        "client_key": key,
    })
    .to_string();
    for rel in rels {
        let have = juju::relation_get(&rel, app, true)?;
        juju::relation_update_app(&rel, &have, Bag::from([("job_etcd".into(), job.clone())]))?;
    }
    Ok(())
}

/// The dashboard the `grafana` relation registers (panels on etcd's own metrics).
const DASHBOARD: &str = include_str!("../../templates/grafana-dashboard.json");

/// The request's id: stable, so a re-registration updates the one import request.
pub const DASHBOARD_REQUEST: &str = "request_etcd-charm-dashboard";

/// `grafana` (interface `grafana-dashboard`), as the classic charm's reactive requester
/// writes it: the leader's unit data holds one import request, `request_<id>` = JSON
/// `{"name", "dashboard"}`; Grafana answers in its unit data with `response_<id>` =
/// `{"success", "reason"}`, which the leader logs when it fails.
pub fn publish_grafana(unit: &str, grafana_hook: bool) -> anyhow::Result<()> {
    let rels = juju::relation_ids("grafana")?;
    if rels.is_empty() {
        return Ok(());
    }
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD)?;
    let request = serde_json::json!({"name": "etcd", "dashboard": dashboard}).to_string();
    let response_key = DASHBOARD_REQUEST.replacen("request_", "response_", 1);
    for rel in rels {
        let have = juju::relation_get(&rel, unit, false)?;
        juju::relation_update(
            &rel,
            &have,
            Bag::from([(DASHBOARD_REQUEST.to_string(), request.clone())]),
        )?;
        // Grafana's answers change only in this relation's own hooks: read them there, not
        // in every hook of the leader.
        if !grafana_hook {
            continue;
        }
        for remote in juju::relation_list(&rel)? {
            let theirs = juju::relation_get(&rel, &remote, false)?;
            let Some(answer) = theirs.get(&response_key) else {
                continue;
            };
            let answer: serde_json::Value = match serde_json::from_str(answer) {
                Ok(a) => a,
                Err(e) => {
                    juju::log(
                        "WARNING",
                        &format!("{remote}'s {response_key} is not JSON ({e}): ignored"),
                    );
                    continue;
                }
            };
            if answer["success"] != serde_json::Value::Bool(true) {
                juju::log(
                    "WARNING",
                    &format!(
                        "{remote} did not import the etcd dashboard: {}",
                        answer["reason"].as_str().unwrap_or("no reason given")
                    ),
                );
            }
        }
    }
    Ok(())
}

/// What every client relation hands out: (the CA bundle to trust, this unit's client
/// certificate, its key), once the cluster has members and all three exist. A file that is
/// not there yet is "not yet"; one that cannot be read is an error.
fn client_trio(view: &ClusterView) -> anyhow::Result<Option<(String, String, String)>> {
    let read = |f: &str| -> anyhow::Result<Option<String>> {
        let path = pki::path(f);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.is_empty() => Ok(Some(s)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    };
    let Some(ca) = view.ca.clone().filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if view.members.is_empty() {
        return Ok(None);
    }
    Ok(match (read("client.crt")?, read("client.key")?) {
        (Some(cert), Some(key)) => Some((ca, cert, key)),
        _ => None,
    })
}

fn set_if_changed(unit: &str, rel: &str, want: Bag) -> anyhow::Result<()> {
    juju::relation_update(rel, &juju::relation_get(rel, unit, false)?, want)?;
    Ok(())
}

/// What the client relations need from the peer view.
pub struct ClusterView {
    pub members: String,
    pub cluster: String,
    pub ca: Option<String>,
}

pub(crate) fn peers_view(p: &crate::unit::peers::Peers) -> ClusterView {
    ClusterView {
        members: p.app_get(Key::Members).unwrap_or("").to_string(),
        cluster: p.app_get(Key::Cluster).unwrap_or("").to_string(),
        ca: p
            .app_get(Key::Trust)
            .or(p.app_get(Key::Ca))
            .map(String::from),
    }
}
