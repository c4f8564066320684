//! Models and the controller: `version`, `add-model`, `destroy-model`, `models`,
//! `show-model`, `model-config`, `wait-settled`.

use super::common::*;
use super::status::{status_json, status_table};

/// `version`
pub(super) async fn version(args: &[String]) -> Result<Reply> {
    let p = parse(&[FORMAT, boolean(&["all"])], args)?;
    let v = if p.flag("all") {
        // As `juju version --all` (<version>-<os>-<arch>), which jubilant's version() parses.
        json!({
            "version": format!("{}-ubuntu-amd64", controller::JUJU_VERSION),
            "git-commit": "",
            "git-tree-state": "clean",
            "compiler": "gc",
            "go-version": "",
            "official": false,
        })
    } else {
        json!(controller::JUJU_VERSION)
    };
    fmt_out(&v, &p, Format::Smart)
}

/// `add-model`
pub(super) async fn add_model(ctl: &Arc<Ctl>, args: &[String]) -> Result<Reply> {
    let p = parse(
        &[
            boolean(&["no-switch"]),
            value(&["config"]),
            value(&["c", "controller"]),
            value(&["credential"]),
        ],
        args,
    )?;
    let name = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("model name required"))?
        .clone();
    if ctl.read(|w| w.models.contains_key(&name)) {
        bail!("model \"{name}\" already exists");
    }
    let net = tokio::task::spawn_blocking(|| machine::create_bridge(None)).await??;
    let mut config: BTreeMap<String, Value> = BTreeMap::new();
    for kv in p.values("config") {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--config expects key=value, got {kv:?}"))?;
        config.insert(k.into(), serde_yaml::from_str(v).unwrap_or(json!(v)));
    }
    // The model's directory (its debug log, machines) exists from here to destroy-model;
    // nothing recreates it afterwards.
    std::fs::create_dir_all(crate::controller::model_dir(&ctl.home, &name))?;
    ctl.mutate(|w| {
        w.models.insert(
            name.clone(),
            Model::new(&name, new_uuid(), net.index, config),
        );
        if !p.flag("no-switch") {
            w.current_model = Some(name.clone());
        }
    });
    Ok(Reply {
        code: 0,
        stdout: String::new(),
        stderr: format!(
            "Added '{name}' model on bridge {} ({}/24)\n",
            net.bridge(),
            net.host_address()
        ),
    })
}

/// `destroy-model`
pub(super) async fn destroy_model(ctl: &Arc<Ctl>, args: &[String]) -> Result<Reply> {
    let p = parse(
        &[
            boolean(&["no-prompt"]),
            boolean(&["y", "yes"]),
            boolean(&["destroy-storage"]),
            boolean(&["release-storage"]),
            boolean(&["force"]),
            boolean(&["no-wait"]),
            value(&["timeout"]),
        ],
        args,
    )?;
    let name = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("model name required"))?;
    let name = name.rsplit(':').next().unwrap_or(name).to_string();
    if !ctl.read(|w| w.models.contains_key(&name)) {
        bail!("model \"{name}\" not found");
    }
    ctl.destroy_model(&name).await;
    Ok(Reply::ok(""))
}

/// `models`
pub(super) async fn models(ctl: &Arc<Ctl>, args: &[String]) -> Result<Reply> {
    let p = parse(&[FORMAT], args)?;
    let v = ctl.read(|w| json!({"models": w.models.values().map(|m| json!({"name": m.name, "short-name": m.name, "model-uuid": m.uuid})).collect::<Vec<_>>(), "current-model": w.current_model}));
    fmt_out(&v, &p, Format::Yaml)
}

/// `show-model`
pub(super) async fn show_model(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[FORMAT], args)?;
    let name = match p.positional.first() {
        Some(n) => n.rsplit(':').next().unwrap_or(n).to_string(),
        None => model_name(ctl, &p, env_model)?,
    };
    let v = ctl.read(|w| {
        w.models.get(&name).map(|m| json!({name.clone(): {"name": m.name, "short-name": m.name, "model-uuid": m.uuid, "type": "iaas", "controller-name": "harness", "cloud": "localhost", "life": "alive", "agent-version": controller::JUJU_VERSION, "status": {"current": "available"}}}))
    });
    let v = v.ok_or_else(|| anyhow!("model \"{name}\" not found"))?;
    fmt_out(&v, &p, Format::Yaml)
}

/// `model-config`
pub(super) async fn model_config(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[FORMAT, value(&["reset"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let defaults: BTreeMap<&str, Value> = BTreeMap::from([
        ("automatically-retry-hooks", json!(true)),
        ("update-status-hook-interval", json!("5m")),
        ("harness-serial", json!(false)),
        (
            "harness-machine",
            json!(controller::DEFAULT_MACHINE_KIND.name()),
        ),
        ("apt-mirror", json!(controller::default_apt_mirror())),
        ("firewall-mode", json!("instance")),
        ("harness-second-interface", json!(false)),
        ("harness-hold-at", json!("")),
    ]);
    let sets: Vec<&String> = p.positional.iter().filter(|a| a.contains('=')).collect();
    if !sets.is_empty() || p.value("reset").is_some() {
        ctl.model_mut(&model, |m| -> Result<()> {
            for kv in sets {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                check_model_setting(k, v)?;
                let val = match v {
                    "true" | "false" => json!(v == "true"),
                    _ => json!(v),
                };
                m.config.insert(k.into(), val);
            }
            for k in p
                .value("reset")
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
            {
                m.config.remove(k);
            }
            Ok(())
        })?;
        ctl.refresh_firewall(&model)?;
        return Ok(Reply::ok(""));
    }
    let v = ctl.model(&model, |m| {
        let mut out = Map::new();
        for (k, d) in &defaults {
            out.insert(k.to_string(), json!({"Value": m.config.get(*k).cloned().unwrap_or(d.clone()), "Source": if m.config.contains_key(*k) { "model" } else { "default" }}));
        }
        for (k, v) in &m.config {
            out.insert(k.clone(), json!({"Value": v, "Source": "model"}));
        }
        Value::Object(out)
    })?;
    match p.positional.first() {
        Some(k) => fmt_out(
            &v.get(k).map(|x| x["Value"].clone()).unwrap_or(Value::Null),
            &p,
            Format::Smart,
        ),
        None => fmt_out(&v, &p, Format::Yaml),
    }
}

/// A model setting this controller checks as Juju (or, for its own `harness-*` ones, as
/// it uses them).
fn check_model_setting(k: &str, v: &str) -> Result<()> {
    if k == "update-status-hook-interval" && controller::parse_duration(v).is_none() {
        bail!("update-status-hook-interval: invalid duration {v:?} (use e.g. 5m, 30s)");
    }
    if k == "harness-machine" && crate::machine::Kind::parse(v).is_none() {
        bail!(
            "harness-machine: unknown machine kind {v:?} (use {})",
            crate::machine::Kind::NAMES
        );
    }
    let mirror_ok = v.is_empty()
        || v.starts_with("file:/")
        || v.starts_with("http://")
        || v.starts_with("https://");
    if k == "apt-mirror" && !mirror_ok {
        bail!("apt-mirror: {v:?} is not a file:/ directory or an http(s) URL");
    }
    if k == "harness-hold-at" && !matches!(v, "" | "veth" | "spawned") {
        bail!("harness-hold-at: {v:?} is not a hold point (veth or spawned, or empty for none)");
    }
    if k == "firewall-mode" && !matches!(v, "instance" | "none") {
        bail!("firewall-mode: {v:?} is not instance (a cloud's firewall: only exposed applications' opened ports are reachable from outside the model) or none");
    }
    Ok(())
}

/// `wait-settled`
pub(super) async fn wait_settled(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[value(&["timeout"]), value(&["status"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let timeout = p
        .value("timeout")
        .and_then(controller::parse_duration)
        .unwrap_or(Duration::from_secs(600));
    let want = p.value("status").map(String::from);
    let ok = ctl
        .wait_for(Some(Instant::now() + timeout), |w| {
            let m = w.models.get(&model)?;
            let settled = m.units.values().all(|u| {
                u.queue.is_empty()
                    && u.running.is_none()
                    && u.actions.is_empty()
                    && u.agent.current == "idle"
                    && u.error.is_none()
                    && want
                        .as_ref()
                        .map(|s| &u.workload.current == s)
                        .unwrap_or(true)
            });
            let machines = m.machines.values().all(|x| x.status == "started");
            (settled && machines).then_some(())
        })
        .await;
    match ok {
        Some(()) => Ok(Reply::ok("")),
        None => {
            let v = ctl.model(&model, status_json)?;
            Ok(Reply {
                code: 1,
                stdout: status_table(&v),
                stderr: "ERROR timed out waiting for the model to settle\n".into(),
            })
        }
    }
}
