//! The hook tools, server side: each call arrives with its context id and is answered from
//! the model state with Juju's flags, formats, exit codes (2 for argument errors, 1 for
//! refusals) and stderr phrases. Relation writes, ports, secrets, state and storage-add are
//! buffered in the context; status, leader-set, logs and action results apply at once.

mod secrets;

mod machine_fs;

use crate::controller::{app_of, storage_location, Ctl, HookCtx};
use crate::flags::{self, boolean, value, Flag};
use crate::format::{render, Format};
use crate::proto::Reply;
use crate::state::*;
use machine_fs::read_in_machine;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

enum E {
    Usage(String),
    Run(String),
}

type R = Result<Reply, E>;

fn usage<T>(m: impl Into<String>) -> Result<T, E> {
    Err(E::Usage(m.into()))
}
fn refuse<T>(m: impl Into<String>) -> Result<T, E> {
    Err(E::Run(m.into()))
}

fn out(v: &Value, p: &flags::Parsed, default: Format) -> R {
    let f = Format::parse(p.value("format"), default).map_err(E::Usage)?;
    Ok(Reply::ok(render(v, f)))
}

fn parse(defs: &[Flag], args: &[String]) -> Result<flags::Parsed, E> {
    flags::parse(defs, args).map_err(E::Usage)
}

const FORMAT: Flag = value(&["format"]);
const OUTPUT: Flag = value(&["o", "output"]);

pub fn handle(
    ctl: &Ctl,
    tool: &str,
    args: &[String],
    context: &str,
    stdin: Option<&str>,
    _peer: Option<u32>,
) -> Reply {
    let mut contexts = crate::controller::lock(&ctl.contexts);
    let Some(ctx) = contexts.get_mut(context) else {
        return Reply::err(
            1,
            format!("bad request: unknown context id {context:?} (is a hook running?)"),
        );
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Reply::ok(help(tool));
    }
    // Only the tools with immediate effects change the model; the others read it or
    // buffer into the context, and need no write to disk.
    let immediate = matches!(
        tool,
        "status-set"
            | "application-version-set"
            | "leader-set"
            | "action-set"
            | "action-fail"
            | "action-log"
            | "secret-get"
    );
    let r = ctl.mutate_if(|w| {
        let r = match w.models.get_mut(&ctx.model) {
            Some(m) => dispatch(ctl, m, ctx, tool, args, stdin),
            None => Err(E::Run("model not found".into())),
        };
        let changed = immediate && r.is_ok();
        (r, changed)
    });
    match r {
        Ok(r) => r,
        Err(E::Usage(m)) => Reply::err(2, m),
        Err(E::Run(m)) => Reply::err(1, m),
    }
}

fn help(tool: &str) -> String {
    match tool {
        "relation-set" => "Usage: relation-set [options] key=value [key=value ...]\n\nOptions:\n--app  (= false)\n--file  (= )\n    file containing key-value pairs\n--format  (= )\n-r, --relation  (= )\n".into(),
        _ => format!("Usage: {tool} [options]\n"),
    }
}

/// The machine address of a unit (every binding resolves to it here).
fn unit_address(m: &Model, unit: &str) -> String {
    m.units
        .get(unit)
        .and_then(|u| m.machines.get(&u.machine))
        .map(|x| x.address.clone())
        .unwrap_or_default()
}

/// Every address of a unit's machine: (interface, address, its subnet), eth0's IPv4 first.
fn machine_addresses(m: &Model, unit: &str) -> Vec<(String, String, String)> {
    let Some(id) = m.units.get(unit).map(|u| u.machine) else {
        return vec![];
    };
    let Some(mach) = m.machines.get(&id) else {
        return vec![];
    };
    let net = m.net();
    let v4 = |a: &str| format!("{}.0/24", a.rsplit_once('.').map_or("", |(n, _)| n));
    let mut out = vec![
        ("eth0".to_string(), mach.address.clone(), v4(&mach.address)),
        ("eth0".to_string(), net.machine_address6(id), net.subnet6()),
    ];
    if mach.second_nic {
        let a = net.second_address(id);
        out.insert(1, ("eth1".to_string(), a.clone(), v4(&a)));
    }
    out
}

fn is_leader(m: &Model, ctx: &HookCtx) -> bool {
    m.apps.get(&ctx.app).and_then(|a| a.leader.as_deref()) == Some(ctx.unit.as_str())
}

/// Resolves `-r` (`ep:id` or `id`), defaulting to the hook's relation.
fn relation_id(m: &Model, ctx: &HookCtx, p: &flags::Parsed) -> Result<u32, E> {
    match p.value("r") {
        Some(v) => {
            let num = v.rsplit(':').next().unwrap_or(v);
            let id: u32 = num.parse().map_err(|_| {
                E::Usage(format!(
                    "invalid value {v:?} for option -r: invalid relation id"
                ))
            })?;
            if !m.relations.contains_key(&id) {
                return usage(format!(
                    "invalid value {v:?} for option -r: relation not found"
                ));
            }
            Ok(id)
        }
        None => match ctx.event.relation {
            Some(id) if m.relations.contains_key(&id) => Ok(id),
            _ => usage("no relation id specified"),
        },
    }
}

fn get_action_params<'a>(m: &'a Model, ctx: &HookCtx) -> Result<&'a Task, E> {
    match ctx.task.and_then(|t| m.tasks.get(&t)) {
        Some(t) if ctx.is_action => Ok(t),
        _ => refuse("not running an action"),
    }
}

fn dispatch(
    ctl: &Ctl,
    m: &mut Model,
    ctx: &mut HookCtx,
    tool: &str,
    args: &[String],
    stdin: Option<&str>,
) -> R {
    match tool {
        "status-set" => {
            let p = parse(&[boolean(&["application"])], args)?;
            let Some(st) = p.positional.first() else {
                return usage("invalid args, require <status> [message] [data]");
            };
            if !["maintenance", "blocked", "waiting", "active"].contains(&st.as_str()) {
                return usage(format!(
                    "invalid status {st:?}, expected one of [maintenance blocked waiting active]"
                ));
            }
            if p.positional.len() > 2 {
                return usage(format!("unrecognized args: {:?}", &p.positional[2..]));
            }
            let msg = p.positional.get(1).cloned().unwrap_or_default();
            if p.flag("application") {
                if !is_leader(m, ctx) {
                    return refuse("setting application status: this unit is not the leader");
                }
                m.apps.get_mut(&ctx.app).unwrap().status = Some(Status::new(st, &msg));
            } else if let Some(u) = m.units.get_mut(&ctx.unit) {
                u.workload = Status::new(st, &msg);
                u.workload_set = true;
            }
            Ok(Reply::ok(""))
        }
        "status-get" => {
            let p = parse(
                &[
                    FORMAT,
                    OUTPUT,
                    boolean(&["include-data"]),
                    boolean(&["application"]),
                ],
                args,
            )?;
            if !p.positional.is_empty() {
                return usage(format!("unrecognized args: {:?}", p.positional));
            }
            let data = p.flag("include-data");
            let fmt = |s: &Status| {
                if data || p.value("format").is_some_and(|f| f != "smart") {
                    let mut mp = Map::new();
                    mp.insert("status".into(), json!(s.current));
                    if data {
                        mp.insert("message".into(), json!(s.message));
                        mp.insert("status-data".into(), json!({}));
                    }
                    Value::Object(mp)
                } else {
                    json!(s.current)
                }
            };
            if p.flag("application") {
                if !is_leader(m, ctx) {
                    return refuse("finding application status: this unit is not the leader");
                }
                let app = m.app_status(&ctx.app);
                let mut v = fmt(&app);
                if let Value::Object(o) = &mut v {
                    let units: Map<String, Value> = m
                        .units
                        .values()
                        .filter(|u| u.app == ctx.app)
                        .map(|u| (u.name.clone(), fmt(&crate::controller::unit_workload(u))))
                        .collect();
                    o.insert("units".into(), Value::Object(units));
                    v = json!({"application-status": v});
                }
                return out(&v, &p, Format::Smart);
            }
            let s = m
                .units
                .get(&ctx.unit)
                .map(|u| u.workload.clone())
                .unwrap_or_else(|| Status::new("unknown", ""));
            out(&fmt(&s), &p, Format::Smart)
        }
        "application-version-set" => {
            let p = parse(&[], args)?;
            if p.positional.len() != 1 {
                return usage("no version specified");
            }
            m.apps.get_mut(&ctx.app).unwrap().version = p.positional[0].clone();
            Ok(Reply::ok(""))
        }
        "juju-log" => {
            let p = parse(
                &[boolean(&["debug"]), value(&["l", "log-level"]), FORMAT],
                args,
            )?;
            if p.positional.is_empty() {
                return usage("no message specified");
            }
            let mut level = p
                .value("l")
                .unwrap_or(if p.flag("debug") { "DEBUG" } else { "INFO" })
                .to_uppercase();
            if !["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level.as_str())
            {
                level = "INFO".into();
            }
            let prefix = match ctx.event.relation {
                Some(r) => format!(
                    "{}:{r}: ",
                    m.relations
                        .get(&r)
                        .and_then(|x| x.endpoint_of(&ctx.app))
                        .map(|e| e.name.clone())
                        .unwrap_or_default()
                ),
                None => String::new(),
            };
            ctl.log(
                &ctx.model,
                &format!(
                    "unit-{}: {level} unit.{}.juju-log {prefix}{}",
                    ctx.unit.replace('/', "-"),
                    ctx.unit,
                    p.positional.join(" ")
                ),
            );
            Ok(Reply::ok(""))
        }
        "config-get" => {
            let p = parse(&[FORMAT, OUTPUT, boolean(&["a", "all"])], args)?;
            if p.flag("a") && !p.positional.is_empty() {
                return usage("cannot use argument --all together with key");
            }
            let app = &m.apps[&ctx.app];
            let mut all = Map::new();
            for (k, def) in &app.meta.options {
                let v = app.config.get(k).cloned().or_else(|| def.default.clone());
                match v {
                    Some(v) => {
                        all.insert(k.clone(), v);
                    }
                    None if p.flag("a") => {
                        all.insert(k.clone(), Value::Null);
                    }
                    None => {}
                }
            }
            match p.positional.first() {
                Some(k) => out(all.get(k).unwrap_or(&Value::Null), &p, Format::Smart),
                None => out(&Value::Object(all), &p, Format::Smart),
            }
        }
        "is-leader" => {
            let p = parse(&[FORMAT, OUTPUT], args)?;
            out(&json!(is_leader(m, ctx)), &p, Format::Smart)
        }
        "leader-get" => {
            let p = parse(&[FORMAT, OUTPUT], args)?;
            let s = &m.apps[&ctx.app].leader_settings;
            match p.positional.first().map(String::as_str) {
                None | Some("-") => out(&json!(s), &p, Format::Smart),
                Some(k) if k.contains('=') => usage("invalid key"),
                Some(k) => out(
                    &s.get(k).map(|v| json!(v)).unwrap_or(Value::Null),
                    &p,
                    Format::Smart,
                ),
            }
        }
        "leader-set" => {
            let p = parse(&[], args)?;
            let kvs = flags::key_values(&p.positional).map_err(E::Usage)?;
            if !is_leader(m, ctx) {
                return refuse(
                    "cannot write leadership settings: cannot write settings: not the leader",
                );
            }
            let a = m.apps.get_mut(&ctx.app).unwrap();
            let mut changed = false;
            for (k, v) in kvs {
                if v.is_empty() {
                    changed |= a.leader_settings.remove(&k).is_some();
                } else if a.leader_settings.get(&k) != Some(&v) {
                    a.leader_settings.insert(k, v);
                    changed = true;
                }
            }
            if changed {
                let others: Vec<String> = m
                    .units
                    .values()
                    .filter(|u| u.app == ctx.app && u.name != ctx.unit && u.installed)
                    .map(|u| u.name.clone())
                    .collect();
                for o in others {
                    m.push(&o, Event::hook("leader-settings-changed"));
                }
            }
            Ok(Reply::ok(""))
        }
        "relation-ids" => {
            let p = parse(&[FORMAT, OUTPUT], args)?;
            let ep = match p.positional.first() {
                Some(e) => e.clone(),
                None => match ctx
                    .event
                    .relation
                    .and_then(|r| m.relations.get(&r))
                    .and_then(|r| r.endpoint_of(&ctx.app))
                {
                    Some(e) => e.name.clone(),
                    None => return usage("no endpoint name specified"),
                },
            };
            // A unit not yet installed has joined no relation (Juju's hook context lists
            // the relationers the createdRelationsResolver joined after install).
            let joined = m.units.get(&ctx.unit).is_some_and(|u| u.installed);
            let mut ids: Vec<String> = m
                .relations
                .values()
                .filter(|r| {
                    joined
                        && !r.dying
                        && r.endpoint_of(&ctx.app)
                            .map(|e| e.name == ep)
                            .unwrap_or(false)
                })
                .map(|r| format!("{ep}:{}", r.id))
                .collect();
            ids.sort();
            out(&json!(ids), &p, Format::Smart)
        }
        "relation-list" => {
            let p = parse(
                &[FORMAT, OUTPUT, value(&["r", "relation"]), boolean(&["app"])],
                args,
            )?;
            let rel = relation_id(m, ctx, &p)?;
            if p.flag("app") {
                let remote = m.relations[&rel]
                    .remote_app_of(&ctx.app)
                    .unwrap_or("")
                    .to_string();
                return out(&json!(remote), &p, Format::Smart);
            }
            let view: Vec<String> = m
                .units
                .get(&ctx.unit)
                .and_then(|u| u.views.get(&rel))
                .map(|v| v.iter().cloned().collect())
                .unwrap_or_default();
            out(&json!(view), &p, Format::Smart)
        }
        "relation-get" => {
            let p = parse(
                &[FORMAT, OUTPUT, value(&["r", "relation"]), boolean(&["app"])],
                args,
            )?;
            let rel = relation_id(m, ctx, &p)?;
            let key = p.positional.first().filter(|k| k.as_str() != "-").cloned();
            let explicit = p.positional.get(1).cloned();
            let mut app_mode = p.flag("app");
            let target = match explicit {
                Some(t) if t.contains('/') => {
                    if app_mode {
                        app_of(&t).to_string()
                    } else {
                        t
                    }
                }
                Some(t) => {
                    if !app_mode {
                        return usage(format!("expected unit name, got application name {t:?}"));
                    }
                    t
                }
                None => match (&ctx.event.remote_unit, &ctx.event.remote_app) {
                    (Some(u), _) if !app_mode && ctx.event.relation == Some(rel) => u.clone(),
                    (_, Some(a)) if ctx.event.relation == Some(rel) => {
                        app_mode = true;
                        a.clone()
                    }
                    _ => return usage("no unit or application specified"),
                },
            };
            let r = &m.relations[&rel];
            let mut bag = if app_mode {
                if target == ctx.app && !r.peer && !is_leader(m, ctx) {
                    return refuse("permission denied");
                }
                r.app_data.get(&target).cloned().unwrap_or_default()
            } else {
                r.unit_data.get(&target).cloned().unwrap_or_default()
            };
            // Your own pending writes show in your own reads.
            if let Some(w) = ctx.rel_writes.get(&(rel, target.clone())) {
                for (k, v) in w {
                    if v.is_empty() {
                        bag.remove(k);
                    } else {
                        bag.insert(k.clone(), v.clone());
                    }
                }
            }
            match key {
                Some(k) => out(
                    &bag.get(&k).map(|v| json!(v)).unwrap_or(Value::Null),
                    &p,
                    Format::Smart,
                ),
                None => out(&json!(bag), &p, Format::Smart),
            }
        }
        "relation-set" => {
            let p = parse(
                &[
                    FORMAT,
                    value(&["r", "relation"]),
                    boolean(&["app"]),
                    value(&["file"]),
                ],
                args,
            )?;
            let rel = relation_id(m, ctx, &p)?;
            let mut kvs: BTreeMap<String, String> = BTreeMap::new();
            if let Some(f) = p.value("file") {
                let text = if f == "-" {
                    stdin.unwrap_or("").to_string()
                } else {
                    read_in_machine(ctx, f).map_err(E::Run)?
                };
                let v: Value = serde_yaml::from_str(&text)
                    .map_err(|e| E::Usage(format!("invalid YAML in --file: {e}")))?;
                if let Value::Object(o) = v {
                    for (k, v) in o {
                        let s = match v {
                            Value::Null => String::new(),
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        kvs.insert(k, s);
                    }
                } else if !v.is_null() {
                    return usage("--file must hold a map of keys to values");
                }
            }
            for (k, v) in flags::key_values(&p.positional).map_err(E::Usage)? {
                kvs.insert(k, v);
            }
            let owner = if p.flag("app") {
                if !is_leader(m, ctx) {
                    return refuse("cannot write relation settings");
                }
                ctx.app.clone()
            } else {
                ctx.unit.clone()
            };
            ctx.rel_writes.entry((rel, owner)).or_default().extend(kvs);
            Ok(Reply::ok(""))
        }
        "relation-model-get" => {
            let p = parse(&[FORMAT, OUTPUT, value(&["r", "relation"])], args)?;
            out(&json!({"uuid": m.uuid}), &p, Format::Smart)
        }
        "network-get" => {
            let p = parse(
                &[
                    FORMAT,
                    OUTPUT,
                    value(&["r", "relation"]),
                    boolean(&["bind-address"]),
                    boolean(&["ingress-address"]),
                    boolean(&["egress-subnets"]),
                    boolean(&["primary-address"]),
                ],
                args,
            )?;
            let Some(binding) = p.positional.first() else {
                return usage("no arguments specified");
            };
            let meta = &m.apps[&ctx.app].meta;
            let known = meta.peers.contains_key(binding)
                || meta.provides.contains_key(binding)
                || meta.requires.contains_key(binding)
                || binding == "juju-info";
            if !known {
                return refuse(format!("no network config found for binding {binding:?}"));
            }
            // As Juju's network-get (internal/worker/uniter/runner/jujuc/network-get.go):
            // every address of the binding, by interface; ingress-addresses sorted as
            // core/network's sortOrder does (IPv4 before IPv6 of the same scope), whose
            // first is the one relation data carries (uniter.go EnterScope).
            let addrs = machine_addresses(m, &ctx.unit);
            let addr = unit_address(m, &ctx.unit);
            let flags_set: Vec<&str> = ["bind-address", "ingress-address", "egress-subnets"]
                .into_iter()
                .filter(|f| p.flag(f))
                .collect();
            if p.flag("primary-address") {
                return out(&json!(addr), &p, Format::Smart);
            }
            let field = |f: &str| match f {
                "egress-subnets" => json!([format!("{addr}/32")]),
                _ => json!(addr),
            };
            if flags_set.len() == 1 {
                return out(&field(flags_set[0]), &p, Format::Smart);
            }
            if flags_set.len() > 1 {
                let mp: Map<String, Value> = flags_set
                    .iter()
                    .map(|f| (f.to_string(), field(f)))
                    .collect();
                return out(&Value::Object(mp), &p, Format::Smart);
            }
            let mut binds: Vec<Value> = vec![];
            for iface in ["eth0", "eth1"] {
                let on: Vec<Value> = addrs
                    .iter()
                    .filter(|a| a.0 == iface)
                    .map(|(_, v, cidr)| json!({"hostname": "", "value": v, "cidr": cidr}))
                    .collect();
                if !on.is_empty() {
                    binds
                        .push(json!({"mac-address": "", "interface-name": iface, "addresses": on}));
                }
            }
            let mut ingress: Vec<&(String, String, String)> = addrs.iter().collect();
            ingress.sort_by_key(|a| a.1.contains(':'));
            let v = json!({
                "bind-addresses": binds,
                "egress-subnets": [format!("{addr}/32")],
                "ingress-addresses": ingress.iter().map(|a| a.1.clone()).collect::<Vec<_>>(),
            });
            out(&v, &p, Format::Smart)
        }
        "unit-get" => {
            let p = parse(&[FORMAT, OUTPUT], args)?;
            match p.positional.first().map(String::as_str) {
                Some("private-address") | Some("public-address") => {
                    let addr = unit_address(m, &ctx.unit);
                    out(&json!(addr), &p, Format::Smart)
                }
                Some(other) => usage(format!("unknown setting {other:?}")),
                None => usage("no setting specified"),
            }
        }
        "open-port" | "close-port" => {
            let p = parse(&[FORMAT, value(&["endpoints"])], args)?;
            let Some(a) = p.positional.first() else {
                return usage("no port or range specified");
            };
            if p.positional.len() > 1 {
                return usage(format!("unrecognized args: {:?}", &p.positional[1..]));
            }
            let port = normalize_port(&a.to_lowercase()).map_err(E::Usage)?;
            ctx.ports.push((tool == "open-port", port));
            Ok(Reply::ok(""))
        }
        "opened-ports" => {
            let p = parse(&[FORMAT, OUTPUT, boolean(&["endpoints"])], args)?;
            let ports: Vec<String> = m
                .units
                .get(&ctx.unit)
                .map(|u| {
                    u.ports
                        .iter()
                        .map(|x| {
                            if p.flag("endpoints") {
                                format!("{x} (*)")
                            } else {
                                x.clone()
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            out(&json!(ports), &p, Format::Smart)
        }
        "resource-get" => {
            let p = parse(&[], args)?;
            let Some(name) = p.positional.first() else {
                return usage("missing required resource name");
            };
            let app = &m.apps[&ctx.app];
            let Some(file) = app.meta.resources.get(name) else {
                return refuse(format!(
                    "could not download resource: resource {name:?} is not defined by the charm"
                ));
            };
            let Some(res) = app.resources.get(name) else {
                return refuse(format!(
                    "could not download resource: resource#{}/{name} not found",
                    ctx.app
                ));
            };
            let dir = format!(
                "/var/lib/juju/agents/{}/resources/{name}",
                crate::controller::unit_dir_name(&ctx.unit)
            );
            let inside = format!("{dir}/{file}");
            let host_dir = ctx.machine_root.join(dir.trim_start_matches('/'));
            let marker = host_dir.join(".revision");
            let have = std::fs::read_to_string(&marker)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if have != Some(res.revision) {
                let copy = || -> std::io::Result<()> {
                    std::fs::create_dir_all(&host_dir)?;
                    let tmp = host_dir.join(format!(".{file}.part"));
                    std::fs::copy(&res.path, &tmp)?;
                    std::fs::rename(&tmp, host_dir.join(file))?;
                    std::fs::write(&marker, res.revision.to_string())
                };
                copy().map_err(|e| E::Run(format!("could not download resource: {e}")))?;
            }
            Ok(Reply::ok(inside))
        }
        "storage-list" => {
            let p = parse(&[FORMAT, OUTPUT], args)?;
            let ids: Vec<String> = m
                .units
                .get(&ctx.unit)
                .map(|u| {
                    u.storage
                        .iter()
                        .filter(|s| {
                            p.positional
                                .first()
                                .map(|n| s.split('/').next() == Some(n.as_str()))
                                .unwrap_or(true)
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            out(&json!(ids), &p, Format::Smart)
        }
        "storage-get" => {
            let p = parse(&[FORMAT, OUTPUT, value(&["s"])], args)?;
            let id = match p
                .value("s")
                .map(String::from)
                .or_else(|| ctx.event.storage.clone())
            {
                Some(i) => i,
                None => return usage("no storage instance specified"),
            };
            if !m
                .units
                .get(&ctx.unit)
                .map(|u| u.storage.contains(&id))
                .unwrap_or(false)
            {
                return usage(format!(
                    "invalid value {id:?} for option -s: storage instance {id:?} not found"
                ));
            }
            let name = id.split('/').next().unwrap_or("");
            let def = m.apps[&ctx.app]
                .meta
                .storage
                .get(name)
                .cloned()
                .unwrap_or_default();
            let loc = storage_location(&def, &id);
            let _ = std::fs::create_dir_all(ctx.machine_root.join(loc.trim_start_matches('/')));
            let v = json!({"kind": if def.kind == "block" { "block" } else { "filesystem" }, "location": loc});
            match p.positional.first().map(String::as_str) {
                None => out(&v, &p, Format::Smart),
                Some(k @ ("kind" | "location")) => out(&v[k], &p, Format::Smart),
                Some(k) => refuse(format!("invalid storage attribute {k:?}")),
            }
        }
        "storage-add" => {
            let p = parse(&[], args)?;
            if p.positional.is_empty() {
                return usage("storage add requires a storage directive");
            }
            for a in &p.positional {
                let (name, count) = match a.split_once('=') {
                    Some((n, c)) => (
                        n.to_string(),
                        c.parse::<u32>()
                            .map_err(|_| E::Usage(format!("cannot parse count in {a:?}")))?,
                    ),
                    None => (a.clone(), 1),
                };
                if !m.apps[&ctx.app].meta.storage.contains_key(&name) {
                    return refuse(format!("storage {name:?} not found"));
                }
                ctx.storage_add.push((name, count));
            }
            Ok(Reply::ok(""))
        }
        "action-get" => {
            let p = parse(&[FORMAT, OUTPUT], args)?;
            let t = get_action_params(m, ctx)?;
            let mut v = &t.params;
            if let Some(k) = p.positional.first() {
                for seg in k.split('.') {
                    v = v.get(seg).unwrap_or(&Value::Null);
                }
            }
            out(v, &p, Format::Smart)
        }
        "action-set" => {
            let p = parse(&[], args)?;
            get_action_params(m, ctx)?;
            let mut sets = vec![];
            for a in &p.positional {
                let Some((k, v)) = a.split_once('=') else {
                    return usage(format!("argument {a:?} must be of the form key...=value"));
                };
                let segs: Vec<&str> = k.split('.').collect();
                for s in &segs {
                    if !valid_action_key(s) {
                        return usage(format!("key {k:?} must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric, hyphens and periods"));
                    }
                    if ["stdout", "stdout-encoding", "stderr", "stderr-encoding"].contains(s) {
                        return usage(format!("cannot set reserved action key \"{k}\""));
                    }
                }
                sets.push((
                    segs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    v.to_string(),
                ));
            }
            let t = m.tasks.get_mut(&ctx.task.unwrap()).unwrap();
            for (segs, v) in sets {
                set_nested(&mut t.results, &segs, v);
            }
            Ok(Reply::ok(""))
        }
        "action-fail" => {
            let p = parse(&[], args)?;
            get_action_params(m, ctx)?;
            if p.positional.len() > 1 {
                return usage(format!("unrecognized args: {:?}", &p.positional[1..]));
            }
            let t = m.tasks.get_mut(&ctx.task.unwrap()).unwrap();
            t.status = "failing".into();
            t.message = p.positional.first().cloned().unwrap_or_else(|| {
                "action failed without reason given, check action for errors".into()
            });
            Ok(Reply::ok(""))
        }
        "action-log" => {
            let p = parse(&[], args)?;
            get_action_params(m, ctx)?;
            if p.positional.is_empty() {
                return usage("no message specified");
            }
            let t = m.tasks.get_mut(&ctx.task.unwrap()).unwrap();
            t.log
                .push(format!("{} {}", now_rfc3339(), p.positional.join(" ")));
            Ok(Reply::ok(""))
        }
        "goal-state" => {
            let p = parse(&[FORMAT, OUTPUT], args)?;
            let since = now_rfc3339();
            let units: Map<String, Value> = m
                .units
                .values()
                .filter(|u| u.app == ctx.app)
                .map(|u| (u.name.clone(), json!({"status": if u.life == Life::Dying { "dying" } else if u.started { "active" } else { "waiting" }, "since": since})))
                .collect();
            let mut rels = Map::new();
            for r in m.relations.values().filter(|r| !r.dying) {
                let Some(ep) = r.endpoint_of(&ctx.app) else {
                    continue;
                };
                let remote = r.remote_app_of(&ctx.app).unwrap_or("");
                let mut entry = Map::new();
                entry.insert(
                    remote.to_string(),
                    json!({"status": "joined", "since": since}),
                );
                let machine = m.units.get(&ctx.unit).map(|u| u.machine);
                for u in m
                    .units
                    .values()
                    .filter(|u| u.app == remote && u.name != ctx.unit)
                    .filter(|u| !r.container || Some(u.machine) == machine)
                {
                    entry.insert(u.name.clone(), json!({"status": if u.life == Life::Dying { "dying" } else { "active" }, "since": since}));
                }
                rels.insert(ep.name.clone(), Value::Object(entry));
            }
            out(
                &json!({"units": units, "relations": rels}),
                &p,
                Format::Yaml,
            )
        }
        "state-get" => {
            let p = parse(&[FORMAT, OUTPUT, boolean(&["strict"])], args)?;
            let mut s = m
                .units
                .get(&ctx.unit)
                .map(|u| u.state.clone())
                .unwrap_or_default();
            for (k, v) in &ctx.state {
                match v {
                    Some(v) => s.insert(k.clone(), v.clone()),
                    None => s.remove(k),
                };
            }
            match p.positional.first() {
                Some(k) => match s.get(k) {
                    Some(v) => out(&json!(v), &p, Format::Smart),
                    None if p.flag("strict") => refuse(format!("key {k:?} not found")),
                    None => out(&Value::Null, &p, Format::Smart),
                },
                None => out(
                    &if s.is_empty() { Value::Null } else { json!(s) },
                    &p,
                    Format::Smart,
                ),
            }
        }
        "state-set" => {
            let p = parse(&[value(&["file"])], args)?;
            if let Some(f) = p.value("file") {
                let text = if f == "-" {
                    stdin.unwrap_or("").to_string()
                } else {
                    read_in_machine(ctx, f).map_err(E::Run)?
                };
                let v: BTreeMap<String, Option<String>> = serde_yaml::from_str(&text)
                    .map_err(|e| E::Usage(format!("invalid YAML: {e}")))?;
                for (k, v) in v {
                    ctx.state.push((k, v.filter(|s| !s.is_empty())));
                }
            }
            for (k, v) in flags::key_values(&p.positional).map_err(E::Usage)? {
                ctx.state
                    .push((k, if v.is_empty() { None } else { Some(v) }));
            }
            Ok(Reply::ok(""))
        }
        "state-delete" => {
            let p = parse(&[], args)?;
            let Some(k) = p.positional.first() else {
                return usage("no key specified");
            };
            ctx.state.push((k.clone(), None));
            Ok(Reply::ok(""))
        }
        "credential-get" => {
            let p = parse(&[FORMAT, OUTPUT], args)?;
            out(
                &json!({"type": "harness", "name": "localhost", "credential": {"auth-type": "empty", "attributes": {}}}),
                &p,
                Format::Smart,
            )
        }
        "juju-reboot" => {
            let p = parse(&[boolean(&["now"])], args)?;
            ctx.reboot = true;
            let _ = p;
            Ok(Reply::ok(""))
        }
        "add-metric" => Ok(Reply::ok("")),
        t if t.starts_with("secret-") => {
            secrets::dispatch(m, ctx, t, args, stdin).map_err(|e| match e {
                secrets::SErr::Usage(s) => E::Usage(s),
                secrets::SErr::Run(s) => E::Run(s),
            })
        }
        other => refuse(format!("unknown hook tool {other:?}")),
    }
}

fn valid_action_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn set_nested(map: &mut BTreeMap<String, Value>, segs: &[String], v: String) {
    if segs.len() == 1 {
        map.insert(segs[0].clone(), Value::String(v));
        return;
    }
    let entry = map.entry(segs[0].clone()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    let mut inner: BTreeMap<String, Value> =
        serde_json::from_value(entry.clone()).unwrap_or_default();
    set_nested(&mut inner, &segs[1..], v);
    *entry = serde_json::to_value(inner).unwrap_or_default();
}

fn normalize_port(a: &str) -> Result<String, String> {
    if a == "icmp" {
        return Ok("icmp".into());
    }
    let (range, proto) = match a.split_once('/') {
        Some((r, p)) => (r, p),
        None => (a, "tcp"),
    };
    if !["tcp", "udp"].contains(&proto) {
        return Err(format!(
            "invalid protocol {proto:?}, expected \"tcp\", \"udp\", or \"icmp\""
        ));
    }
    let ok = |s: &str| s.parse::<u16>().map(|n| n > 0).unwrap_or(false);
    let valid = match range.split_once('-') {
        Some((x, y)) => ok(x) && ok(y),
        None => ok(range),
    };
    if !valid {
        return Err(format!("invalid port {range:?}"));
    }
    Ok(format!("{range}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_keys() {
        assert!(valid_action_key("snapshot"));
        assert!(valid_action_key("a-1"));
        assert!(!valid_action_key("a_b"));
        assert!(!valid_action_key("Ab"));
        assert!(!valid_action_key("-a"));
    }

    #[test]
    fn ports() {
        assert_eq!(normalize_port("80/tcp").unwrap(), "80/tcp");
        assert_eq!(normalize_port("2379").unwrap(), "2379/tcp");
        assert_eq!(normalize_port("8000-8100/udp").unwrap(), "8000-8100/udp");
        assert!(normalize_port("0").is_err());
        assert!(normalize_port("80/sctp").is_err());
    }

    #[test]
    fn nested_results() {
        let mut m = BTreeMap::new();
        set_nested(&mut m, &["a".into(), "b".into()], "1".into());
        set_nested(&mut m, &["a".into(), "c".into()], "2".into());
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"a": {"b": "1", "c": "2"}})
        );
    }
}
