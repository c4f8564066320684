//! What the model looks like: `status` (table, yaml, json as Juju 3.6 prints them),
//! `show-unit`, `debug-log`.

use super::common::*;

/// `status`
pub(super) async fn status(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
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
    let model = model_name(ctl, &p, env_model)?;
    let v = ctl.model(&model, status_json)?;
    match p.value("format") {
        Some("json") | Some("yaml") => fmt_out(&v, &p, Format::Yaml),
        _ => Ok(Reply::ok(status_table(&v))),
    }
}

/// `show-unit`
pub(super) async fn show_unit_cmd(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[FORMAT], args)?;
    let model = model_name(ctl, &p, env_model)?;
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

/// `debug-log`
pub(super) async fn debug_log(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
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
    let model = model_name(ctl, &p, env_model)?;
    let text = std::fs::read_to_string(controller::model_dir(&ctl.home, &model).join("debug.log"))
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

pub(super) fn status_entry(s: &Status) -> Value {
    let mut o = Map::new();
    o.insert("current".into(), json!(s.current));
    if !s.message.is_empty() {
        o.insert("message".into(), json!(s.message));
    }
    o.insert("since".into(), json!(s.since));
    Value::Object(o)
}

pub(super) fn show_unit(m: &Model, unit: &str) -> Value {
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

pub(super) fn status_json(m: &Model) -> Value {
    let apps: Map<String, Value> = m
        .apps
        .iter()
        .map(|(name, a)| (name.clone(), Value::Object(app_json(m, name, a))))
        .collect();
    json!({
        "model": {"name": m.name, "type": "iaas", "controller": "harness", "cloud": "localhost", "region": "localhost", "version": controller::JUJU_VERSION, "model-status": {"current": "available", "since": now_juju()}},
        "machines": machines_json(m),
        "applications": apps,
        "controller": {"timestamp": now_juju()},
    })
}

fn machines_json(m: &Model) -> Map<String, Value> {
    let mut machines = Map::new();
    for (id, x) in &m.machines {
        let juju = match x.status.as_str() {
            "started" => "started",
            "pending" => "pending",
            "down" => "down",
            _ => "error",
        };
        let mut entry = json!({"juju-status": {"current": juju, "message": if juju == "error" { x.status.clone() } else { String::new() }, "since": now_juju()}, "dns-name": x.address, "ip-addresses": [x.address], "instance-id": m.net().netns(*id), "hostname": x.hostname, "machine-status": {"current": if juju == "started" { "running" } else { juju }, "since": now_juju()}, "base": {"name": "debian", "channel": "12"}});
        // Juju's formatted status: `constraints` only when the machine has some
        // (cmd/juju/status/formatted.go, machineStatus, omitempty).
        if !x.constraints.is_empty() {
            entry["constraints"] = json!(x.constraints);
        }
        machines.insert(id.to_string(), entry);
    }
    machines
}

/// A unit's entry.
fn unit_json(m: &Model, u: &Unit) -> Map<String, Value> {
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
    if m.apps.get(&u.app).and_then(|a| a.leader.as_deref()) == Some(u.name.as_str()) {
        e.insert("leader".into(), json!(true));
    }
    if u.principal.is_none() {
        e.insert("machine".into(), json!(u.machine.to_string()));
    }
    if !u.ports.is_empty() {
        e.insert(
            "open-ports".into(),
            json!(u.ports.iter().cloned().collect::<Vec<_>>()),
        );
    }
    e.insert("public-address".into(), json!(addr));
    if u.principal.is_none() {
        e.insert("address".into(), json!(addr));
    }
    e
}

/// An application's units: a principal's entry holds its subordinates' (Juju nests them
/// there and lists no units under a subordinate application).
fn units_json(m: &Model, app_units: &[&Unit]) -> Map<String, Value> {
    let mut units = Map::new();
    for u in app_units.iter().filter(|u| u.principal.is_none()) {
        let mut e = unit_json(m, u);
        let mut subs: Vec<&Unit> = m
            .units
            .values()
            .filter(|s| s.principal.as_deref() == Some(u.name.as_str()))
            .collect();
        subs.sort_by_key(|s| (s.app.clone(), unit_number(&s.name)));
        if !subs.is_empty() {
            let nested: Map<String, Value> = subs
                .iter()
                .map(|s| (s.name.clone(), Value::Object(unit_json(m, s))))
                .collect();
            e.insert("subordinates".into(), Value::Object(nested));
        }
        units.insert(u.name.clone(), Value::Object(e));
    }
    units
}

/// An application's relations by endpoint, and (for a subordinate) the principals it is
/// related to in container scope.
fn relations_json(
    m: &Model,
    name: &str,
    a: &App,
) -> (
    BTreeMap<String, Vec<Value>>,
    std::collections::BTreeSet<String>,
) {
    let mut rels: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut principals = std::collections::BTreeSet::new();
    for r in m.relations.values().filter(|r| !r.dying) {
        if let Some(ep) = r.endpoint_of(name) {
            let remote = r.remote_app_of(name).unwrap_or("").to_string();
            let scope = if r.container { "container" } else { "global" };
            if r.container && a.meta.subordinate {
                principals.insert(remote.clone());
            }
            rels.entry(ep.name.clone()).or_default().push(
                json!({"related-application": remote, "interface": ep.interface, "scope": scope}),
            );
        }
    }
    (rels, principals)
}

fn app_json(m: &Model, name: &str, a: &App) -> Map<String, Value> {
    let mut app_units: Vec<&Unit> = m.units.values().filter(|u| u.app == name).collect();
    app_units.sort_by_key(|u| unit_number(&u.name));
    let units = units_json(m, &app_units);
    let (rels, principals) = relations_json(m, name, a);
    let mut e = Map::new();
    // As Juju's status: a store charm by name, with its channel; a local one as local:.
    if let Some(ch) = a.store_name.as_ref().and(a.channel.as_ref()) {
        e.insert("charm".into(), json!(a.meta.name));
        e.insert("charm-origin".into(), json!("charmhub"));
        e.insert("charm-channel".into(), json!(ch));
    } else {
        e.insert(
            "charm".into(),
            json!(format!("local:{}-{}", a.meta.name, a.charm_rev)),
        );
        e.insert("charm-origin".into(), json!("local"));
    }
    e.insert("charm-name".into(), json!(a.meta.name));
    e.insert("charm-rev".into(), json!(a.charm_rev));
    e.insert("exposed".into(), json!(a.exposed));
    let base = if a.base.is_empty() {
        // state from before bases were recorded
        json!({"name": "ubuntu", "channel": "24.04"})
    } else {
        crate::bases::to_json(&a.base)
    };
    e.insert("base".into(), base);
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
    if a.meta.subordinate {
        e.insert("subordinate-to".into(), json!(principals));
    }
    if !units.is_empty() {
        e.insert("units".into(), Value::Object(units));
    }
    e
}

/// Rows as Juju prints them: each column as wide as its widest cell, two spaces between
/// columns, the last one unpadded.
pub(super) fn table(rows: &[Vec<String>]) -> String {
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

fn text(x: &Value) -> String {
    x.as_str().unwrap_or("").to_string()
}

/// The units table of `juju status`: a principal's subordinates indented under it, the
/// leader starred.
fn unit_rows(apps: &Map<String, Value>) -> Vec<Vec<String>> {
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
    let row = |indent: &str, u: &str, e: &Value| {
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
        vec![
            format!("{indent}{u}{leader}"),
            text(&e["workload-status"]["current"]),
            text(&e["juju-status"]["current"]),
            text(&e["machine"]),
            text(&e["public-address"]),
            ports,
            text(&e["workload-status"]["message"]),
        ]
    };
    for a in apps.values() {
        for (u, e) in a["units"].as_object().cloned().unwrap_or_default() {
            rows.push(row("", &u, &e));
            for (s, se) in e["subordinates"].as_object().cloned().unwrap_or_default() {
                rows.push(row("  ", &s, &se));
            }
        }
    }
    rows
}

pub(super) fn status_table(v: &Value) -> String {
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
    let rows = unit_rows(&apps);
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
}
