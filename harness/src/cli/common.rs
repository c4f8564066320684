//! What every command of the `juju` CLI shares: the imports its files take, the
//! `--model`/`--format` flags, the model in focus, output formatting, unit names and ids.

pub(super) use crate::controller::{self, app_of, unit_number, unit_workload, Ctl};
pub(super) use crate::flags::{self, boolean, value, Flag};
pub(super) use crate::format::{render, Format};
pub(super) use crate::machine;
pub(super) use crate::proto::{AgentRequest, Reply};
pub(super) use crate::state::*;
pub(super) use anyhow::{anyhow, bail, Context, Result};
pub(super) use serde_json::{json, Map, Value};
pub(super) use std::collections::BTreeMap;
pub(super) use std::path::{Path, PathBuf};
pub(super) use std::sync::Arc;
pub(super) use std::time::{Duration, Instant};

pub(super) const MODEL: Flag = value(&["m", "model"]);
pub(super) const FORMAT: Flag = value(&["format"]);

pub(super) fn parse(defs: &[Flag], args: &[String]) -> Result<flags::Parsed> {
    let mut all = defs.to_vec();
    all.push(MODEL);
    flags::parse(&all, args).map_err(|e| anyhow!(e))
}

/// The application a command names first.
pub(super) fn app_arg(p: &flags::Parsed) -> Result<String> {
    p.positional
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no application name specified"))
}

pub(super) fn model_name(
    ctl: &Ctl,
    p: &flags::Parsed,
    env_model: &Option<String>,
) -> Result<String> {
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

pub(super) fn fmt_out(v: &Value, p: &flags::Parsed, default: Format) -> Result<Reply> {
    let f = Format::parse(p.value("format"), default).map_err(|e| anyhow!(e))?;
    Ok(Reply::ok(render(v, f)))
}

pub(super) fn resolve_unit(m: &Model, name: &str) -> Result<String> {
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

/// A model's UUID (a random, version 4 UUID, as Juju's).
pub(super) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}
