//! The only code that talks to Juju: the hook context (parsed once from `JUJU_*`) and one
//! typed function per hook tool, all built on `run()`, which keeps argv, exit code and
//! stderr. Reads always ask for `--format=json`; free text goes after `--`. Tool failures
//! become `JujuError`s here and nowhere else.

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum JujuError {
    #[error("{tool} failed (exit {code}): {stderr}")]
    Tool {
        tool: String,
        code: i32,
        stderr: String,
    },
    #[error("cannot run hook tool {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} printed something that is not the expected JSON: {detail}")]
    Parse { tool: String, detail: String },
}

impl JujuError {
    pub fn stderr_contains(&self, s: &str) -> bool {
        matches!(self, JujuError::Tool { stderr, .. } if stderr.contains(s))
    }
}

pub type Result<T> = std::result::Result<T, JujuError>;

/// What happened to a relation (`<endpoint>-relation-<event>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationEvent {
    Created,
    Joined,
    Changed,
    Departed,
    Broken,
}

/// What happened to a storage instance (`<name>-storage-<event>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageEvent {
    Attached,
    Detaching,
}

/// A hook, parsed once from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    Install,
    LeaderElected,
    ConfigChanged,
    Start,
    Stop,
    Remove,
    UpdateStatus,
    UpgradeCharm,
    Relation {
        endpoint: String,
        event: RelationEvent,
    },
    Storage {
        name: String,
        event: StorageEvent,
    },
    /// any other hook (secret-changed, leader-settings-changed, …), by name
    Other(String),
}

impl Hook {
    pub fn parse(name: &str) -> Hook {
        match name {
            "install" => return Hook::Install,
            "leader-elected" => return Hook::LeaderElected,
            "config-changed" => return Hook::ConfigChanged,
            "start" => return Hook::Start,
            "stop" => return Hook::Stop,
            "remove" => return Hook::Remove,
            "update-status" => return Hook::UpdateStatus,
            "upgrade-charm" => return Hook::UpgradeCharm,
            _ => {}
        }
        let relation = [
            ("-relation-created", RelationEvent::Created),
            ("-relation-joined", RelationEvent::Joined),
            ("-relation-changed", RelationEvent::Changed),
            ("-relation-departed", RelationEvent::Departed),
            ("-relation-broken", RelationEvent::Broken),
        ];
        for (suffix, event) in relation {
            if let Some(endpoint) = name.strip_suffix(suffix).filter(|e| !e.is_empty()) {
                let endpoint = endpoint.to_string();
                return Hook::Relation { endpoint, event };
            }
        }
        let storage = [
            ("-storage-attached", StorageEvent::Attached),
            ("-storage-detaching", StorageEvent::Detaching),
        ];
        for (suffix, event) in storage {
            if let Some(n) = name.strip_suffix(suffix).filter(|e| !e.is_empty()) {
                let name = n.to_string();
                return Hook::Storage { name, event };
            }
        }
        Hook::Other(name.to_string())
    }

    /// A hook of the relation `endpoint` (any event).
    pub fn of_relation(&self, which: &str) -> bool {
        matches!(self, Hook::Relation { endpoint, .. } if endpoint == which)
    }

    /// The hook of `event` on the relation `endpoint`.
    pub fn is_relation(&self, which: &str, what: RelationEvent) -> bool {
        matches!(self, Hook::Relation { endpoint, event } if endpoint == which && *event == what)
    }

    /// The hook of `event` on the storage `name`.
    pub fn is_storage(&self, which: &str, what: StorageEvent) -> bool {
        matches!(self, Hook::Storage { name, event } if name == which && *event == what)
    }
}

/// What Juju told this process about why it runs.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub unit: String,
    pub app: String,
    /// `hooks/<name>` or `actions/<name>`
    pub dispatch: String,
    pub departing_unit: Option<String>,
    pub action: Option<String>,
    /// the hook, parsed from `dispatch` (None for an action)
    pub hook: Option<Hook>,
}

impl Context {
    pub fn from_env() -> Context {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let unit = get("JUJU_UNIT_NAME").unwrap_or_default();
        let dispatch = get("JUJU_DISPATCH_PATH").unwrap_or_default();
        Context {
            app: unit.split('/').next().unwrap_or("").to_string(),
            unit,
            departing_unit: get("JUJU_DEPARTING_UNIT"),
            action: get("JUJU_ACTION_NAME")
                .or_else(|| dispatch.strip_prefix("actions/").map(String::from)),
            hook: dispatch.strip_prefix("hooks/").map(Hook::parse),
            dispatch,
        }
    }

    /// The context of the hook `name` run by hand (`etcd-charm hook NAME`).
    pub fn for_hook(mut self, name: &str) -> Context {
        self.dispatch = format!("hooks/{name}");
        self.hook = Some(Hook::parse(name));
        self.action = None;
        self
    }

    /// Whether this process runs a hook `f` accepts (never for an action).
    pub fn hook_is(&self, f: impl FnOnce(&Hook) -> bool) -> bool {
        self.hook.as_ref().is_some_and(f)
    }

    /// Whether this process runs the hook `h`.
    pub fn is(&self, h: Hook) -> bool {
        self.hook.as_ref() == Some(&h)
    }

    pub fn hook_name(&self) -> &str {
        self.dispatch.strip_prefix("hooks/").unwrap_or("")
    }
}

/// Where hook tools run: Juju's own tool processes (`Processes`, the default), or another
/// backend a test installs (`set_backend`) that answers the same argv as Juju's tools do.
/// Every typed function below goes through `run`, so one backend sees every call.
pub trait Backend: Send + Sync {
    /// Runs `tool` with `args` (and `stdin` for `--file -`): its standard output, or the
    /// error Juju's tool would give.
    fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String>;
}

/// Juju's hook tools, as processes on PATH.
pub struct Processes;

static BACKEND: std::sync::OnceLock<Box<dyn Backend>> = std::sync::OnceLock::new();

/// Installs the backend every hook tool call of this process goes to; once, before the
/// first call (an error when one is already in place).
pub fn set_backend(b: Box<dyn Backend>) -> std::result::Result<(), &'static str> {
    BACKEND
        .set(b)
        .map_err(|_| "a hook tool backend is already installed")
}

/// Runs a hook tool. `stdin` feeds `--file -`.
pub fn run(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    match BACKEND.get() {
        Some(b) => b.run(tool, args, stdin),
        None => Processes.run(tool, args, stdin),
    }
}

impl Backend for Processes {
    fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        run_process(tool, args, stdin)
    }
}

fn run_process(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().map_err(|e| JujuError::Spawn {
        tool: tool.into(),
        source: e,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits without reading its input breaks the pipe; its exit code and
        // stderr, checked below, say what went wrong.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| JujuError::Spawn {
        tool: tool.into(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(JujuError::Tool {
            tool: tool.into(),
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn json<T: DeserializeOwned>(tool: &str, args: &[&str]) -> Result<T> {
    let mut a = args.to_vec();
    a.push("--format=json");
    let out = run(tool, &a, None)?;
    // The error names the JSON fault only: the output itself may be a secret's content or
    // a private key, which must never reach a log.
    serde_json::from_str(out.trim()).map_err(|e| JujuError::Parse {
        tool: tool.into(),
        detail: format!("{e} ({} bytes of output)", out.len()),
    })
}

/// At most `max` bytes of `text`, cut at a character boundary and marked: any text that may
/// come from outside (another application's relation data, an operator's value, a tool's
/// error) reaches a hook tool's argv bounded, far below the kernel's 128 KiB per argument
/// (E2BIG would fail the hook, and every later one that reports the same text).
pub use hostkit::text::bounded;

/// A status message's bound: what `juju status` can show on a line or two.
pub const STATUS_MAX: usize = 1024;
/// A log line's or an action message's bound.
pub const LOG_MAX: usize = 16 * 1024;

pub fn log(level: &str, msg: &str) {
    // Logging is best effort: a hook never fails because its log line could not be sent.
    let _ = run(
        "juju-log",
        &["--log-level", level, "--", &bounded(msg, LOG_MAX)],
        None,
    );
}

pub fn config() -> Result<BTreeMap<String, Value>> {
    json("config-get", &[])
}

pub fn is_leader() -> Result<bool> {
    json("is-leader", &[])
}

pub fn status_set(status: &str, message: &str, application: bool) -> Result<()> {
    let app = format!("--application={application}");
    run(
        "status-set",
        &[&app, status, "--", &bounded(message, STATUS_MAX)],
        None,
    )
    .map(|_| ())
}

pub fn application_version_set(v: &str) -> Result<()> {
    run("application-version-set", &["--", v], None).map(|_| ())
}

thread_local! {
    /// endpoint → its relation ids, asked once per process: they cannot change within a hook.
    static RELATION_IDS: std::cell::RefCell<std::collections::HashMap<String, Vec<String>>> =
        Default::default();
}

pub fn relation_ids(endpoint: &str) -> Result<Vec<String>> {
    if let Some(ids) = RELATION_IDS.with(|c| c.borrow().get(endpoint).cloned()) {
        return Ok(ids);
    }
    let ids = json::<Option<Vec<String>>>("relation-ids", &[endpoint])?.unwrap_or_default();
    RELATION_IDS.with(|c| c.borrow_mut().insert(endpoint.to_string(), ids.clone()));
    Ok(ids)
}

pub fn relation_list(rel: &str) -> Result<Vec<String>> {
    json::<Option<Vec<String>>>("relation-list", &["-r", rel]).map(Option::unwrap_or_default)
}

pub type Bag = BTreeMap<String, String>;

thread_local! {
    /// (relation, unit or application, app) → its databag, read once per process: Juju shows
    /// a hook one consistent view of the other side's data (the uniter's relation cache,
    /// worker/uniter/runner/context/relation.go) and this unit's own writes, which
    /// `relation_set` applies here too.
    static BAGS: std::cell::RefCell<std::collections::HashMap<(String, String, bool), Bag>> =
        Default::default();
}

/// A unit's databag (`target` a unit name) or an application's (`app` true).
pub fn relation_get(rel: &str, target: &str, app: bool) -> Result<Bag> {
    let key = (rel.to_string(), target.to_string(), app);
    if let Some(b) = BAGS.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(b);
    }
    let mut args = vec!["-r", rel];
    if app {
        args.push("--app");
    }
    args.extend(["-", target]);
    let bag = json::<Option<Bag>>("relation-get", &args).map(Option::unwrap_or_default)?;
    BAGS.with(|c| c.borrow_mut().insert(key, bag.clone()));
    Ok(bag)
}

/// What this unit wrote, applied to its cached bag (an empty value deletes).
fn remember_write(rel: &str, data: &Bag, app: bool) {
    let Ok(unit) = std::env::var("JUJU_UNIT_NAME") else {
        // no unit to name: forget every bag of the relation
        BAGS.with(|c| c.borrow_mut().retain(|k, _| k.0 != rel));
        return;
    };
    let own = if app {
        unit.split('/').next().unwrap_or(&unit).to_string()
    } else {
        unit.clone()
    };
    BAGS.with(|c| {
        if let Some(b) = c.borrow_mut().get_mut(&(rel.to_string(), own, app)) {
            for (k, v) in data {
                if v.is_empty() {
                    b.remove(k);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
    });
}

/// Writes into this unit's databag only the keys of `want` whose values differ from `have`
/// (what the bag holds now; a missing key counts as empty, so an empty value is written only
/// to delete a key that is there).
pub fn relation_update(rel: &str, have: &Bag, want: Bag) -> Result<()> {
    relation_set(rel, &changed(have, want), false)
}

/// `relation_update` for the application's databag (the leader's).
pub fn relation_update_app(rel: &str, have: &Bag, want: Bag) -> Result<()> {
    relation_set(rel, &changed(have, want), true)
}

/// The keys of `want` whose values differ from `have` (a missing key counts as empty).
fn changed(have: &Bag, want: Bag) -> Bag {
    want.into_iter()
        .filter(|(k, v)| have.get(k).map(String::as_str).unwrap_or("") != v)
        .collect()
}

/// Writes keys (an empty value deletes). Buffered by Juju until the hook exits 0.
pub fn relation_set(rel: &str, data: &Bag, app: bool) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut args = vec!["-r", rel];
    if app {
        args.push("--app");
    }
    args.extend(["--file", "-"]);
    let body = serde_json::to_string(data).unwrap_or_default();
    run("relation-set", &args, Some(&body))?;
    remember_write(rel, data, app);
    Ok(())
}

/// This unit's ingress addresses on `binding`, the first being the one Juju writes into
/// relation data as `ingress-address` (uniter.go EnterScope: `ingressAddresses[0]`), which
/// is what peers see and check certificates against. A machine may have more (an IPv6 ULA,
/// a second NIC): they are listed after it, and nothing may count on a peer knowing them.
pub fn network_ingress(binding: &str) -> Result<Vec<String>> {
    let v: Value = json("network-get", &[binding])?;
    Ok(v.get("ingress-addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// The path of a resource, or None when it was never attached (or is an empty placeholder).
/// The path of an attached resource; `None` when nothing is attached (Juju says the
/// resource is not found, or hands out an empty placeholder file). Any other failure of
/// `resource-get` is an error, never "not attached".
pub fn resource_get(name: &str) -> Result<Option<String>> {
    resource_get_with("resource-get", name)
}

fn resource_get_with(tool: &str, name: &str) -> Result<Option<String>> {
    let p = match run(tool, &[name], None) {
        Ok(out) => out.trim().to_string(),
        Err(e) if e.stderr_contains("not found") => return Ok(None),
        Err(e) => return Err(e),
    };
    match std::fs::metadata(&p) {
        Ok(m) => Ok((m.len() > 0).then_some(p)),
        Err(e) => Err(JujuError::Parse {
            tool: "resource-get".into(),
            detail: format!("the resource file {p} it named cannot be read: {e}"),
        }),
    }
}

pub fn open_port(port: u16) -> Result<()> {
    run("open-port", &[&format!("{port}/tcp")], None).map(|_| ())
}

/// Makes `port`/tcp the unit's only opened TCP port: a port the unit opened before (a
/// changed `port` config) is closed, so an exposed application offers what it serves.
pub fn open_only(port: u16) -> Result<()> {
    let want = format!("{port}/tcp");
    let opened: Vec<String> = json("opened-ports", &[])?;
    for p in opened.iter().filter(|p| p.ends_with("/tcp") && **p != want) {
        run("close-port", &[p], None)?;
    }
    if !opened.contains(&want) {
        open_port(port)?;
    }
    Ok(())
}

/// Whether Juju is removing `unit` (goal-state reports it `dying`, as Juju's goal-state
/// does for a unit whose life is Dying).
pub fn unit_dying(unit: &str) -> Result<bool> {
    let v: Value = json("goal-state", &[])?;
    Ok(v.pointer(&format!(
        "/units/{}/status",
        unit.replace('~', "~0").replace('/', "~1")
    ))
    .and_then(Value::as_str)
        == Some("dying"))
}

pub fn goal_state_units() -> Result<Vec<String>> {
    let v: Value = json("goal-state", &[])?;
    Ok(v.get("units")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, s)| s.get("status").and_then(Value::as_str) != Some("dying"))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default())
}

/// Where the storage `name` is mounted; `None` when none is attached. A failing tool is an
/// error: guessing "not attached" would move the data dir.
pub fn storage_location(name: &str) -> Result<Option<String>> {
    storage_location_with("storage-list", "storage-get", name)
}

/// `storage_location` with the tools named (tests run stand-ins). No storage attached is
/// `None`; a tool that fails is an error, never "no storage" (which would move the data).
fn storage_location_with(list: &str, get: &str, name: &str) -> Result<Option<String>> {
    let ids: Vec<String> = json::<Option<Vec<String>>>(list, &[name])?.unwrap_or_default();
    let Some(id) = ids.first() else {
        return Ok(None);
    };
    let v: Value = json(get, &["-s", id])?;
    match v.get("location").and_then(Value::as_str) {
        Some(l) => Ok(Some(l.to_string())),
        None => Err(JujuError::Parse {
            tool: get.into(),
            detail: format!("no location for storage {id}"),
        }),
    }
}

/// The application at the other end of relation `rel` (`relation-list --app`).
pub fn relation_remote_app(rel: &str) -> Result<Option<String>> {
    json::<Option<String>>("relation-list", &["-r", rel, "--app"])
        .map(|a| a.filter(|a| !a.is_empty()))
}

// Actions --------------------------------------------------------------------------------

pub fn action_params() -> Result<BTreeMap<String, Value>> {
    json::<Option<BTreeMap<String, Value>>>("action-get", &[]).map(Option::unwrap_or_default)
}

pub fn action_set(results: &[(String, String)]) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let args: Vec<String> = results.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run("action-set", &a, None).map(|_| ())
}

pub fn action_fail(msg: &str) -> Result<()> {
    run("action-fail", &["--", &bounded(msg, LOG_MAX)], None).map(|_| ())
}

pub fn action_log(msg: &str) {
    // Progress messages are best effort: the action's result is what counts.
    let _ = run("action-log", &["--", &bounded(msg, LOG_MAX)], None);
}

#[cfg(test)]
mod tests {
    #[test]
    fn hook_names_are_parsed_once_into_hooks() {
        use super::{Hook, RelationEvent, StorageEvent};
        assert_eq!(Hook::parse("update-status"), Hook::UpdateStatus);
        let h = Hook::parse("cluster-relation-departed");
        assert!(h.is_relation("cluster", RelationEvent::Departed) && h.of_relation("cluster"));
        assert!(!h.is_relation("db", RelationEvent::Departed));
        assert!(Hook::parse("data-storage-detaching").is_storage("data", StorageEvent::Detaching));
        assert!(Hook::parse("nrpe-external-master-relation-changed")
            .of_relation("nrpe-external-master"));
        assert_eq!(
            Hook::parse("secret-changed"),
            Hook::Other("secret-changed".into())
        );
        assert_eq!(
            Hook::parse("-relation-joined"),
            Hook::Other("-relation-joined".into())
        );
    }

    #[test]
    fn bounded_texts_fit_a_status() {
        let x = "x".repeat(200_000);
        assert!(super::bounded(&x, super::STATUS_MAX).len() < 1100);
    }

    use super::*;

    /// A stand-in hook tool: a real process that prints and exits as told.
    ///
    /// The script is written by a child process, not by this one: a file this
    /// process holds open for writing is inherited by any child another test's
    /// thread forks at that moment, and running the script while such a child
    /// lives fails with "Text file busy" (ETXTBSY).
    fn tool(dir: &std::path::Path, name: &str, script: &str) -> String {
        let p = dir.join(name);
        let status = std::process::Command::new("sh")
            .args([
                "-c",
                "printf '#!/bin/sh\\n%s\\n' \"$2\" > \"$1\" && chmod 755 \"$1\"",
                "sh",
            ])
            .arg(&p)
            .arg(script)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot write the stand-in tool {}",
            p.display()
        );
        p.display().to_string()
    }

    #[test]
    fn a_failing_resource_get_is_an_error_and_not_found_is_absence() {
        let d = tempfile::tempdir().unwrap();
        let broken = tool(
            d.path(),
            "broken",
            "echo 'ERROR cannot connect to the controller: connection refused' >&2; exit 1",
        );
        let e = resource_get_with(&broken, "etcd").unwrap_err();
        assert!(e.to_string().contains("connection refused"), "{e}");
        let missing = tool(
            d.path(),
            "missing",
            "echo 'ERROR could not download resource: resource#etcd/etcd not found' >&2; exit 1",
        );
        assert_eq!(resource_get_with(&missing, "etcd").unwrap(), None);
        let file = d.path().join("etcd.tar.gz");
        std::fs::write(&file, b"x").unwrap();
        let ok = tool(d.path(), "ok", &format!("echo {}", file.display()));
        assert_eq!(
            resource_get_with(&ok, "etcd").unwrap(),
            Some(file.display().to_string())
        );
        let gone = tool(d.path(), "gone", "echo /nonexistent/etcd.tar.gz");
        assert!(
            resource_get_with(&gone, "etcd").is_err(),
            "a path that cannot be read is an error"
        );
    }

    #[test]
    fn a_failing_storage_tool_is_an_error_and_no_storage_is_absence() {
        let d = tempfile::tempdir().unwrap();
        let list = tool(d.path(), "storage-list", "echo '[\"data/0\"]'");
        let none = tool(d.path(), "storage-list-none", "echo '[]'");
        let get = tool(
            d.path(),
            "storage-get",
            "echo '{\"kind\":\"filesystem\",\"location\":\"/srv/data\"}'",
        );
        let broken = tool(
            d.path(),
            "storage-get-broken",
            "echo 'ERROR connection is shut down' >&2; exit 1",
        );
        let no_location = tool(d.path(), "storage-get-odd", "echo '{}'");
        assert_eq!(
            storage_location_with(&list, &get, "data").unwrap(),
            Some("/srv/data".into())
        );
        assert_eq!(storage_location_with(&none, &broken, "data").unwrap(), None);
        let e = storage_location_with(&list, &broken, "data").unwrap_err();
        assert!(e.to_string().contains("connection is shut down"), "{e}");
        assert!(storage_location_with(&list, &no_location, "data").is_err());
        assert!(storage_location_with(&broken, &get, "data").is_err());
    }

    #[test]
    fn a_parse_error_never_carries_the_tools_output() {
        let d = tempfile::tempdir().unwrap();
        let leaky = tool(
            d.path(),
            "secret-get",
            "echo '-----BEGIN PRIVATE KEY----- MIGHAgEAMBMG'",
        );
        let e = json::<Value>(&leaky, &[]).unwrap_err().to_string();
        assert!(
            !e.contains("PRIVATE KEY") && !e.contains("MIGHAgEAMBMG"),
            "{e}"
        );
        assert!(e.contains("bytes of output"), "{e}");
    }

    /// relation-get and relation-set as processes on PATH (the one test of this binary that
    /// uses PATH): relation-get answers a bag naming its target and counts its calls.
    #[test]
    fn a_databag_is_read_once_per_process_and_shows_this_units_own_writes() {
        let d = tempfile::tempdir().unwrap();
        let count = d.path().join("count");
        tool(
            d.path(),
            "relation-get",
            &format!(
                "echo x >> {}; for a; do case $a in -) ;; --format=json) ;; *) t=$a;; esac; done; echo \"{{\\\"k\\\": \\\"v\\\", \\\"who\\\": \\\"$t\\\"}}\"",
                count.display()
            ),
        );
        tool(d.path(), "relation-set", "cat >/dev/null");
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", d.path().display()));
        std::env::set_var("JUJU_UNIT_NAME", "etcd/0");
        let n = || {
            std::fs::read_to_string(&count)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let other = relation_get("cluster:0", "etcd/1", false).unwrap();
        assert_eq!(other["who"], "etcd/1");
        relation_get("cluster:0", "etcd/1", false).unwrap();
        assert_eq!(n(), 1, "the other unit's bag is read once");
        relation_get("cluster:0", "etcd", true).unwrap();
        assert_eq!(n(), 2, "the application's bag is another bag");
        // this unit's writes show in its own bag: set, and deleted by an empty value
        relation_get("cluster:0", "etcd/0", false).unwrap();
        let writes = Bag::from([("x".into(), "1".into()), ("k".into(), String::new())]);
        relation_set("cluster:0", &writes, false).unwrap();
        let mine = relation_get("cluster:0", "etcd/0", false).unwrap();
        assert_eq!(mine.get("x").map(String::as_str), Some("1"));
        assert!(!mine.contains_key("k"));
        relation_set("cluster:0", &Bag::from([("y".into(), "2".into())]), true).unwrap();
        assert_eq!(relation_get("cluster:0", "etcd", true).unwrap()["y"], "2");
        // another unit's bag is not this unit's to change
        assert!(!relation_get("cluster:0", "etcd/1", false)
            .unwrap()
            .contains_key("x"));
        assert_eq!(n(), 3);
    }
}
