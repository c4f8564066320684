//! `relation-ids`, `-list`, `-get`, `-set`, `-model-get`: relation data, writes buffered in the context.

use super::common::*;
use super::machine_fs::read_in_machine;

/// `relation-ids`.
pub(super) fn relation_ids(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
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

/// `relation-list`.
pub(super) fn relation_list(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let (p, rel) = relation_args(m, ctx, args)?;
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

/// `relation-get`.
pub(super) fn relation_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let (p, rel) = relation_args(m, ctx, args)?;
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

/// `relation-set`.
pub(super) fn relation_set(c: Call) -> R {
    let Call {
        m,
        ctx,
        args,
        stdin,
        ..
    } = c;
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

/// `relation-model-get`.
pub(super) fn relation_model_get(c: Call) -> R {
    let Call { m, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT, value(&["r", "relation"])], args)?;
    out(&json!({"uuid": m.uuid}), &p, Format::Smart)
}

/// The flags `relation-list` and `relation-get` take, and the relation they name.
fn relation_args(m: &Model, ctx: &HookCtx, args: &[String]) -> Result<(flags::Parsed, u32), E> {
    let p = parse(
        &[FORMAT, OUTPUT, value(&["r", "relation"]), boolean(&["app"])],
        args,
    )?;
    let rel = relation_id(m, ctx, &p)?;
    Ok((p, rel))
}
