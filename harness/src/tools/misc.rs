//! `goal-state`, `credential-get`, `juju-reboot`, `add-metric`.

use super::common::*;

/// `goal-state`.
pub(super) fn goal_state(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT], args)?;
    let since = now_rfc3339();
    let units: Map<String, Value> = m
        .units
        .values()
        .filter(|u| u.app == ctx.app)
        .map(|u| (u.name.clone(), json!({"status": if u.life == Life::Dying { "dying" } else if u.started { "active" } else { "waiting" }, "since": since})))
        .collect();
    let mut rels = Map::new();
    for r in m.relations.values().filter(|r| !r.dying) {
        let Some(ep) = r.endpoint_of(&ctx.app) else {
            continue;
        };
        let remote = r.remote_app_of(&ctx.app).unwrap_or("");
        let mut entry = Map::new();
        entry.insert(
            remote.to_string(),
            json!({"status": "joined", "since": since}),
        );
        let machine = m.units.get(&ctx.unit).map(|u| u.machine);
        for u in m
            .units
            .values()
            .filter(|u| u.app == remote && u.name != ctx.unit)
            .filter(|u| !r.container || Some(u.machine) == machine)
        {
            entry.insert(u.name.clone(), json!({"status": if u.life == Life::Dying { "dying" } else { "active" }, "since": since}));
        }
        rels.insert(ep.name.clone(), Value::Object(entry));
    }
    out(
        &json!({"units": units, "relations": rels}),
        &p,
        Format::Yaml,
    )
}

/// `credential-get`.
pub(super) fn credential_get(c: Call) -> R {
    let Call { args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT], args)?;
    out(
        &json!({"type": "harness", "name": "localhost", "credential": {"auth-type": "empty", "attributes": {}}}),
        &p,
        Format::Smart,
    )
}

/// `juju-reboot`.
pub(super) fn juju_reboot(c: Call) -> R {
    let Call { ctx, args, .. } = c;
    let p = parse(&[boolean(&["now"])], args)?;
    ctx.reboot = true;
    let _ = p;
    Ok(Reply::ok(""))
}

/// `add-metric`.
pub(super) fn add_metric(_: Call) -> R {
    Ok(Reply::ok(""))
}
