//! Juju secrets: the hook tools `secret-*` (re-exported with the others by the charms'
//! `juju` modules).

use crate::juju::{json, run, Bag, JujuError, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;

/// Runs a secret tool with `lead` arguments then one `key#file=` per content value: the
/// values go through private files in a temporary directory, never argv or a process list.
fn secret_tool(tool: &str, lead: Vec<String>, content: &Bag) -> Result<String> {
    let spawn = |e| JujuError::Spawn {
        tool: tool.into(),
        source: e,
    };
    let dir = tempfile::tempdir().map_err(spawn)?;
    let mut args = lead;
    for (k, v) in content {
        let p = dir.path().join(k);
        write_private(&p, v.as_bytes()).map_err(spawn)?;
        args.push(format!("{k}#file={}", p.display()));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run(tool, &a, None)
}

/// Adds an application-owned secret; returns its id.
pub fn secret_add(label: &str, content: &Bag) -> Result<String> {
    let lead = vec![
        "--owner".into(),
        "application".into(),
        "--label".into(),
        label.into(),
    ];
    secret_tool("secret-add", lead, content).map(|s| s.trim().to_string())
}

/// The URI of a secret this unit's application owns, by its label (`secret-info-get`).
pub fn secret_id_by_label(label: &str) -> Result<Option<String>> {
    match json::<BTreeMap<String, Value>>("secret-info-get", &["--label", label]) {
        Ok(m) => Ok(m.keys().next().map(|k| {
            if k.starts_with("secret:") {
                k.clone()
            } else {
                format!("secret:{k}")
            }
        })),
        Err(e) if e.stderr_contains("not found") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lets the other application of relation `rel` read an owned secret (`secret-grant`).
pub fn secret_grant(id: &str, rel: &str) -> Result<()> {
    run("secret-grant", &[id, "--relation", rel], None).map(|_| ())
}

/// Removes an owned secret, every revision (`secret-remove`); one already gone is no error.
pub fn secret_remove(id: &str) -> Result<()> {
    match run("secret-remove", &[id], None) {
        Ok(_) => Ok(()),
        Err(e) if e.stderr_contains("not found") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Gives an owned secret new content (a new revision).
pub fn secret_set(id: &str, content: &Bag) -> Result<()> {
    SECRETS.with(|c| c.borrow_mut().remove(id));
    secret_tool("secret-set", vec![id.to_string()], content).map(|_| ())
}

/// The content of a secret another application shared with this one (`secret-get <uri>`):
/// its latest revision, tracked from now on.
pub fn secret_get(id: &str) -> Result<Bag> {
    if let Some(b) = SECRETS.with(|c| c.borrow().get(id).cloned()) {
        return Ok(b);
    }
    let bag =
        json::<Option<Bag>>("secret-get", &[id, "--refresh"]).map(Option::unwrap_or_default)?;
    SECRETS.with(|c| c.borrow_mut().insert(id.to_string(), bag.clone()));
    Ok(bag)
}

thread_local! {
    /// secret id → its content, read (and refreshed to the latest revision) once per process.
    static SECRETS: std::cell::RefCell<std::collections::HashMap<String, Bag>> = Default::default();
}

pub fn secret_get_by_label(label: &str) -> Result<Option<Bag>> {
    match json::<Option<Bag>>("secret-get", &["--label", label]) {
        Ok(b) => Ok(b),
        Err(e) if e.stderr_contains("not found") => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_private(p: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(data)
}
