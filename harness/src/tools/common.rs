//! What the hook tools share: their error (usage or refusal), argument parsing and output
//! formats, the leader check, relation ids, a unit's addresses.

pub(super) use crate::controller::{app_of, storage_location, Ctl, HookCtx};
pub(super) use crate::flags::{self, boolean, value, Flag};
pub(super) use crate::format::{render, Format};
pub(super) use crate::proto::Reply;
pub(super) use crate::state::*;
pub(super) use serde_json::{json, Map, Value};
pub(super) use std::collections::BTreeMap;

/// One tool call: the controller, the unit's model, its hook context and the tool's argv.
pub(super) struct Call<'a> {
    pub ctl: &'a Ctl,
    pub m: &'a mut Model,
    pub ctx: &'a mut HookCtx,
    pub tool: &'a str,
    pub args: &'a [String],
    pub stdin: Option<&'a str>,
}

pub(super) enum E {
    Usage(String),
    Run(String),
}

pub(super) type R = Result<Reply, E>;

pub(super) fn usage<T>(m: impl Into<String>) -> Result<T, E> {
    Err(E::Usage(m.into()))
}

pub(super) fn refuse<T>(m: impl Into<String>) -> Result<T, E> {
    Err(E::Run(m.into()))
}

pub(super) fn out(v: &Value, p: &flags::Parsed, default: Format) -> R {
    let f = Format::parse(p.value("format"), default).map_err(E::Usage)?;
    Ok(Reply::ok(render(v, f)))
}

pub(super) fn parse(defs: &[Flag], args: &[String]) -> Result<flags::Parsed, E> {
    flags::parse(defs, args).map_err(E::Usage)
}

pub(super) const FORMAT: Flag = value(&["format"]);

pub(super) const OUTPUT: Flag = value(&["o", "output"]);

/// The machine address of a unit (every binding resolves to it here).
pub(super) fn unit_address(m: &Model, unit: &str) -> String {
    m.units
        .get(unit)
        .and_then(|u| m.machines.get(&u.machine))
        .map(|x| x.address.clone())
        .unwrap_or_default()
}

/// Every address of a unit's machine: (interface, address, its subnet), eth0's IPv4 first.
pub(super) fn machine_addresses(m: &Model, unit: &str) -> Vec<(String, String, String)> {
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

pub(super) fn is_leader(m: &Model, ctx: &HookCtx) -> bool {
    m.apps.get(&ctx.app).and_then(|a| a.leader.as_deref()) == Some(ctx.unit.as_str())
}

/// Resolves `-r` (`ep:id` or `id`), defaulting to the hook's relation.
pub(super) fn relation_id(m: &Model, ctx: &HookCtx, p: &flags::Parsed) -> Result<u32, E> {
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

pub(super) fn get_action_params<'a>(m: &'a Model, ctx: &HookCtx) -> Result<&'a Task, E> {
    match ctx.task.and_then(|t| m.tasks.get(&t)) {
        Some(t) if ctx.is_action => Ok(t),
        _ => refuse("not running an action"),
    }
}

pub(super) fn valid_action_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub(super) fn set_nested(map: &mut BTreeMap<String, Value>, segs: &[String], v: String) {
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

pub(super) fn normalize_port(a: &str) -> Result<String, String> {
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
