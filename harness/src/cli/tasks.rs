//! Tasks (actions and execs) as `juju run`, `juju exec` and `show-task` print them: the
//! JSON of a task, the wait for tasks to end, and the reply with Juju's exit code and
//! messages.

use super::common::*;

pub(super) fn task_json(t: &Task) -> Value {
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

pub(super) async fn wait_tasks(
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

/// How long `juju run` waits for its task when `--wait` does not say.
pub const DEFAULT_RUN_WAIT: Duration = Duration::from_secs(60);

/// The tasks' plain output: each action's failure, log lines and results, and stdout.
fn tasks_text(tasks: &[Task], exec: bool) -> String {
    let mut s = String::new();
    for t in tasks {
        if !exec && t.status == "failed" {
            s.push_str(&format!("Action id {} failed: {}\n", t.id, t.message));
        }
        for l in &t.log {
            s.push_str(&format!("{l}\n"));
        }
        if !t.results.is_empty() {
            s.push_str(&render(&json!(t.results), Format::Yaml));
        }
        s.push_str(&t.stdout);
    }
    s
}

/// What `juju run` prints on stderr for failed tasks (cmd/juju/action/common.go).
fn failures_text(failed: &[&Task]) -> String {
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
    stderr
}

pub(super) fn tasks_reply(tasks: &[Task], p: &flags::Parsed, exec: bool) -> Reply {
    let mut out = Map::new();
    for t in tasks {
        out.insert(t.unit.clone(), task_json(t));
    }
    // As Juju's waitForTasks (cmd/juju/action/common.go): a task counts as failed for the
    // exit code only when its return code is 1 or more; a task failed by `action-fail`
    // whose process exited 0 leaves `juju run` exiting 0 (cmd/juju/action/run_test.go).
    let failed: Vec<&Task> = tasks
        .iter()
        .filter(|t| {
            if exec {
                t.status != "completed"
            } else {
                t.return_code.map_or(t.status != "completed", |c| c != 0)
            }
        })
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
        tasks_text(tasks, exec)
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
    let stderr = failures_text(&failed);
    Reply {
        code: 1,
        stdout,
        stderr,
    }
}
