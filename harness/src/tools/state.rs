//! `state-get`, `state-set`, `state-delete`: the unit's charm state.

use super::common::*;
use super::machine_fs::read_in_machine;

/// `state-get`.
pub(super) fn state_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT, boolean(&["strict"])], args)?;
    let mut s = m
        .units
        .get(&ctx.unit)
        .map(|u| u.state.clone())
        .unwrap_or_default();
    for (k, v) in &ctx.state {
        match v {
            Some(v) => s.insert(k.clone(), v.clone()),
            None => s.remove(k),
        };
    }
    match p.positional.first() {
        Some(k) => match s.get(k) {
            Some(v) => out(&json!(v), &p, Format::Smart),
            None if p.flag("strict") => refuse(format!("key {k:?} not found")),
            None => out(&Value::Null, &p, Format::Smart),
        },
        None => out(
            &if s.is_empty() { Value::Null } else { json!(s) },
            &p,
            Format::Smart,
        ),
    }
}

/// `state-set`.
pub(super) fn state_set(c: Call) -> R {
    let Call {
        ctx, args, stdin, ..
    } = c;
    let p = parse(&[value(&["file"])], args)?;
    if let Some(f) = p.value("file") {
        let text = if f == "-" {
            stdin.unwrap_or("").to_string()
        } else {
            read_in_machine(ctx, f).map_err(E::Run)?
        };
        let v: BTreeMap<String, Option<String>> =
            serde_yaml::from_str(&text).map_err(|e| E::Usage(format!("invalid YAML: {e}")))?;
        for (k, v) in v {
            ctx.state.push((k, v.filter(|s| !s.is_empty())));
        }
    }
    for (k, v) in flags::key_values(&p.positional).map_err(E::Usage)? {
        ctx.state
            .push((k, if v.is_empty() { None } else { Some(v) }));
    }
    Ok(Reply::ok(""))
}

/// `state-delete`.
pub(super) fn state_delete(c: Call) -> R {
    let Call { ctx, args, .. } = c;
    let p = parse(&[], args)?;
    let Some(k) = p.positional.first() else {
        return usage("no key specified");
    };
    ctx.state.push((k.clone(), None));
    Ok(Reply::ok(""))
}
