//! COS over `cos-agent` (interface cos_agent; grafana-agent or opentelemetry-collector as a
//! subordinate on this unit's machine), as the charm library `cos_agent` provides it: this
//! unit's databag holds `config`, a JSON object with the alert rules, the dashboards
//! (lzma-compressed, base64), the scrape jobs and the log slots.
//!
//! What the agent scrapes is on loopback only: etcd's metrics listener
//! (`listen-metrics-urls: http://127.0.0.1:<cos_metrics_port>`, /metrics and /health, no key
//! reads, opened only while the relation exists), and the charm's own metrics on the next port,
//! served by this binary for each connection (systemd socket activation, nothing runs between
//! scrapes): certificate expiry, the last scheduled snapshot and off-machine backup, the
//! automatic defragmentation. No credential leaves the unit.

use crate::config::Config;
use crate::juju::{self, Bag, Hook};
use anyhow::{anyhow, Context as _, Result};

pub const ENDPOINT: &str = "cos-agent";
const RULES: &str = include_str!("../../templates/cos/etcd-alerts.yaml");
const DASHBOARD: &str = include_str!("../../templates/cos/etcd-dashboard.json");
const LISTENER: &str = "etcd-charm-metrics";
/// The placeholder of the rules' topology matchers.
const TOPOLOGY: &str = "%%juju_topology%%";

/// This application's place in the model, as COS labels series and rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub model: String,
    pub model_uuid: String,
    pub application: String,
    pub charm: String,
}

impl Topology {
    /// From the hook's environment.
    pub fn here(unit: &str) -> Topology {
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        Topology {
            model: env("JUJU_MODEL_NAME"),
            model_uuid: env("JUJU_MODEL_UUID"),
            application: unit.split('/').next().unwrap_or(unit).to_string(),
            charm: "etcd".into(),
        }
    }

    /// The matchers that select this application's series.
    fn matchers(&self) -> String {
        let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
        format!(
            "juju_model={},juju_model_uuid={},juju_application={}",
            q(&self.model),
            q(&self.model_uuid),
            q(&self.application)
        )
    }
}

/// Whether this unit is related over `cos-agent` (a unit leaving the relation is not).
pub fn related(hook: Option<&Hook>) -> Result<bool> {
    let leaving = hook.is_some_and(|h| h.is_relation(ENDPOINT, juju::RelationEvent::Broken));
    Ok(!leaving && !juju::relation_ids(ENDPOINT)?.is_empty())
}

/// etcd's settings, with the loopback metrics listener while related.
pub fn etcd_settings(cfg: &Config, hook: Option<&Hook>) -> Result<etcdkit::render::Settings> {
    let mut s = cfg.etcd_settings();
    if related(hook)? {
        s.metrics_port = Some(cfg.cos_metrics_port);
    }
    Ok(s)
}

/// Whether a hook may change what this unit tells the agent.
pub fn concerns(hook: Option<&Hook>) -> bool {
    hook.is_some_and(|h| {
        h.of_relation(ENDPOINT)
            || matches!(h, Hook::ConfigChanged | Hook::UpgradeCharm | Hook::Start)
    })
}

/// The alert rules with this application's topology: every selector's placeholder filled,
/// and the topology as labels of each rule (as the library's AlertRules labels them). Pure.
pub fn alert_rules(t: &Topology) -> Result<serde_json::Value> {
    let text = RULES.replace(TOPOLOGY, &t.matchers());
    let mut rules: serde_json::Value =
        serde_yaml::from_str(&text).context("the charm's alert rules are not YAML")?;
    let groups = rules["groups"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("the charm's alert rules have no groups"))?;
    for g in groups {
        let name = g["name"].as_str().unwrap_or_default().to_string();
        g["name"] = format!(
            "{}_{}_{}_{name}_alerts",
            t.model,
            &t.model_uuid.get(..8).unwrap_or(&t.model_uuid),
            t.application
        )
        .into();
        for r in g["rules"].as_array_mut().into_iter().flatten() {
            let labels = &mut r["labels"];
            for (k, v) in [
                ("juju_model", &t.model),
                ("juju_model_uuid", &t.model_uuid),
                ("juju_application", &t.application),
                ("juju_charm", &t.charm),
            ] {
                labels[k] = v.clone().into();
            }
        }
    }
    Ok(rules)
}

/// The dashboard as the relation carries it: the JSON, xz-compressed, base64. Pure.
pub fn dashboard() -> Result<String> {
    use base64::Engine as _;
    let json: serde_json::Value =
        serde_json::from_str(DASHBOARD).context("the charm's dashboard is not JSON")?;
    let mut xz = vec![];
    lzma_rs::xz_compress(&mut json.to_string().as_bytes(), &mut xz)
        .context("compressing the dashboard")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(xz))
}

/// What this unit's databag says under `config`. Pure.
pub fn unit_config(t: &Topology, metrics_port: u16) -> Result<String> {
    let job = |name: &str, port: u16, scrape: &str| {
        serde_json::json!({
            "job_name": name,
            "metrics_path": "/metrics",
            "static_configs": [{
                "targets": [format!("localhost:{port}")],
                "labels": {"etcd_charm_scrape": scrape},
            }],
        })
    };
    Ok(serde_json::json!({
        "metrics_alert_rules": alert_rules(t)?,
        "log_alert_rules": {},
        "dashboards": [dashboard()?],
        "metrics_scrape_jobs": [
            job("etcd", metrics_port, "etcd"),
            job("etcd_charm", metrics_port + 1, "charm"),
        ],
        // etcd logs to the journal (its systemd unit), which the agent reads; the snap has
        // no log slot to connect.
        "log_slots": [],
    })
    .to_string())
}

/// Brings this unit's side in line with the relation: the databag written and the charm's
/// metrics listener installed while related; the listener removed otherwise.
pub fn reconcile(unit: &str, hook: Option<&Hook>, cfg: &Config) -> Result<()> {
    if !related(hook)? {
        return hostkit::systemd::remove_listener(LISTENER).map_err(|e| anyhow!(e));
    }
    if hostkit::systemd::systemd_present() {
        let exe = std::env::current_exe().context("cannot tell where this charm's binary is")?;
        hostkit::systemd::ensure_listener(&hostkit::systemd::Listener {
            unit: LISTENER,
            description: "etcd charm metrics",
            listen: format!("127.0.0.1:{}", cfg.cos_metrics_port + 1),
            exec: format!("{} serve-metrics", exe.display()),
        })
        .map_err(|e| anyhow!(e))?;
    }
    let config = unit_config(&Topology::here(unit), cfg.cos_metrics_port)?;
    for rel in juju::relation_ids(ENDPOINT)? {
        let have = juju::relation_get(&rel, unit, false)?;
        juju::relation_update(
            &rel,
            &have,
            Bag::from([("config".to_string(), config.clone())]),
        )?;
    }
    Ok(())
}

#[path = "cos_metrics.rs"]
mod metrics;
pub use metrics::{record_defrag, serve};

#[cfg(test)]
#[path = "cos_tests.rs"]
mod tests;
