//! Actions as Juju 2.9 spells them (`run-action [--wait]`, `show-action-output`) and the Juju 3
//! commands that read them back (`show-task`, `actions`, `show-action`). `run` itself, the
//! Juju 3 spelling, is in the parent module; both queue the same tasks.

use super::{
    fmt_out, model_name, parse, queue_action, render, task_json, tasks_reply, wait_tasks, Format,
    FORMAT,
};
use crate::controller::{self, app_of, unit_number, Ctl};
use crate::flags::{boolean, value};
use crate::proto::Reply;
use crate::state::Task;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

/// A task as Juju 2.9 shows an action's output: the task plus `UnitId`.
fn output_29(t: &Task) -> Value {
    let mut v = task_json(t);
    if let Some(o) = v.as_object_mut() {
        o.insert("UnitId".into(), json!(t.unit));
        o.remove("unit");
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
