//! The `juju` commands the controller answers (the subset jubilant uses, juju-contract.md §5),
//! plus the harness's own fault operations (cut-network, crash-machine, reboot-machine, ...).
//! Arguments arrive from the thin CLI client and are parsed here with Juju's flag rules.

mod actions;
mod ssh;

use crate::controller::{self, app_of, unit_number, unit_workload, Ctl};
use crate::flags::{self, boolean, value, Flag};
use crate::format::{render, Format};
use crate::machine;
use crate::proto::{AgentRequest, Reply};
use crate::state::*;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODEL: Flag = value(&["m", "model"]);
const FORMAT: Flag = value(&["format"]);

pub async fn handle(
    ctl: &Arc<Ctl>,
    args: Vec<String>,
    cwd: &str,
    env_model: Option<String>,
) -> Reply {
    let Some((cmd, rest)) = args.split_first() else {
        return Reply::ok(USAGE);
    };
    match run(ctl, cmd, rest, Path::new(cwd), env_model).await {
        Ok(r) => r,
        Err(e) => Reply::err(1, format!("{e:#}")),
    }
}

const USAGE: &str = "charm-harness: a local Juju-compatible controller\n\
commands: add-model destroy-model models deploy add-unit remove-unit remove-application integrate\n\
remove-relation config model-config run exec status show-unit show-model debug-log attach-resource\n\
run-action show-action-output show-task actions show-action scp ssh attach\n\
resolve version wait-settled cut-network heal-network crash-machine start-machine reboot-machine\n\
show-machine kill-controller\n";

fn parse(defs: &[Flag], args: &[String]) -> Result<flags::Parsed> {
    let mut all = defs.to_vec();
    all.push(MODEL);
    flags::parse(&all, args).map_err(|e| anyhow!(e))
}

fn model_name(ctl: &Ctl, p: &flags::Parsed, env_model: &Option<String>) -> Result<String> {
    let m = p
        .value("m")
        .map(String::from)
        .or(env_model.clone())
        .or_else(|| ctl.read(|w| w.current_model.clone()));
    let m = m.ok_or_else(|| anyhow!("no model in focus: pass --model or run add-model first"))?;
    let m = m.rsplit(':').next().unwrap_or(&m).to_string();
    if !ctl.read(|w| w.models.contains_key(&m)) {
        bail!("model \"{m}\" not found");
    }
    Ok(m)
}

fn fmt_out(v: &Value, p: &flags::Parsed, default: Format) -> Result<Reply> {
    let f = Format::parse(p.value("format"), default).map_err(|e| anyhow!(e))?;
    Ok(Reply::ok(render(v, f)))
}

fn resolve_unit(m: &Model, name: &str) -> Result<String> {
    if let Some(app) = name.strip_suffix("/leader") {
        return m
            .apps
            .get(app)
            .and_then(|a| a.leader.clone())
            .ok_or_else(|| anyhow!("could not determine leader for \"{app}\""));
    }
    if m.units.contains_key(name) {
        Ok(name.to_string())
    } else {
        bail!("unit \"{name}\" not found")
    }
}

/// Parses a config value by its option type, as `juju config` does.
fn typed(kind: &str, key: &str, raw: &str) -> Result<Value> {
    Ok(match kind {
        "int" => json!(raw
            .parse::<i64>()
            .map_err(|_| anyhow!("option {key:?} expected int, got {raw:?}"))?),
        "float" => json!(raw
            .parse::<f64>()
            .map_err(|_| anyhow!("option {key:?} expected float, got {raw:?}"))?),
        "boolean" => json!(flags::parse_go_bool(raw)
            .ok_or_else(|| anyhow!("option {key:?} expected boolean, got {raw:?}"))?),
        _ => json!(raw),
    })
}

fn typed_value(kind: &str, key: &str, v: &Value) -> Result<Value> {
    match v {
        Value::String(s) => typed(kind, key, s),
        Value::Number(_) if kind == "int" || kind == "float" => Ok(v.clone()),
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
fn config_args(
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

/// Copies a charm directory into the controller, honouring `.jujuignore` (gitignore syntax).
fn snapshot_charm(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    std::fs::create_dir_all(dst)?;
    let walker = ignore::WalkBuilder::new(src)
        .hidden(false)
        .git_ignore(false)
        .git_global(false)
        .git_exclude(false)
        .ignore(false)
        .parents(false)
        .add_custom_ignore_filename(".jujuignore")
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry?;
        let rel = entry.path().strip_prefix(src)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let to = dst.join(rel);
        let ft = entry.file_type().context("file type")?;
        if ft.is_dir() {
            std::fs::create_dir_all(&to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else {
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::copy(entry.path(), &to)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn store_resource(
    ctl: &Ctl,
    model: &str,
    app: &str,
    name: &str,
    rev: u32,
    src: &Path,
) -> Result<String> {
    let dir = ctl
        .home
        .join("resources")
        .join(model)
        .join(app)
        .join(name)
        .join(rev.to_string());
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(src.file_name().unwrap_or_default());
    std::fs::copy(src, &file)
        .with_context(|| format!("reading resource file {}", src.display()))?;
    Ok(file.to_string_lossy().into_owned())
}

fn new_uuid() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::thread_rng().gen();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn run(
    ctl: &Arc<Ctl>,
    cmd: &str,
    args: &[String],
    cwd: &Path,
    env_model: Option<String>,
) -> Result<Reply> {
    match cmd {
        "version" => {
            let p = parse(&[FORMAT, boolean(&["all"])], args)?;
            let v = if p.flag("all") {
                json!({"version": controller::JUJU_VERSION, "git-commit": "", "compiler": "rustc"})
            } else {
                json!(controller::JUJU_VERSION)
            };
            fmt_out(&v, &p, Format::Smart)
        }
        "add-model" => {
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
            ctl.mutate(|w| {
                w.models.insert(
                    name.clone(),
                    Model {
                        name: name.clone(),
                        uuid: new_uuid(),
                        net_index: net.index,
                        config,
                        apps: Default::default(),
                        units: Default::default(),
                        machines: Default::default(),
                        relations: Default::default(),
                        tasks: Default::default(),
                        secrets: Default::default(),
                        next_machine: 0,
                        next_relation: 0,
                        next_task: 0,
                        next_storage: Default::default(),
                    },
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
        "destroy-model" => {
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
        "models" => {
            let p = parse(&[FORMAT], args)?;
            let v = ctl.read(|w| json!({"models": w.models.values().map(|m| json!({"name": m.name, "short-name": m.name, "model-uuid": m.uuid})).collect::<Vec<_>>(), "current-model": w.current_model}));
            fmt_out(&v, &p, Format::Yaml)
        }
        "show-model" => {
            let p = parse(&[FORMAT], args)?;
            let name = match p.positional.first() {
                Some(n) => n.rsplit(':').next().unwrap_or(n).to_string(),
                None => model_name(ctl, &p, &env_model)?,
            };
            let v = ctl.read(|w| {
                w.models.get(&name).map(|m| json!({name.clone(): {"name": m.name, "short-name": m.name, "model-uuid": m.uuid, "type": "iaas", "controller-name": "harness", "cloud": "localhost", "life": "alive", "agent-version": controller::JUJU_VERSION, "status": {"current": "available"}}}))
            });
            let v = v.ok_or_else(|| anyhow!("model \"{name}\" not found"))?;
            fmt_out(&v, &p, Format::Yaml)
        }
        "deploy" => deploy(ctl, args, cwd, &env_model).await,
        "add-unit" => {
            let p = parse(
                &[
                    value(&["n", "num-units"]),
                    value(&["to"]),
                    value(&["attach-storage"]),
                ],
                args,
            )?;
            let model = model_name(ctl, &p, &env_model)?;
            let app = p
                .positional
                .first()
                .ok_or_else(|| anyhow!("no application name specified"))?
                .clone();
            let n: u32 = p.value("n").unwrap_or("1").parse().context("--num-units")?;
            add_units(ctl, &model, &app, n)?;
            Ok(Reply::ok(""))
        }
        "remove-unit" => {
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
            let model = model_name(ctl, &p, &env_model)?;
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
        "remove-application" => {
            let p = parse(
                &[
                    boolean(&["no-prompt"]),
                    boolean(&["destroy-storage"]),
                    boolean(&["force"]),
                    boolean(&["no-wait"]),
                ],
                args,
            )?;
            let model = model_name(ctl, &p, &env_model)?;
            ctl.model_mut(&model, |m| -> Result<()> {
                for app in &p.positional {
                    let a = m
                        .apps
                        .get_mut(app)
                        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
                    a.status = Some(Status::new("terminated", "application is being removed"));
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
        "integrate" | "relate" | "add-relation" => {
            let p = parse(&[value(&["via"])], args)?;
            let model = model_name(ctl, &p, &env_model)?;
            if p.positional.len() != 2 {
                bail!("a relation must involve two applications");
            }
            ctl.model_mut(&model, |m| integrate(m, &p.positional[0], &p.positional[1]))?;
            Ok(Reply::ok(""))
        }
        "remove-relation" => {
            let p = parse(&[boolean(&["force"])], args)?;
            let model = model_name(ctl, &p, &env_model)?;
            ctl.model_mut(&model, |m| -> Result<()> {
                let ids: Vec<u32> = if p.positional.len() == 1 {
                    vec![p.positional[0].parse().context("relation id")?]
                } else if p.positional.len() == 2 {
                    let matches = |spec: &str, r: &Relation| {
                        let (app, ep) = spec
                            .split_once(':')
                            .map(|(a, e)| (a, Some(e)))
                            .unwrap_or((spec, None));
                        r.endpoints
                            .iter()
                            .any(|e| e.app == app && ep.map(|x| x == e.name).unwrap_or(true))
                    };
                    m.relations
                        .values()
                        .filter(|r| {
                            !r.peer
                                && !r.dying
                                && matches(&p.positional[0], r)
                                && matches(&p.positional[1], r)
                        })
                        .map(|r| r.id)
                        .collect()
                } else {
                    bail!("remove-relation takes two endpoints or a relation id");
                };
                if ids.is_empty() {
                    bail!("relation {:?} not found", p.positional.join(" "));
                }
                for id in ids {
                    m.remove_relation(id);
                }
                Ok(())
            })?;
            Ok(Reply::ok(""))
        }
        "config" => config_cmd(ctl, args, cwd, &env_model),
        "model-config" => {
            let p = parse(&[FORMAT, value(&["reset"])], args)?;
            let model = model_name(ctl, &p, &env_model)?;
            let defaults: BTreeMap<&str, Value> = BTreeMap::from([
                ("automatically-retry-hooks", json!(true)),
                ("update-status-hook-interval", json!("5m")),
                ("harness-serial", json!(false)),
                (
                    "harness-machine",
                    json!(controller::DEFAULT_MACHINE_KIND.name()),
                ),
                ("apt-mirror", json!(controller::default_apt_mirror())),
            ]);
            let sets: Vec<&String> = p.positional.iter().filter(|a| a.contains('=')).collect();
            if !sets.is_empty() || p.value("reset").is_some() {
                ctl.model_mut(&model, |m| -> Result<()> {
                    for kv in sets {
                        let (k, v) = kv.split_once('=').unwrap();
                        if k == "update-status-hook-interval" && controller::parse_duration(v).is_none() {
                            bail!("update-status-hook-interval: invalid duration {v:?} (use e.g. 5m, 30s)");
                        }
                        if k == "harness-machine" && crate::machine::Kind::parse(v).is_none() {
                            bail!("harness-machine: unknown machine kind {v:?} (use {})", crate::machine::Kind::NAMES);
                        }
                        if k == "apt-mirror" && !(v.is_empty() || v.starts_with("file:/") || v.starts_with("http://") || v.starts_with("https://")) {
                            bail!("apt-mirror: {v:?} is not a file:/ directory or an http(s) URL");
                        }
                        let val = match v {
                            "true" | "false" => json!(v == "true"),
                            _ => json!(v),
                        };
                        m.config.insert(k.into(), val);
                    }
                    for k in p.value("reset").unwrap_or("").split(',').filter(|s| !s.is_empty()) {
                        m.config.remove(k);
                    }
                    Ok(())
                })?;
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
        "run" => run_action(ctl, args, cwd, &env_model).await,
        "run-action" => actions::run_action(ctl, args, cwd, &env_model).await,
        "show-action-output" => actions::show_action_output(ctl, args, &env_model).await,
        "show-task" => actions::show_task(ctl, args, &env_model).await,
        "actions" | "list-actions" => actions::list(ctl, args, &env_model),
        "show-action" => actions::show(ctl, args, &env_model),
        "scp" => ssh::scp(ctl, args, cwd, &env_model).await,
        "ssh" => ssh::ssh(ctl, args, &env_model).await,
        "exec" => exec(ctl, args, &env_model).await,
        "status" => {
            let p = parse(
                &[
                    FORMAT,
                    boolean(&["color"]),
                    boolean(&["relations"]),
                    boolean(&["storage"]),
                    boolean(&["watch"]),
                ],
                args,
            )?;
            let model = model_name(ctl, &p, &env_model)?;
            let v = ctl.model(&model, status_json)?;
            match p.value("format") {
                Some("json") | Some("yaml") => fmt_out(&v, &p, Format::Yaml),
                _ => Ok(Reply::ok(status_table(&v))),
            }
        }
        "show-unit" => {
            let p = parse(&[FORMAT], args)?;
            let model = model_name(ctl, &p, &env_model)?;
            let v = ctl.model(&model, |m| -> Result<Value> {
                let mut out = Map::new();
                for name in &p.positional {
                    let unit = resolve_unit(m, name)?;
                    out.insert(unit.clone(), show_unit(m, &unit));
                }
                Ok(Value::Object(out))
            })??;
            fmt_out(&v, &p, Format::Yaml)
        }
        "show-machine" => {
            let p = parse(&[FORMAT], args)?;
            let model = model_name(ctl, &p, &env_model)?;
            let v = ctl.model(&model, |m| {
                let mut out = Map::new();
                for (id, mach) in &m.machines {
                    if p.positional.is_empty() || p.positional.contains(&id.to_string()) {
                        out.insert(id.to_string(), json!({"address": mach.address, "hostname": mach.hostname, "status": mach.status, "init-pid": mach.init_pid, "netns": m.net().netns(*id), "network-cut": mach.cut, "unit": mach.unit}));
                    }
                }
                Value::Object(out)
            })?;
            fmt_out(&v, &p, Format::Yaml)
        }
        "debug-log" => {
            let p = parse(
                &[
                    value(&["n", "lines"]),
                    value(&["limit"]),
                    boolean(&["replay"]),
                    value(&["include"]),
                    value(&["level"]),
                    boolean(&["tail"]),
                    boolean(&["no-tail"]),
                ],
                args,
            )?;
            let model = model_name(ctl, &p, &env_model)?;
            let text =
                std::fs::read_to_string(controller::model_dir(&ctl.home, &model).join("debug.log"))
                    .unwrap_or_default();
            let include: Vec<String> = p
                .values("include")
                .iter()
                .map(|i| i.replace('/', "-"))
                .collect();
            let mut lines: Vec<&str> = text
                .lines()
                .filter(|l| include.is_empty() || include.iter().any(|i| l.contains(i.as_str())))
                .collect();
            if let Some(n) = p.value("limit").or(p.value("n")) {
                let n: usize = n.parse().context("--limit")?;
                let skip = lines.len().saturating_sub(n);
                lines.drain(..skip);
            }
            Ok(Reply::ok(
                lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
            ))
        }
        "attach-resource" | "attach" => {
            let p = parse(&[], args)?;
            let model = model_name(ctl, &p, &env_model)?;
            let app = p
                .positional
                .first()
                .ok_or_else(|| anyhow!("application name required"))?
                .clone();
            for kv in &p.positional[1..] {
                let (name, path) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("expected name=path, got {kv:?}"))?;
                let known = ctl.model(&model, |m| {
                    m.apps
                        .get(&app)
                        .map(|a| a.meta.resources.contains_key(name))
                })?;
                match known {
                    None => bail!("application \"{app}\" not found"),
                    Some(false) => bail!("charm does not define resource {name:?}"),
                    Some(true) => {}
                }
                let rev = ctl.model(&model, |m| {
                    m.apps
                        .get(&app)
                        .and_then(|a| a.resources.get(name))
                        .map(|r| r.revision)
                        .unwrap_or(0)
                })? + 1;
                let stored = store_resource(ctl, &model, &app, name, rev, &cwd.join(path))?;
                ctl.model_mut(&model, |m| {
                    m.apps
                        .get_mut(&app)
                        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?
                        .resources
                        .insert(
                            name.to_string(),
                            Resource {
                                revision: rev,
                                path: stored.clone(),
                            },
                        );
                    upgrade_sequence(m, &app);
                    Ok(())
                })?;
            }
            Ok(Reply::ok(""))
        }
        "refresh" | "upgrade-charm" => {
            let p = parse(
                &[
                    value(&["path"]),
                    value(&["resource"]),
                    boolean(&["force"]),
                    boolean(&["force-units"]),
                ],
                args,
            )?;
            let model = model_name(ctl, &p, &env_model)?;
            let app = p
                .positional
                .first()
                .ok_or_else(|| anyhow!("application name required"))?
                .clone();
            let path = p
                .value("path")
                .ok_or_else(|| anyhow!("only --path refreshes are supported here"))?;
            let src = cwd.join(path);
            let meta = read_charm(&src)?;
            let rev = ctl
                .model(&model, |m| m.apps.get(&app).map(|a| a.charm_rev))?
                .ok_or_else(|| anyhow!("application \"{app}\" not found"))?
                + 1;
            let dst = ctl
                .home
                .join("charms")
                .join(&model)
                .join(&app)
                .join(rev.to_string());
            snapshot_charm(&src, &dst)?;
            ctl.model_mut(&model, |m| {
                let a = m
                    .apps
                    .get_mut(&app)
                    .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
                a.meta = meta;
                a.charm_rev = rev;
                a.charm_dir = dst.to_string_lossy().into_owned();
                upgrade_sequence(m, &app);
                Ok(())
            })?;
            // Units get the new charm files before their upgrade-charm hook.
            let units: Vec<(String, Option<u32>)> = ctl.model(&model, |m| {
                m.units
                    .values()
                    .filter(|u| u.app == app)
                    .map(|u| {
                        (
                            u.name.clone(),
                            m.machines.get(&u.machine).and_then(|x| x.init_pid),
                        )
                    })
                    .collect()
            })?;
            for (u, pid) in units {
                if let Some(pid) = pid {
                    let target = PathBuf::from(format!("/proc/{pid}/root"))
                        .join(controller::charm_dir_in_machine(&u).trim_start_matches('/'));
                    let _ = std::fs::remove_dir_all(&target);
                    controller::copy_tree(&dst, &target)?;
                }
            }
            Ok(Reply::ok(""))
        }
        "resolve" | "resolved" => {
            let p = parse(&[boolean(&["no-retry"]), boolean(&["all"])], args)?;
            let model = model_name(ctl, &p, &env_model)?;
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
        "wait-settled" => {
            let p = parse(&[value(&["timeout"]), value(&["status"])], args)?;
            let model = model_name(ctl, &p, &env_model)?;
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
        "cut-network" | "heal-network" | "crash-machine" | "start-machine" | "reboot-machine" => {
            let p = parse(&[], args)?;
            let model = model_name(ctl, &p, &env_model)?;
            let target = p
                .positional
                .first()
                .ok_or_else(|| anyhow!("machine id or unit name required"))?;
            let id: u32 = match target.parse() {
                Ok(n) => n,
                Err(_) => ctl.model(&model, |m| -> Result<u32> {
                    let u = resolve_unit(m, target)?;
                    m.units
                        .get(&u)
                        .map(|x| x.machine)
                        .ok_or_else(|| anyhow!("unit \"{u}\" not found"))
                })??,
            };
            if !ctl.model(&model, |m| m.machines.contains_key(&id))? {
                bail!("machine {id} not found");
            }
            match cmd {
                "cut-network" | "heal-network" => {
                    let up = cmd == "heal-network";
                    let net = ctl.model(&model, |m| m.net())?;
                    machine::set_link(&net, id, up)?;
                    ctl.mutate(|w| {
                        w.models
                            .get_mut(&model)
                            .unwrap()
                            .machines
                            .get_mut(&id)
                            .unwrap()
                            .cut = !up
                    });
                }
                "crash-machine" => ctl.crash_machine(&model, id).await,
                "start-machine" => {
                    if ctl.model(&model, |m| {
                        m.machines.get(&id).is_some_and(|x| x.status == "started")
                    })? {
                        bail!("machine {id} is already running");
                    }
                    ctl.start_machine(&model, id).await?;
                }
                _ => ctl.reboot(&model, id).await?,
            }
            Ok(Reply::ok(""))
        }
        other => Ok(Reply::err(2, format!("unrecognized command: juju {other}"))),
    }
}

fn upgrade_sequence(m: &mut Model, app: &str) {
    let leader = m.apps.get(app).and_then(|a| a.leader.clone());
    let units: Vec<String> = m
        .units
        .values()
        .filter(|u| u.app == app && u.life == Life::Alive)
        .map(|u| u.name.clone())
        .collect();
    for u in units {
        m.push(&u, Event::hook("upgrade-charm"));
        m.push(&u, Event::hook("config-changed"));
        if leader.as_deref() != Some(u.as_str()) {
            m.push(&u, Event::hook("leader-settings-changed"));
        }
        m.push(&u, Event::hook("start"));
    }
}

fn add_units(ctl: &Arc<Ctl>, model: &str, app: &str, n: u32) -> Result<Vec<String>> {
    let added = ctl.mutate(|w| -> Result<Vec<(String, u32)>> {
        let m = w.models.get_mut(model).unwrap();
        if !m.apps.contains_key(app) {
            bail!("application \"{app}\" not found");
        }
        let mut out = vec![];
        for _ in 0..n {
            let u = m.add_unit(app)?;
            out.push((u.clone(), m.units[&u].machine));
        }
        Ok(out)
    })?;
    for (u, machine) in &added {
        ctl.ensure_worker(model, u);
        ctl.provision(model, *machine);
    }
    Ok(added.into_iter().map(|(u, _)| u).collect())
}

fn integrate(m: &mut Model, a: &str, b: &str) -> Result<()> {
    let split = |s: &str| {
        s.split_once(':')
            .map(|(x, y)| (x.to_string(), Some(y.to_string())))
            .unwrap_or((s.to_string(), None))
    };
    let (app_a, ep_a) = split(a);
    let (app_b, ep_b) = split(b);
    let meta_a = m
        .apps
        .get(&app_a)
        .ok_or_else(|| anyhow!("application \"{app_a}\" not found"))?
        .meta
        .clone();
    let meta_b = m
        .apps
        .get(&app_b)
        .ok_or_else(|| anyhow!("application \"{app_b}\" not found"))?
        .meta
        .clone();
    // provides on one side, requires on the other, same interface
    let mut candidates = vec![];
    for (pa, ia) in meta_a
        .provides
        .iter()
        .map(|(k, v)| (k, v, true))
        .chain(meta_a.requires.iter().map(|(k, v)| (k, v, false)))
        .map(|(k, v, p)| ((k.clone(), p), v.clone()))
    {
        for (pb, ib) in meta_b
            .provides
            .iter()
            .map(|(k, v)| ((k.clone(), true), v.clone()))
            .chain(
                meta_b
                    .requires
                    .iter()
                    .map(|(k, v)| ((k.clone(), false), v.clone())),
            )
        {
            if ia == ib
                && pa.1 != pb.1
                && ep_a.as_ref().map(|e| e == &pa.0).unwrap_or(true)
                && ep_b.as_ref().map(|e| e == &pb.0).unwrap_or(true)
            {
                candidates.push((pa.0.clone(), pb.0.clone(), ia.clone()));
            }
        }
    }
    let (ea, eb, iface) = match candidates.len() {
        0 => bail!("no relations found between {a:?} and {b:?}"),
        1 => candidates.remove(0),
        _ => bail!(
            "ambiguous relation: {a:?} {b:?} could refer to {}",
            candidates
                .iter()
                .map(|(x, y, _)| format!("\"{app_a}:{x} {app_b}:{y}\""))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    if m.relations.values().any(|r| {
        !r.dying
            && r.endpoint_of(&app_a).map(|e| e.name == ea).unwrap_or(false)
            && r.endpoint_of(&app_b).map(|e| e.name == eb).unwrap_or(false)
    }) {
        bail!("relation {app_a}:{ea} {app_b}:{eb} already exists");
    }
    let id = m.next_relation;
    m.next_relation += 1;
    m.relations.insert(
        id,
        Relation {
            id,
            endpoints: vec![
                Endpoint {
                    app: app_a.clone(),
                    name: ea.clone(),
                    interface: iface.clone(),
                },
                Endpoint {
                    app: app_b.clone(),
                    name: eb.clone(),
                    interface: iface,
                },
            ],
            peer: false,
            app_data: Default::default(),
            unit_data: Default::default(),
            scope: Default::default(),
            dying: false,
        },
    );
    let mut started = vec![];
    for (app, ep, remote) in [(&app_a, &ea, &app_b), (&app_b, &eb, &app_a)] {
        let units: Vec<(String, bool)> = m
            .units
            .values()
            .filter(|u| &u.app == app && u.life == Life::Alive)
            .map(|u| (u.name.clone(), u.started))
            .collect();
        for (u, s) in units {
            m.push(
                &u,
                Event {
                    hook: format!("{ep}-relation-created"),
                    relation: Some(id),
                    remote_app: Some(remote.clone()),
                    ..Default::default()
                },
            );
            if s {
                started.push(u);
            }
        }
    }
    for u in started {
        let addr = m
            .machines
            .get(&m.units[&u].machine)
            .map(|x| x.address.clone())
            .unwrap_or_default();
        m.enter_relation_scope(id, &u, &addr);
    }
    Ok(())
}

/// The charm directory `deploy` names: a local directory (`./etcd`, `/path/to/etcd`), or a
/// charm name (`etcd`, `ch:etcd`, `cs:etcd`) looked up as `<dir>/<name>/` in the
/// colon-separated directories of `CHARM_HARNESS_CHARMHUB`, the local controller's store.
fn find_charm(charm: &str, cwd: &Path) -> Result<PathBuf> {
    // As Juju reads it: a path (with a `/` or a leading `.`) is a local charm; a bare name is
    // the store's, and only a name no store holds falls back to a directory here.
    let local = cwd.join(charm);
    let is_path = charm.contains('/') || charm.starts_with('.');
    if is_path && local.is_dir() {
        return Ok(local);
    }
    let by_name = charm
        .strip_prefix("ch:")
        .or_else(|| charm.strip_prefix("cs:"))
        .unwrap_or(charm);
    let store = std::env::var("CHARM_HARNESS_CHARMHUB").unwrap_or_default();
    let looks_like_name = !by_name.is_empty()
        && by_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if looks_like_name {
        for dir in store.split(':').filter(|d| !d.is_empty()) {
            let candidate = Path::new(dir).join(by_name);
            if candidate.join("metadata.yaml").is_file() {
                return Ok(candidate);
            }
        }
    }
    if local.is_dir() {
        return Ok(local);
    }
    if !looks_like_name {
        bail!("charm {charm:?} not found: no such directory, and not a charm name");
    }
    if store.is_empty() {
        bail!("charm {charm:?} not found: deploy a local charm directory, or set CHARM_HARNESS_CHARMHUB to directories holding <name>/ charm directories");
    }
    bail!("charm {charm:?} not found in CHARM_HARNESS_CHARMHUB ({store}): each directory there holds <name>/ charm directories")
}

async fn deploy(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            value(&["n", "num-units"]),
            value(&["config"]),
            value(&["resource"]),
            value(&["storage"]),
            value(&["to"]),
            value(&["base"]),
            value(&["channel"]),
            value(&["constraints"]),
            value(&["bind"]),
            value(&["revision"]),
            value(&["attach-storage"]),
            value(&["overlay"]),
            value(&["series"]),
            boolean(&["trust"]),
            boolean(&["force"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let charm = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("no charm specified"))?;
    let src = find_charm(charm, cwd)?;
    let meta = read_charm(&src)?;
    let app = p
        .positional
        .get(1)
        .cloned()
        .unwrap_or_else(|| meta.name.clone());
    if ctl.model(&model, |m| m.apps.contains_key(&app))? {
        bail!("cannot add application \"{app}\": application already exists");
    }
    let n: u32 = p.value("n").unwrap_or("1").parse().context("--num-units")?;
    let config = config_args(&meta, &app, p.values("config"), cwd)?;
    let mut storage_requests = BTreeMap::new();
    for s in p.values("storage") {
        let (name, spec) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--storage expects name=count"))?;
        if !meta.storage.contains_key(name) {
            bail!("charm has no storage {name:?}");
        }
        let count: u32 = spec.split(',').find_map(|x| x.parse().ok()).unwrap_or(1);
        storage_requests.insert(name.to_string(), count);
    }
    let dst = ctl.home.join("charms").join(&model).join(&app).join("1");
    let src2 = src.clone();
    let dst2 = dst.clone();
    tokio::task::spawn_blocking(move || snapshot_charm(&src2, &dst2)).await??;
    let mut resources = BTreeMap::new();
    for r in p.values("resource") {
        let (name, path) = r
            .split_once('=')
            .ok_or_else(|| anyhow!("--resource expects name=path"))?;
        if !meta.resources.contains_key(name) {
            bail!("charm does not define resource {name:?}");
        }
        let stored = store_resource(ctl, &model, &app, name, 1, &cwd.join(path))?;
        resources.insert(
            name.to_string(),
            Resource {
                revision: 1,
                path: stored,
            },
        );
    }
    let peers = meta.peers.clone();
    ctl.model_mut(&model, |m| {
        m.apps.insert(
            app.clone(),
            App {
                name: app.clone(),
                charm_dir: dst.to_string_lossy().into_owned(),
                charm_rev: 1,
                meta: meta.clone(),
                config,
                next_unit: 0,
                leader: None,
                status: None,
                version: String::new(),
                leader_settings: Default::default(),
                resources,
                storage_requests,
            },
        );
        for (ep, iface) in peers {
            let id = m.next_relation;
            m.next_relation += 1;
            m.relations.insert(
                id,
                Relation {
                    id,
                    endpoints: vec![Endpoint {
                        app: app.clone(),
                        name: ep,
                        interface: iface,
                    }],
                    peer: true,
                    app_data: Default::default(),
                    unit_data: Default::default(),
                    scope: Default::default(),
                    dying: false,
                },
            );
        }
        Ok(())
    })?;
    add_units(ctl, &model, &app, n)?;
    Ok(Reply {
        code: 0,
        stdout: String::new(),
        stderr: format!(
            "Deployed \"{app}\" from local charm \"{}\", revision 1\n",
            meta.name
        ),
    })
}

fn config_cmd(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[FORMAT, value(&["reset"]), value(&["file"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let app = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("no application name specified"))?
        .clone();
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
        ctl.model_mut(&model, |m| {
            let a = m
                .apps
                .get_mut(&app)
                .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
            let before = a.config.clone();
            for (k, v) in new {
                let default = meta.options.get(&k).and_then(|d| d.default.clone());
                if Some(&v) == default.as_ref() {
                    a.config.remove(&k);
                } else {
                    a.config.insert(k, v);
                }
            }
            for r in resets {
                a.config.remove(&r);
            }
            if a.config != before {
                let units: Vec<String> = m
                    .units
                    .values()
                    .filter(|u| u.app == app && u.life == Life::Alive)
                    .map(|u| u.name.clone())
                    .collect();
                for u in units {
                    m.push(&u, Event::hook("config-changed"));
                }
            }
            Ok(())
        })?;
        return Ok(Reply::ok(""));
    }
    let v = ctl.model(&model, |m| -> Result<Value> {
        let a = m
            .apps
            .get(&app)
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
                    e.insert("source".into(), json!(if def.default.is_some() { "default" } else { "unset" }));
                }
            }
            settings.insert(k.clone(), Value::Object(e));
        }
        Ok(json!({"application": app, "charm": a.meta.name, "settings": settings, "application-config": {"trust": {"default": false, "description": "Does this application have access to trusted credentials", "source": "default", "type": "bool", "value": false}}}))
    })??;
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

/// Checks params against an action's schema (types, unknown keys) and fills defaults.
fn validate_params(spec: &Value, mut params: Map<String, Value>) -> Result<Value> {
    let props = spec
        .get("params")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let strict = spec.get("additionalProperties").and_then(Value::as_bool) == Some(false);
    for (k, v) in &params {
        let Some(def) = props.get(k) else {
            if strict {
                bail!("validation failed: (root) : additional property \"{k}\" is not allowed, given: {}", serde_json::to_string(&params).unwrap_or_default());
            }
            continue;
        };
        let want = def.get("type").and_then(Value::as_str).unwrap_or("");
        let ok = match want {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => true,
        };
        if !ok {
            bail!(
                "validation failed: (root).{k} : invalid type. Expected: {want}, given: {}",
                json_type(v)
            );
        }
        if let (Some(allowed), false) = (def.get("enum").and_then(Value::as_array), v.is_null()) {
            if !allowed.contains(v) {
                bail!(
                    "validation failed: (root).{k} : {k} must be one of the following: {}",
                    allowed
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    for (k, def) in &props {
        if !params.contains_key(k) {
            if let Some(d) = def.get("default") {
                params.insert(k.clone(), d.clone());
            }
        }
    }
    if let Some(req) = spec.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !params.contains_key(r) {
                bail!("validation failed: (root) : \"{r}\" property is missing and required");
            }
        }
    }
    Ok(Value::Object(params))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn task_json(t: &Task) -> Value {
    let mut results = Map::new();
    for (k, v) in &t.results {
        results.insert(k.clone(), v.clone());
    }
    results.insert("return-code".into(), json!(t.return_code.unwrap_or(0)));
    if !t.stdout.is_empty() {
        results.insert("stdout".into(), json!(t.stdout));
    }
    if !t.stderr.is_empty() {
        results.insert("stderr".into(), json!(t.stderr));
    }
    let mut o = Map::new();
    o.insert("id".into(), json!(t.id.to_string()));
    o.insert("status".into(), json!(t.status));
    o.insert("unit".into(), json!(t.unit));
    o.insert("results".into(), Value::Object(results));
    if !t.message.is_empty() {
        o.insert("message".into(), json!(t.message));
    }
    if !t.log.is_empty() {
        o.insert("log".into(), json!(t.log));
    }
    o.insert(
        "timing".into(),
        json!({"enqueued": t.enqueued, "started": t.started, "completed": t.completed}),
    );
    Value::Object(o)
}

async fn wait_tasks(
    ctl: &Arc<Ctl>,
    model: &str,
    ids: &[u64],
    wait: Option<Duration>,
) -> Option<Vec<Task>> {
    ctl.wait_for(wait.map(|d| Instant::now() + d), |w| {
        let m = w.models.get(model)?;
        let tasks: Vec<Task> = ids.iter().filter_map(|i| m.tasks.get(i).cloned()).collect();
        tasks
            .iter()
            .all(|t| t.status == "completed" || t.status == "failed")
            .then_some(tasks)
    })
    .await
}

fn tasks_reply(tasks: &[Task], p: &flags::Parsed, exec: bool) -> Reply {
    let mut out = Map::new();
    for t in tasks {
        out.insert(t.unit.clone(), task_json(t));
    }
    let failed: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.status != "completed" || (!exec && t.return_code.unwrap_or(0) != 0))
        .collect();
    let json_mode = p
        .value("format")
        .map(|f| f == "json" || f == "yaml")
        .unwrap_or(false);
    let stdout = if json_mode {
        render(
            &Value::Object(out),
            if p.value("format") == Some("json") {
                Format::Json
            } else {
                Format::Yaml
            },
        )
    } else if exec && tasks.len() == 1 {
        tasks[0].stdout.clone()
    } else {
        let mut s = String::new();
        for t in tasks {
            if !t.log.is_empty() {
                for l in &t.log {
                    s.push_str(&format!("{l}\n"));
                }
            }
            if !t.results.is_empty() {
                s.push_str(&render(&json!(t.results), Format::Yaml));
            }
            s.push_str(&t.stdout);
        }
        s
    };
    if exec && !json_mode && tasks.len() == 1 {
        let t = &tasks[0];
        let code = t.return_code.unwrap_or(1);
        let mut stderr = t.stderr.clone();
        if t.return_code.is_none() {
            stderr.push_str(&format!("ERROR {}\n", t.message));
        }
        return Reply {
            code,
            stdout,
            stderr,
        };
    }
    if failed.is_empty() {
        return Reply::ok(stdout);
    }
    let mut stderr = String::from("ERROR the following task failed:\n");
    for t in failed {
        stderr.push_str(&format!(
            " id \"{}\" with return code {}\n",
            t.id,
            t.return_code.unwrap_or(1)
        ));
        if !t.message.is_empty() {
            stderr.push_str(&format!("   message: {}\n", t.message));
        }
    }
    stderr.push_str("\nuse 'juju show-task' to inspect the failure (task failed)\n");
    Reply {
        code: 1,
        stdout,
        stderr,
    }
}

async fn run_action(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(
        &[
            FORMAT,
            value(&["wait"]),
            value(&["params"]),
            boolean(&["string-args"]),
            boolean(&["background"]),
            boolean(&["quiet"]),
            boolean(&["utc"]),
            value(&["color"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let id = queue_action(ctl, &p, cwd, &model)?;
    if p.flag("background") {
        return Ok(Reply {
            code: 0,
            stdout: String::new(),
            stderr: format!("Scheduled operation {id} with task {id}\n"),
        });
    }
    let wait = p.value("wait").and_then(controller::parse_duration);
    match wait_tasks(ctl, &model, &[id], wait).await {
        Some(tasks) => Ok(tasks_reply(&tasks, &p, false)),
        None => Ok(Reply {
            code: 1,
            stdout: String::new(),
            stderr: format!("ERROR timed out waiting for result from task {id}\n"),
        }),
    }
}

/// Queues the action `p` names (`<unit> <action> [key=value ...]`, `--params`, `--string-args`)
/// after checking its parameters against the charm's schema; returns the task's id.
fn queue_action(ctl: &Arc<Ctl>, p: &flags::Parsed, cwd: &Path, model: &str) -> Result<u64> {
    if p.positional.len() < 2 {
        bail!("no unit and action specified");
    }
    let mut params = Map::new();
    if let Some(f) = p.value("params") {
        let text = std::fs::read_to_string(cwd.join(f))
            .with_context(|| format!("reading --params {f}"))?;
        let v: Value =
            serde_yaml::from_str(&text).with_context(|| format!("parsing --params {f}"))?;
        if let Value::Object(o) = v {
            params.extend(o);
        }
    }
    for kv in &p.positional[2..] {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("argument {kv:?} must be of the form key.key=value"))?;
        let val: Value = if p.flag("string-args") {
            json!(v)
        } else {
            serde_yaml::from_str(v).unwrap_or(json!(v))
        };
        let segs: Vec<&str> = k.split('.').collect();
        let mut cur = &mut params;
        for s in &segs[..segs.len() - 1] {
            cur = cur
                .entry(s.to_string())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| anyhow!("conflicting key {k}"))?;
        }
        cur.insert(segs[segs.len() - 1].to_string(), val);
    }
    let action = p.positional[1].clone();
    ctl.model_mut(model, |m| -> Result<u64> {
        let unit = resolve_unit(m, &p.positional[0])?;
        let app = app_of(&unit).to_string();
        let spec = m.apps[&app]
            .meta
            .actions
            .get(&action)
            .cloned()
            .ok_or_else(|| {
                anyhow!("action \"{action}\" not defined on unit \"{unit}\" (not found)")
            })?;
        let params = validate_params(&spec, params)?;
        m.next_task += 1;
        let id = m.next_task;
        m.tasks.insert(
            id,
            Task {
                id,
                unit: unit.clone(),
                action: action.clone(),
                params,
                status: "pending".into(),
                message: String::new(),
                results: Default::default(),
                log: vec![],
                enqueued: now_juju(),
                started: String::new(),
                completed: String::new(),
                return_code: None,
                stdout: String::new(),
                stderr: String::new(),
                command: None,
            },
        );
        m.units
            .get_mut(&unit)
            .ok_or_else(|| anyhow!("unit \"{unit}\" not found"))?
            .actions
            .push_back(id);
        Ok(id)
    })
}

/// Runs `script` with bash on a started machine through its agent (PATH, LANG, and HOME
/// set to `home`), from `cwd`; its output and exit code as the reply.
async fn shell_on_machine(
    ctl: &Ctl,
    model: &str,
    id: u32,
    script: String,
    home: &str,
    cwd: &str,
) -> Result<Reply> {
    let up = ctl.model(model, |m| {
        m.machines.get(&id).map(|x| x.status == "started")
    })?;
    if up != Some(true) {
        bail!("machine {id} is not running");
    }
    let sock = machine::agent_socket(&controller::model_dir(&ctl.home, model), id);
    let env = BTreeMap::from([
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME".to_string(), home.to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ]);
    let (r, _) = machine::agent_call(
        &sock,
        &AgentRequest::Run {
            argv: vec!["/bin/bash".into(), "-c".into(), script],
            env,
            cwd: cwd.into(),
        },
    )
    .await?;
    Ok(Reply {
        code: r.code,
        stdout: r.stdout,
        stderr: r.stderr,
    })
}

async fn exec(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    let p = parse(
        &[
            FORMAT,
            value(&["wait"]),
            value(&["unit", "u"]),
            value(&["machine"]),
            value(&["application", "a"]),
            boolean(&["all"]),
            boolean(&["background"]),
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    if p.positional.is_empty() {
        bail!("no commands specified");
    }
    let command = p.positional.clone();
    let wait = p.value("wait").and_then(controller::parse_duration);
    if let Some(mid) = p.value("machine") {
        let id: u32 = mid.parse().context("--machine")?;
        let r = shell_on_machine(ctl, &model, id, command.join(" "), "/root", "/root").await?;
        if p.value("format") == Some("json") {
            let v = json!({ format!("machine-{id}"): {"id": "0", "status": "completed", "machine": id.to_string(), "results": {"return-code": r.code, "stdout": r.stdout, "stderr": r.stderr}}});
            return Ok(Reply::ok(render(&v, Format::Json)));
        }
        return Ok(r);
    }
    let ids = ctl.model_mut(&model, |m| -> Result<Vec<u64>> {
        let mut units: Vec<String> = vec![];
        for u in p.values("unit").iter().flat_map(|v| v.split(',')) {
            units.push(resolve_unit(m, u)?);
        }
        for a in p.values("application").iter().flat_map(|v| v.split(',')) {
            units.extend(m.units.values().filter(|u| u.app == a).map(|u| u.name.clone()));
        }
        if units.is_empty() {
            bail!("you must specify a target, either through --all, --machine, --application or --unit");
        }
        let mut ids = vec![];
        for unit in units {
            m.next_task += 1;
            let id = m.next_task;
            m.tasks.insert(
                id,
                Task { id, unit: unit.clone(), action: "juju-exec".into(), params: json!({}), status: "pending".into(), message: String::new(), results: Default::default(), log: vec![], enqueued: now_juju(), started: String::new(), completed: String::new(), return_code: None, stdout: String::new(), stderr: String::new(), command: Some(command.clone()) },
            );
            m.units.get_mut(&unit).unwrap().actions.push_back(id);
            ids.push(id);
        }
        Ok(ids)
    })?;
    match wait_tasks(ctl, &model, &ids, wait).await {
        Some(tasks) => Ok(tasks_reply(&tasks, &p, true)),
        None => Ok(Reply {
            code: 1,
            stdout: String::new(),
            stderr: "ERROR timed out waiting for results\n".into(),
        }),
    }
}

fn status_entry(s: &Status) -> Value {
    let mut o = Map::new();
    o.insert("current".into(), json!(s.current));
    if !s.message.is_empty() {
        o.insert("message".into(), json!(s.message));
    }
    o.insert("since".into(), json!(s.since));
    Value::Object(o)
}

fn show_unit(m: &Model, unit: &str) -> Value {
    let u = &m.units[unit];
    let addr = m
        .machines
        .get(&u.machine)
        .map(|x| x.address.clone())
        .unwrap_or_default();
    let mut rels = vec![];
    for r in m
        .relations
        .values()
        .filter(|r| !r.dying && r.endpoint_of(&u.app).is_some())
    {
        let ep = r.endpoint_of(&u.app).unwrap();
        let remote = r.remote_app_of(&u.app).unwrap_or("");
        let mut related = Map::new();
        for v in u.views.get(&r.id).into_iter().flatten() {
            related.insert(v.clone(), json!({"in-scope": r.scope.contains(v), "data": r.unit_data.get(v).cloned().unwrap_or_default()}));
        }
        rels.push(json!({
            "relation-id": r.id,
            "endpoint": ep.name,
            "related-endpoint": r.endpoints.iter().find(|e| e.app != u.app).map(|e| e.name.clone()).unwrap_or(ep.name.clone()),
            "application-data": r.app_data.get(remote).cloned().unwrap_or_default(),
            "local-unit": {"in-scope": r.scope.contains(unit), "data": r.unit_data.get(unit).cloned().unwrap_or_default()},
            "related-units": related,
        }));
    }
    json!({
        "workload-status": status_entry(&unit_workload(u)),
        "juju-status": status_entry(&u.agent),
        "leader": m.apps.get(&u.app).and_then(|a| a.leader.as_deref()) == Some(unit),
        "machine": u.machine.to_string(),
        "public-address": addr,
        "opened-ports": u.ports.iter().cloned().collect::<Vec<_>>(),
        "charm": format!("local:{}-{}", m.apps[&u.app].meta.name, m.apps[&u.app].charm_rev),
        "relation-info": rels,
    })
}

pub fn status_json(m: &Model) -> Value {
    let mut machines = Map::new();
    for (id, x) in &m.machines {
        let juju = match x.status.as_str() {
            "started" => "started",
            "pending" => "pending",
            "down" => "down",
            _ => "error",
        };
        machines.insert(
            id.to_string(),
            json!({"juju-status": {"current": juju, "message": if juju == "error" { x.status.clone() } else { String::new() }, "since": now_juju()}, "dns-name": x.address, "ip-addresses": [x.address], "instance-id": m.net().netns(*id), "hostname": x.hostname, "machine-status": {"current": if juju == "started" { "running" } else { juju }, "since": now_juju()}, "base": {"name": "debian", "channel": "12"}}),
        );
    }
    let mut apps = Map::new();
    for (name, a) in &m.apps {
        let mut units = Map::new();
        let mut app_units: Vec<&Unit> = m.units.values().filter(|u| &u.app == name).collect();
        app_units.sort_by_key(|u| unit_number(&u.name));
        for u in &app_units {
            let addr = m
                .machines
                .get(&u.machine)
                .map(|x| x.address.clone())
                .unwrap_or_default();
            let mut e = Map::new();
            e.insert("workload-status".into(), status_entry(&unit_workload(u)));
            let mut js = status_entry(&u.agent);
            js["version"] = json!(controller::JUJU_VERSION);
            e.insert("juju-status".into(), js);
            if a.leader.as_deref() == Some(u.name.as_str()) {
                e.insert("leader".into(), json!(true));
            }
            e.insert("machine".into(), json!(u.machine.to_string()));
            if !u.ports.is_empty() {
                e.insert(
                    "open-ports".into(),
                    json!(u.ports.iter().cloned().collect::<Vec<_>>()),
                );
            }
            e.insert("public-address".into(), json!(addr));
            e.insert("address".into(), json!(addr));
            units.insert(u.name.clone(), Value::Object(e));
        }
        let mut rels: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in m.relations.values().filter(|r| !r.dying) {
            if let Some(ep) = r.endpoint_of(name) {
                let remote = r.remote_app_of(name).unwrap_or("").to_string();
                rels.entry(ep.name.clone()).or_default().push(json!({"related-application": remote, "interface": ep.interface, "scope": "global"}));
            }
        }
        let mut e = Map::new();
        e.insert(
            "charm".into(),
            json!(format!("local:{}-{}", a.meta.name, a.charm_rev)),
        );
        e.insert("charm-origin".into(), json!("local"));
        e.insert("charm-name".into(), json!(a.meta.name));
        e.insert("charm-rev".into(), json!(a.charm_rev));
        e.insert("exposed".into(), json!(false));
        e.insert("base".into(), json!({"name": "debian", "channel": "12"}));
        e.insert("scale".into(), json!(app_units.len()));
        e.insert(
            "application-status".into(),
            status_entry(&m.app_status(name)),
        );
        if !a.version.is_empty() {
            e.insert("version".into(), json!(a.version));
        }
        if !rels.is_empty() {
            e.insert("relations".into(), json!(rels));
        }
        if !units.is_empty() {
            e.insert("units".into(), Value::Object(units));
        }
        apps.insert(name.clone(), Value::Object(e));
    }
    json!({
        "model": {"name": m.name, "type": "iaas", "controller": "harness", "cloud": "localhost", "region": "localhost", "version": controller::JUJU_VERSION, "model-status": {"current": "available", "since": now_juju()}},
        "machines": machines,
        "applications": apps,
        "controller": {"timestamp": now_juju()},
    })
}

/// Rows as Juju prints them: each column as wide as its widest cell, two spaces between
/// columns, the last one unpadded.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn status_table(v: &Value) -> String {
    let text = |x: &Value| x.as_str().unwrap_or("").to_string();
    let model = &v["model"];
    let mut s = table(&[
        vec![
            "Model".into(),
            "Controller".into(),
            "Cloud/Region".into(),
            "Version".into(),
        ],
        vec![
            text(&model["name"]),
            "harness".into(),
            "localhost/localhost".into(),
            text(&model["version"]),
        ],
    ]);
    s.push('\n');
    let apps = v["applications"].as_object().cloned().unwrap_or_default();
    let mut rows = vec![vec![
        "App".to_string(),
        "Version".into(),
        "Status".into(),
        "Scale".into(),
        "Message".into(),
    ]];
    for (name, a) in &apps {
        rows.push(vec![
            name.clone(),
            text(&a["version"]),
            text(&a["application-status"]["current"]),
            a["scale"].to_string(),
            text(&a["application-status"]["message"]),
        ]);
    }
    s.push_str(&table(&rows));
    let mut rows = vec![[
        "Unit",
        "Workload",
        "Agent",
        "Machine",
        "Public address",
        "Ports",
        "Message",
    ]
    .map(String::from)
    .to_vec()];
    for a in apps.values() {
        for (u, e) in a["units"].as_object().cloned().unwrap_or_default() {
            let leader = if e.get("leader").is_some() { "*" } else { "" };
            let ports = e["open-ports"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            rows.push(vec![
                format!("{u}{leader}"),
                text(&e["workload-status"]["current"]),
                text(&e["juju-status"]["current"]),
                text(&e["machine"]),
                text(&e["public-address"]),
                ports,
                text(&e["workload-status"]["message"]),
            ]);
        }
    }
    s.push('\n');
    s.push_str(&table(&rows));
    let mut rows = vec![["Machine", "State", "Address", "Inst id"]
        .map(String::from)
        .to_vec()];
    for (id, mach) in v["machines"].as_object().cloned().unwrap_or_default() {
        rows.push(vec![
            id.clone(),
            text(&mach["juju-status"]["current"]),
            text(&mach["dns-name"]),
            text(&mach["instance-id"]),
        ]);
    }
    s.push('\n');
    s.push_str(&table(&rows));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_columns_fit_their_content() {
        let v = json!({
            "model": {"name": "a-rather-long-model-name", "version": "3.6.8"},
            "applications": {"etcd": {"version": "3.5.1", "scale": 1,
                "application-status": {"current": "active", "message": "ok"},
                "units": {"etcd/0": {"workload-status": {"current": "active", "message": "Healthy"},
                    "juju-status": {"current": "idle"}, "machine": "0", "leader": true,
                    "public-address": "10.213.1.10", "open-ports": ["2379/tcp"]}}}},
            "machines": {"0": {"juju-status": {"current": "started"}, "dns-name": "10.213.1.10", "instance-id": "m0"}}
        });
        let t = status_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        // header cells start where their values start
        assert_eq!(lines[0].find("Controller"), lines[1].find("harness"), "{t}");
        assert_eq!(lines[0].find("Version"), lines[1].find("3.6.8"), "{t}");
        let unit = lines.iter().position(|l| l.starts_with("Unit")).unwrap();
        assert_eq!(
            lines[unit].find("Message"),
            lines[unit + 1].find("Healthy"),
            "{t}"
        );
        assert!(lines[unit + 1].starts_with("etcd/0*  active"), "{t}");
    }

    #[test]
    fn params_are_typed_and_defaulted() {
        let spec = json!({"params": {"revision": {"type": "integer"}, "physical": {"type": "boolean", "default": false}}, "additionalProperties": false});
        let v = validate_params(
            &spec,
            serde_json::from_value(json!({"revision": 5})).unwrap(),
        )
        .unwrap();
        assert_eq!(v, json!({"revision": 5, "physical": false}));
        let e = validate_params(
            &spec,
            serde_json::from_value(json!({"revision": "x"})).unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("Expected: integer"), "{e}");
        let e = validate_params(&spec, serde_json::from_value(json!({"nope": 1})).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("additional property"), "{e}");
    }

    #[test]
    fn config_values_are_typed() {
        assert_eq!(typed("int", "port", "2379").unwrap(), json!(2379));
        assert_eq!(typed("boolean", "b", "True").unwrap(), json!(true));
        assert!(typed("int", "port", "x").is_err());
    }
}
