//! A charm's metadata as the controller reads it: metadata.yaml (name, endpoints and their
//! scope, subordinate, resources, storage), config.yaml's options and actions.yaml. A file
//! that is there but cannot be read or parsed is an error; config.yaml and actions.yaml may
//! be absent.

use crate::state::{CharmMeta, OptionDef, StorageDef};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads metadata.yaml, config.yaml and actions.yaml of a charm directory.
pub fn read_charm(dir: &Path) -> Result<CharmMeta> {
    let meta_path = dir.join("metadata.yaml");
    let text = std::fs::read_to_string(&meta_path).with_context(|| {
        format!(
            "{} not found: is this a charm directory?",
            meta_path.display()
        )
    })?;
    let meta: Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", meta_path.display()))?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .context("metadata.yaml has no name")?
        .to_string();
    let container_endpoints = ["provides", "requires"]
        .iter()
        .filter_map(|key| meta.get(*key).and_then(Value::as_object))
        .flat_map(|m| m.iter())
        .filter(|(_, v)| v.get("scope").and_then(Value::as_str) == Some("container"))
        .map(|(k, _)| k.clone())
        .collect();
    let subordinate = match meta.get("subordinate") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => anyhow::bail!(
            "{}: subordinate must be true or false, not {other}",
            meta_path.display()
        ),
    };
    let out = CharmMeta {
        name,
        peers: endpoints(&meta, "peers"),
        provides: endpoints(&meta, "provides"),
        requires: endpoints(&meta, "requires"),
        subordinate,
        container_endpoints,
        resources: resources(&meta),
        storage: storage(&meta),
        options: options(dir)?,
        actions: actions(dir)?,
    };
    if out.subordinate && out.container_endpoints.is_empty() {
        anyhow::bail!(
            "{}: a subordinate charm needs at least one endpoint with scope: container",
            meta_path.display()
        );
    }
    Ok(out)
}

/// The endpoints of one kind (`peers`, `provides`, `requires`) and their interfaces.
fn endpoints(meta: &Value, key: &str) -> BTreeMap<String, String> {
    let Some(m) = meta.get(key).and_then(Value::as_object) else {
        return BTreeMap::new();
    };
    m.iter()
        .map(|(k, v)| {
            let iface = v.get("interface").and_then(Value::as_str).unwrap_or("");
            (k.clone(), iface.to_string())
        })
        .collect()
}

/// Each resource and its file name.
fn resources(meta: &Value) -> BTreeMap<String, String> {
    let Some(res) = meta.get("resources").and_then(Value::as_object) else {
        return BTreeMap::new();
    };
    res.iter()
        .map(|(k, v)| {
            let file = v.get("filename").and_then(Value::as_str).unwrap_or(k);
            (k.clone(), file.to_string())
        })
        .collect()
}

/// Each store: its kind, location and the count range (`multiple.range`: "n", "n-m" or
/// "n-"; 0 at least when optional).
fn storage(meta: &Value) -> BTreeMap<String, StorageDef> {
    let Some(st) = meta.get("storage").and_then(Value::as_object) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (k, v) in st {
        let range = v.get("multiple").and_then(|m| m.get("range"));
        let max = match range {
            Some(Value::String(r)) => match r.split_once('-') {
                Some((_, hi)) => hi.parse().ok(),
                None => r.parse().ok(),
            },
            Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
            None => Some(1),
            _ => None,
        };
        let min = match range {
            Some(Value::String(r)) => r
                .split('-')
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(1),
            Some(Value::Number(n)) => n.as_u64().unwrap_or(1) as u32,
            _ => 1,
        };
        let optional = v.get("optional").and_then(Value::as_bool) == Some(true);
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("filesystem");
        out.insert(
            k.clone(),
            StorageDef {
                kind: kind.to_string(),
                location: v.get("location").and_then(Value::as_str).map(String::from),
                min: if optional { 0 } else { min },
                max,
                shared: v.get("shared").and_then(Value::as_bool) == Some(true),
                read_only: v.get("read-only").and_then(Value::as_bool) == Some(true),
            },
        );
    }
    out
}

/// A charm file that may be absent (None); one that is there but unreadable is an error.
fn optional_yaml(dir: &Path, name: &str) -> Result<Option<Value>> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v = serde_yaml::from_str(&text).with_context(|| format!("parsing {name}"))?;
    Ok(Some(v))
}

/// config.yaml's options: type (string by default), default and description.
fn options(dir: &Path) -> Result<BTreeMap<String, OptionDef>> {
    let Some(cfg) = optional_yaml(dir, "config.yaml")? else {
        return Ok(BTreeMap::new());
    };
    let Some(opts) = cfg.get("options").and_then(Value::as_object) else {
        return Ok(BTreeMap::new());
    };
    Ok(opts
        .iter()
        .map(|(k, v)| {
            let def = OptionDef {
                kind: v
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .to_string(),
                default: v.get("default").cloned().filter(|d| !d.is_null()),
                description: v
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            };
            (k.clone(), def)
        })
        .collect())
}

/// actions.yaml, each action's definition as it stands.
fn actions(dir: &Path) -> Result<BTreeMap<String, Value>> {
    let Some(acts) = optional_yaml(dir, "actions.yaml")? else {
        return Ok(BTreeMap::new());
    };
    Ok(acts
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}
