//! `is-leader`, `leader-get`, `leader-set`.

use super::common::*;

/// `is-leader`.
pub(super) fn is_leader_tool(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT], args)?;
    out(&json!(is_leader(m, ctx)), &p, Format::Smart)
}

/// `leader-get`.
pub(super) fn leader_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT], args)?;
    let s = &m.apps[&ctx.app].leader_settings;
    match p.positional.first().map(String::as_str) {
        None | Some("-") => out(&json!(s), &p, Format::Smart),
        Some(k) if k.contains('=') => usage("invalid key"),
        Some(k) => out(
            &s.get(k).map(|v| json!(v)).unwrap_or(Value::Null),
            &p,
            Format::Smart,
        ),
    }
}

/// `leader-set`.
pub(super) fn leader_set(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[], args)?;
    let kvs = flags::key_values(&p.positional).map_err(E::Usage)?;
    if !is_leader(m, ctx) {
        return refuse("cannot write leadership settings: cannot write settings: not the leader");
    }
    let a = m.apps.get_mut(&ctx.app).unwrap();
    let mut changed = false;
    for (k, v) in kvs {
        if v.is_empty() {
            changed |= a.leader_settings.remove(&k).is_some();
        } else if a.leader_settings.get(&k) != Some(&v) {
            a.leader_settings.insert(k, v);
            changed = true;
        }
    }
    if changed {
        let others: Vec<String> = m
            .units
            .values()
            .filter(|u| u.app == ctx.app && u.name != ctx.unit && u.installed)
            .map(|u| u.name.clone())
            .collect();
        for o in others {
            m.push(&o, Event::hook("leader-settings-changed"));
        }
    }
    Ok(Reply::ok(""))
}
