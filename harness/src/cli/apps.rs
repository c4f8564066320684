//! Applications and units: `add-unit`, `remove-unit`, `remove-application`, `config`,
//! `resolve`.

use super::common::*;

/// `add-unit`
pub(super) async fn add_unit(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            value(&["n", "num-units"]),
            value(&["to"]),
            value(&["attach-storage"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let app = app_arg(&p)?;
    if p.value("attach-storage").is_some() {
        bail!("--attach-storage: this controller keeps no detached storage to attach (a removed unit's volumes go with it); add the unit without --attach-storage");
    }
    let n: u32 = p.value("n").unwrap_or("1").parse().context("--num-units")?;
    let to = placement(p.value("to"))?;
    add_units(ctl, &model, &app, n, &to)?;
    Ok(Reply::ok(""))
}

/// `--to 0,3`: the machines the first units go to, in order (the rest get new machines, as
/// Juju's deploy and add-unit place them). Only existing machines are placements here:
/// containers (`lxd:0`), new machines of a kind (`lxd`) and zones are refused by name.
pub(super) fn placement(to: Option<&str>) -> Result<Vec<u32>> {
    let Some(to) = to else { return Ok(vec![]) };
    to.split(',')
        .map(|d| {
            let d = d.trim();
            d.parse::<u32>().map_err(|_| {
                anyhow!(
                    "placement {d:?}: this controller places units on existing machines only \
                     (--to <machine number>); containers, zones and spaces are not supported"
                )
            })
        })
        .collect()
}

/// Every machine `to` names exists, checked before anything is made (`what` says what
/// was refused: "cannot deploy \"x\"").
pub(super) fn check_placement(m: &Model, to: &[u32], what: &str) -> Result<()> {
    match to.iter().find(|id| !m.machines.contains_key(id)) {
        Some(id) => bail!("{what}: machine {id} not found"),
        None => Ok(()),
    }
}

/// `expose <app>` / `unexpose <app>`: the opened ports of the application's units become
/// reachable from outside the model (the host), or stop being so (see `firewall`).
pub(super) fn expose(
    ctl: &Arc<Ctl>,
    on: bool,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            value(&["endpoints"]),
            value(&["to-cidrs"]),
            value(&["to-spaces"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let [app] = p.positional.as_slice() else {
        bail!("expected one application name, got {:?}", p.positional);
    };
    for f in ["endpoints", "to-cidrs", "to-spaces"] {
        if p.value(f).is_some() {
            bail!("--{f} is not supported by this controller: expose the whole application");
        }
    }
    ctl.model_mut(&model, |m| {
        m.apps
            .get_mut(app)
            .map(|a| a.exposed = on)
            .ok_or_else(|| anyhow!("application {app:?} not found"))
    })?;
    ctl.refresh_firewall(&model)?;
    Ok(Reply::ok(""))
}

/// `remove-unit`
pub(super) async fn remove_unit(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            boolean(&["no-prompt"]),
            boolean(&["destroy-storage"]),
            boolean(&["force"]),
            boolean(&["no-wait"]),
            value(&["num-units"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let removed = ctl.mutate(|w| -> Result<Vec<String>> {
        let m = w
            .models
            .get_mut(&model)
            .ok_or_else(|| anyhow!("model {model:?} not found"))?;
        let mut targets = vec![];
        if let Some(n) = p.value("num-units") {
            let app = p
                .positional
                .first()
                .ok_or_else(|| anyhow!("application name required with --num-units"))?;
            let n: usize = n.parse()?;
            let mut units: Vec<String> = m
                .units
                .values()
                .filter(|u| &u.app == app && u.life == Life::Alive)
                .map(|u| u.name.clone())
                .collect();
            units.sort_by_key(|u| std::cmp::Reverse(unit_number(u)));
            targets.extend(units.into_iter().take(n));
        } else {
            for u in &p.positional {
                targets.push(resolve_unit(m, u)?);
            }
        }
        if targets.is_empty() {
            bail!("no units specified");
        }
        for t in &targets {
            m.remove_unit(t);
        }
        Ok(targets)
    })?;
    // --force: a unit whose machine is down cannot run its teardown hooks; it goes
    // now (its peers still see it depart), as Juju does for a dead machine.
    if p.flag("force") {
        for unit in removed {
            let down = ctl.read(|w| {
                w.models.get(&model).is_some_and(|m| {
                    m.units
                        .get(&unit)
                        .and_then(|u| m.machines.get(&u.machine))
                        .is_some_and(|x| x.status != "started")
                })
            });
            if down {
                ctl.finalize_unit(&model, &unit).await;
            }
        }
    }
    Ok(Reply::ok(""))
}

/// `remove-application`
pub(super) async fn remove_application(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            boolean(&["no-prompt"]),
            boolean(&["destroy-storage"]),
            boolean(&["force"]),
            boolean(&["no-wait"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    ctl.model_mut(&model, |m| -> Result<()> {
        for app in &p.positional {
            let a = m
                .apps
                .get_mut(app)
                .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
            a.status = Some(Status::new("terminated", "application is being removed"));
            a.dying = true;
            let units: Vec<String> = m
                .units
                .values()
                .filter(|u| &u.app == app)
                .map(|u| u.name.clone())
                .collect();
            if units.is_empty() {
                m.apps.remove(app);
            }
            let rels: Vec<u32> = m
                .relations
                .values()
                .filter(|r| !r.peer && r.endpoint_of(app).is_some())
                .map(|r| r.id)
                .collect();
            for r in rels {
                m.remove_relation(r);
            }
            for u in units {
                m.remove_unit(&u);
            }
        }
        Ok(())
    })?;
    Ok(Reply::ok(""))
}

/// `resolve | resolved`
pub(super) async fn resolve(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[boolean(&["no-retry"]), boolean(&["all"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    ctl.model_mut(&model, |m| -> Result<()> {
        let units: Vec<String> = if p.flag("all") {
            m.units.keys().cloned().collect()
        } else {
            p.positional
                .iter()
                .map(|u| resolve_unit(m, u))
                .collect::<Result<_>>()?
        };
        for unit in units {
            let u = m.units.get_mut(&unit).unwrap();
            if u.error.is_none() {
                if !p.flag("all") {
                    bail!("unit \"{unit}\" is not in an error state");
                }
                continue;
            }
            u.error = None;
            if p.flag("no-retry") {
                u.queue.pop_front();
            }
        }
        Ok(())
    })?;
    Ok(Reply::ok(""))
}

/// Parses a config value by its option type, as `juju config` does.
pub(super) fn typed(kind: &str, key: &str, raw: &str) -> Result<Value> {
    Ok(match kind {
        "int" => json!(raw
            .parse::<i64>()
            .map_err(|_| anyhow!("option {key:?} expected int, got {raw:?}"))?),
        "float" => json!(raw
            .parse::<f64>()
            .map_err(|_| anyhow!("option {key:?} expected float, got {raw:?}"))?),
        "boolean" => json!(flags::parse_go_bool(raw)
            .ok_or_else(|| anyhow!("option {key:?} expected boolean, got {raw:?}"))?),
        // A secret's URI, as Juju 3.6 checks it (apiserver/facades/client/application/
        // application.go, validateSecretConfig: core/secrets ParseURI); empty unsets it.
        "secret" if !raw.is_empty() && !valid_secret_uri(raw) => {
            bail!("option {key:?} expected secret URI, got {raw:?}")
        }
        _ => json!(raw),
    })
}

fn valid_secret_uri(raw: &str) -> bool {
    let id = raw
        .strip_prefix("secret://")
        .and_then(|r| r.split_once('/').map(|(_, id)| id))
        .or_else(|| raw.strip_prefix("secret:"));
    id.is_some_and(|id| {
        id.len() == 20
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
    })
}

pub(super) fn typed_value(kind: &str, key: &str, v: &Value) -> Result<Value> {
    match v {
        Value::String(s) => typed(kind, key, s),
        Value::Number(_) if kind == "int" => Ok(v.clone()),
        // Stored as a float whatever the YAML spelt (`2`), as a float option's value is.
        Value::Number(n) if kind == "float" => Ok(json!(n.as_f64())),
        Value::Bool(_) if kind == "boolean" => Ok(v.clone()),
        other if kind == "string" => Ok(json!(match other {
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => bail!("option {key:?} expected string"),
        })),
        _ => bail!("option {key:?} expected {kind}, got {v}"),
    }
}

/// `--config k=v` or `--config file.yaml` (`{app: {k: v}}` or `{k: v}`).
pub(super) fn config_args(
    meta: &CharmMeta,
    app: &str,
    items: &[String],
    cwd: &Path,
) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for item in items {
        if let Some((k, v)) = item.split_once('=') {
            let def = meta
                .options
                .get(k)
                .ok_or_else(|| anyhow!("unknown option {k:?}"))?;
            out.insert(k.to_string(), typed(&def.kind, k, v)?);
        } else {
            let text = std::fs::read_to_string(cwd.join(item))
                .with_context(|| format!("reading config file {item}"))?;
            let v: Value = serde_yaml::from_str(&text)?;
            let map = v.get(app).cloned().unwrap_or(v);
            for (k, v) in map.as_object().cloned().unwrap_or_default() {
                let def = meta
                    .options
                    .get(&k)
                    .ok_or_else(|| anyhow!("unknown option {k:?}"))?;
                out.insert(k.clone(), typed_value(&def.kind, &k, &v)?);
            }
        }
    }
    Ok(out)
}

pub(super) fn add_units(
    ctl: &Arc<Ctl>,
    model: &str,
    app: &str,
    n: u32,
    to: &[u32],
) -> Result<Vec<String>> {
    if to.len() > n as usize {
        bail!("too many placement directives: {} for {n} units", to.len());
    }
    let added = ctl.mutate(|w| -> Result<Vec<(String, u32, bool)>> {
        let m = w.models.get_mut(model).unwrap();
        if !m.apps.contains_key(app) {
            bail!("application \"{app}\" not found");
        }
        // All placements checked before any unit is added: nothing half-done.
        check_placement(m, to, &format!("cannot add unit to application \"{app}\""))?;
        let mut out = vec![];
        for i in 0..n as usize {
            let (u, new) = m.add_unit(app, to.get(i).copied())?;
            out.push((u.clone(), m.units[&u].machine, new));
        }
        Ok(out)
    })?;
    // Their workers come from the deployer loop (`Ctl::deployer_loop`); a unit placed on a
    // running machine gets its charm before its first hook, as a subordinate does.
    for (_, machine, new) in &added {
        if *new {
            ctl.provision(model, *machine);
        }
    }
    Ok(added.into_iter().map(|(u, _, _)| u).collect())
}

pub(super) fn config(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[FORMAT, value(&["reset"]), value(&["file"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let app = app_arg(&p)?;
    let meta = ctl
        .model(&model, |m| m.apps.get(&app).map(|a| a.meta.clone()))?
        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
    let sets: Vec<String> = p.positional[1..]
        .iter()
        .filter(|a| a.contains('='))
        .cloned()
        .collect();
    let mut items = sets.clone();
    if let Some(f) = p.value("file") {
        items.push(f.to_string());
    }
    if !items.is_empty() || p.value("reset").is_some() {
        let new = config_args(&meta, &app, &items, cwd)?;
        let resets: Vec<String> = p
            .value("reset")
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        for r in &resets {
            if !meta.options.contains_key(r) {
                bail!("unknown option {r:?}");
            }
        }
        ctl.model_mut(&model, |m| m.set_config(&app, new, &resets))?;
        return Ok(Reply::ok(""));
    }
    let v = ctl.model(&model, |m| config_json(m, &app))??;
    match p.positional.get(1) {
        Some(k) => fmt_out(
            &v["settings"]
                .get(k)
                .and_then(|e| e.get("value"))
                .cloned()
                .unwrap_or(Value::Null),
            &p,
            Format::Smart,
        ),
        None => fmt_out(&v, &p, Format::Yaml),
    }
}

/// `juju config <app>`'s YAML: each option's type, description, default, value and where
/// the value comes from, and the application's own `trust`.
fn config_json(m: &Model, app: &str) -> Result<Value> {
    let a = m
        .apps
        .get(app)
        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
    let mut settings = Map::new();
    for (k, def) in &a.meta.options {
        let mut e = Map::new();
        e.insert("type".into(), json!(def.kind));
        e.insert("description".into(), json!(def.description));
        if let Some(d) = &def.default {
            e.insert("default".into(), d.clone());
        }
        match a.config.get(k) {
            Some(v) => {
                e.insert("value".into(), v.clone());
                e.insert("source".into(), json!("user"));
            }
            None => {
                if let Some(d) = &def.default {
                    e.insert("value".into(), d.clone());
                }
                e.insert(
                    "source".into(),
                    json!(if def.default.is_some() {
                        "default"
                    } else {
                        "unset"
                    }),
                );
            }
        }
        settings.insert(k.clone(), Value::Object(e));
    }
    Ok(
        json!({"application": app, "charm": a.meta.name, "settings": settings, "application-config": {"trust": {"default": false, "description": "Does this application have access to trusted credentials", "source": if a.trust { "user" } else { "default" }, "type": "bool", "value": a.trust}}}),
    )
}

/// `constraints <app>` (Juju's canonical form, empty when none) and `set-constraints <app>
/// name=value ...` (replaces them; machines made from now on get them), as
/// juju/juju `cmd/juju/application/constraints.go`.
pub(super) fn constraints(
    ctl: &Arc<Ctl>,
    set: bool,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[FORMAT], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let app = app_arg(&p)?;
    if set {
        let value = crate::constraints::parse(&p.positional[1..])?;
        return ctl.model_mut(&model, |m| {
            let a = m
                .apps
                .get_mut(&app)
                .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
            a.constraints = value;
            Ok(Reply::ok(""))
        });
    }
    if p.positional.len() > 1 {
        bail!("only one application name may be given (set them with set-constraints)");
    }
    let value = ctl
        .model(&model, |m| m.apps.get(&app).map(|a| a.constraints.clone()))?
        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
    Ok(Reply::ok(if value.is_empty() {
        String::new()
    } else {
        format!("{value}\n")
    }))
}

/// `trust <app> [--remove-trust]`: the application-config `trust` (juju/juju
/// `cmd/juju/application/trust.go`).
pub(super) fn trust(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    let p = parse(&[boolean(&["remove-trust"]), value(&["scope"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let app = app_arg(&p)?;
    let trusted = !p.flag("remove-trust");
    ctl.model_mut(&model, |m| {
        let a = m
            .apps
            .get_mut(&app)
            .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
        a.trust = trusted;
        Ok(Reply::ok(""))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_typed() {
        assert_eq!(typed("int", "port", "2379").unwrap(), json!(2379));
        assert_eq!(typed("boolean", "b", "True").unwrap(), json!(true));
        assert!(typed("int", "port", "x").is_err());
        assert!(typed("secret", "k", "secret:d4adbeefd4adbeefd4ad").is_ok());
        assert!(typed("secret", "k", "").is_ok());
        assert!(typed("secret", "k", "AGE-SECRET-KEY-1XYZ").is_err());
    }
}
