//! Actions as Juju 2.9 spells them (`run-action [--wait]`, `show-action-output`) and the Juju 3
//! commands that read them back (`show-task`, `actions`, `show-action`). `run` itself, the
//! Juju 3 spelling, is in the parent module; both queue the same tasks.

use super::common::*;
use super::tasks::*;

/// `run-action <unit> <action> [key=value ...] [--wait[=<timeout>]]`. Without `--wait` it
/// prints the id to read the result with (`show-action-output`); with it, the result keyed
/// by the unit's tag, as Juju 2.9 prints it.
pub async fn run_action(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
) -> Result<Reply> {
    // `--wait` takes an optional value (`--wait` or `--wait=2m`), which the flag parser
    // cannot express: it is taken out first.
    let mut wait: Option<Option<Duration>> = None;
    let mut rest = vec![];
    for a in args {
        if a == "--wait" {
            wait = Some(None);
        } else if let Some(d) = a.strip_prefix("--wait=") {
            let d = controller::parse_duration(d)
                .ok_or_else(|| anyhow!("--wait: {d:?} is not a duration (like 5m or 30s)"))?;
            wait = Some(Some(d));
        } else {
            rest.push(a.clone());
        }
    }
    let p = parse(
        &[
            FORMAT,
            value(&["params"]),
            boolean(&["string-args"]),
            value(&["color"]),
        ],
        &rest,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let id = queue_action(ctl, &p, cwd, &model)?;
    let Some(wait) = wait else {
        return Ok(Reply::ok(format!("Action queued with id: \"{id}\"\n")));
    };
    let Some(tasks) = wait_tasks(ctl, &model, &[id], wait).await else {
        return Ok(Reply::err(
            1,
            format!("timed out waiting for result from action {id}; run juju show-action-output {id} later"),
        ));
    };
    let mut out = Map::new();
    for t in &tasks {
        out.insert(
            format!("unit-{}-{}", app_of(&t.unit), unit_number(&t.unit)),
            output_29(t),
        );
    }
    let mut reply = fmt_out(&Value::Object(out), &p, Format::Yaml)?;
    if let Some(t) = tasks.iter().find(|t| t.status != "completed") {
        reply.code = 1;
        reply.stderr = format!("ERROR action {} failed: {}\n", t.id, t.message);
    }
    Ok(reply)
}

/// A task as Juju 2.9 shows an action's output (its compat format: juju/juju 2.9
/// cmd/juju/action/common.go): `UnitId` for the unit, and the results' exit code and
/// output as `Code` (a string), `Stdout` and `Stderr`.
fn output_29(t: &Task) -> Value {
    let mut v = task_json(t);
    if let Some(o) = v.as_object_mut() {
        o.insert("UnitId".into(), json!(t.unit));
        o.remove("unit");
        if let Some(r) = o.get_mut("results").and_then(Value::as_object_mut) {
            if let Some(code) = r.remove("return-code") {
                r.insert("Code".into(), json!(code.to_string()));
            }
            for (new, old) in [("Stdout", "stdout"), ("Stderr", "stderr")] {
                if let Some(x) = r.remove(old) {
                    r.insert(new.into(), x);
                }
            }
        }
    }
    v
}

/// The task an id names, waiting for it to finish when asked to (`--wait[=timeout]`).
async fn task_by_id(
    ctl: &Arc<Ctl>,
    model: &str,
    raw: &str,
    wait: Option<Duration>,
) -> Result<Task> {
    let id: u64 = raw
        .trim_matches('"')
        .parse()
        .map_err(|_| anyhow!("{raw:?} is not a task id (the number run-action or run printed)"))?;
    let known = ctl.model(model, |m| m.tasks.contains_key(&id))?;
    if !known {
        bail!("task \"{id}\" not found in model \"{model}\"");
    }
    let deadline = wait.unwrap_or(Duration::ZERO);
    match wait_tasks(ctl, model, &[id], Some(deadline)).await {
        Some(mut t) => Ok(t.remove(0)),
        None => Ok(ctl
            .model(model, |m| m.tasks.get(&id).cloned())?
            .ok_or_else(|| anyhow!("task \"{id}\" not found in model \"{model}\""))?),
    }
}

/// The task named by the one argument of `command` (`<id> [--wait=<timeout>] [--format]`),
/// with the parsed flags.
async fn task_arg(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
    command: &str,
) -> Result<(crate::flags::Parsed, Task)> {
    let p = parse(&[FORMAT, value(&["wait"]), boolean(&["utc"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let [id] = p.positional.as_slice() else {
        bail!("{command} takes one task id");
    };
    let wait = p
        .value("wait")
        .map(|d| {
            controller::parse_duration(d)
                .ok_or_else(|| anyhow!("--wait: {d:?} is not a duration (like 5m or 30s)"))
        })
        .transpose()?;
    let t = task_by_id(ctl, &model, id, wait).await?;
    Ok((p, t))
}

/// `show-action-output <id>`: the action's result, as Juju 2.9 prints it.
pub async fn show_action_output(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let (p, t) = task_arg(ctl, args, env_model, "show-action-output").await?;
    fmt_out(&output_29(&t), &p, Format::Yaml)
}

/// `show-task <id>`: the task's log and results as `run` prints them, or the whole task
/// with `--format yaml|json` (Juju 3).
pub async fn show_task(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let (p, t) = task_arg(ctl, args, env_model, "show-task").await?;
    match p.value("format") {
        Some("json" | "yaml") => fmt_out(&task_json(&t), &p, Format::Yaml),
        _ => Ok(tasks_reply(&[t], &p, false)),
    }
}

/// The actions an application's charm defines (name → spec), or an error naming the app.
fn charm_actions(ctl: &Ctl, model: &str, app: &str) -> Result<Vec<(String, Value)>> {
    ctl.model(model, |m| {
        m.apps
            .get(app)
            .map(|a| a.meta.actions.clone().into_iter().collect())
            .ok_or_else(|| anyhow!("application \"{app}\" not found"))
    })?
}

fn description(spec: &Value) -> String {
    spec.get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `actions <app>`: each action with its description (`--schema` for the parameters).
pub fn list(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    let p = parse(&[FORMAT, boolean(&["schema"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let [app] = p.positional.as_slice() else {
        bail!("actions takes one application name");
    };
    let actions = charm_actions(ctl, &model, app)?;
    if p.flag("schema") {
        let v: Map<String, Value> = actions.into_iter().collect();
        return fmt_out(&Value::Object(v), &p, Format::Yaml);
    }
    if p.value("format").is_some() {
        let v: Map<String, Value> = actions
            .iter()
            .map(|(n, s)| (n.clone(), json!(description(s))))
            .collect();
        return fmt_out(&Value::Object(v), &p, Format::Yaml);
    }
    if actions.is_empty() {
        return Ok(Reply::ok(format!("No actions defined for {app}.\n")));
    }
    let width = actions
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!("{:<width$}  Description\n", "Action");
    for (name, spec) in &actions {
        out.push_str(&format!("{name:<width$}  {}\n", description(spec)));
    }
    Ok(Reply::ok(out))
}

/// `show-action <app> <action>`: the description and each parameter.
pub fn show(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    let p = parse(&[], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let [app, action] = p.positional.as_slice() else {
        bail!("show-action takes an application and an action name");
    };
    let actions = charm_actions(ctl, &model, app)?;
    let Some((_, spec)) = actions.iter().find(|(n, _)| n == action) else {
        bail!("application \"{app}\" has no action \"{action}\"; juju actions {app} lists them");
    };
    let mut out = format!("{}\n", description(spec));
    match spec.get("params").and_then(Value::as_object) {
        Some(params) if !params.is_empty() => {
            out.push_str("\nArguments:\n");
            out.push_str(&render(&Value::Object(params.clone()), Format::Yaml));
        }
        _ => {}
    }
    Ok(Reply::ok(out))
}
/// Checks params against an action's schema (types, unknown keys) and fills defaults.
pub(super) fn validate_params(spec: &Value, mut params: Map<String, Value>) -> Result<Value> {
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

pub(super) fn json_type(v: &Value) -> &'static str {
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

pub(super) async fn run(
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
    // A --wait that is no duration is refused before anything is queued, as Go's flag
    // parsing refuses it; `--wait 0` means the default, as in runCommandBase.Init.
    let asked_wait = match p.value("wait") {
        Some(w) => Some(controller::parse_duration(w).ok_or_else(|| {
            anyhow!("invalid value {w:?} for flag --wait: time: invalid duration {w:?}")
        })?),
        None => None,
    };
    let id = queue_action(ctl, &p, cwd, &model)?;
    if p.flag("background") {
        return Ok(Reply {
            code: 0,
            stdout: String::new(),
            stderr: format!("Scheduled operation {id} with task {id}\n"),
        });
    }
    // Juju 3.6 waits 60 s unless --wait says otherwise (runCommandBase.Init in
    // cmd/juju/action/common.go); the task runs on after the client gives up.
    let wait = Some(
        asked_wait
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_RUN_WAIT),
    );
    let unit = ctl
        .model(&model, |m| m.tasks.get(&id).map(|t| t.unit.clone()))?
        .unwrap_or_default();
    let progress = format!(
        "Running operation {id} with 1 task\n  - task {id} on unit-{}\n\nWaiting for task {id}...\n",
        unit.replace('/', "-")
    );
    match wait_tasks(ctl, &model, &[id], wait).await {
        Some(tasks) => {
            let mut r = tasks_reply(&tasks, &p, false);
            r.stderr = format!("{progress}{}", r.stderr);
            Ok(r)
        }
        None => Ok(Reply {
            code: 1,
            stdout: String::new(),
            stderr: format!("{progress}ERROR timed out waiting for results from: unit {unit}\n"),
        }),
    }
}

/// Queues the action `p` names (`<unit> <action> [key=value ...]`, `--params`, `--string-args`)
/// after checking its parameters against the charm's schema; returns the task's id.
/// `juju run`'s params: a `--params` YAML file, then `key.key=value` arguments (YAML
/// values unless `--string-args`), nested by their dotted keys.
fn action_params(p: &flags::Parsed, cwd: &Path) -> Result<Map<String, Value>> {
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
    Ok(params)
}

pub(super) fn queue_action(
    ctl: &Arc<Ctl>,
    p: &flags::Parsed,
    cwd: &Path,
    model: &str,
) -> Result<u64> {
    if p.positional.len() < 2 {
        bail!("no unit and action specified");
    }
    let params = action_params(p, cwd)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
