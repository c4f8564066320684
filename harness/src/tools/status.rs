//! `status-set`, `status-get`, `application-version-set`, `juju-log`: what a unit tells the operator.

use super::common::*;

/// `status-set`.
pub(super) fn status_set(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[boolean(&["application"])], args)?;
    let Some(st) = p.positional.first() else {
        return usage("invalid args, require <status> [message] [data]");
    };
    if !["maintenance", "blocked", "waiting", "active"].contains(&st.as_str()) {
        return usage(format!(
            "invalid status {st:?}, expected one of [maintenance blocked waiting active]"
        ));
    }
    if p.positional.len() > 2 {
        return usage(format!("unrecognized args: {:?}", &p.positional[2..]));
    }
    let msg = p.positional.get(1).cloned().unwrap_or_default();
    if p.flag("application") {
        if !is_leader(m, ctx) {
            return refuse("setting application status: this unit is not the leader");
        }
        m.apps.get_mut(&ctx.app).unwrap().status = Some(Status::new(st, &msg));
    } else if let Some(u) = m.units.get_mut(&ctx.unit) {
        u.workload = Status::new(st, &msg);
        u.workload_set = true;
    }
    Ok(Reply::ok(""))
}

/// `status-get`.
pub(super) fn status_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(
        &[
            FORMAT,
            OUTPUT,
            boolean(&["include-data"]),
            boolean(&["application"]),
        ],
        args,
    )?;
    if !p.positional.is_empty() {
        return usage(format!("unrecognized args: {:?}", p.positional));
    }
    let data = p.flag("include-data");
    let fmt = |s: &Status| {
        if data || p.value("format").is_some_and(|f| f != "smart") {
            let mut mp = Map::new();
            mp.insert("status".into(), json!(s.current));
            if data {
                mp.insert("message".into(), json!(s.message));
                mp.insert("status-data".into(), json!({}));
            }
            Value::Object(mp)
        } else {
            json!(s.current)
        }
    };
    if p.flag("application") {
        if !is_leader(m, ctx) {
            return refuse("finding application status: this unit is not the leader");
        }
        let app = m.app_status(&ctx.app);
        let mut v = fmt(&app);
        if let Value::Object(o) = &mut v {
            let units: Map<String, Value> = m
                .units
                .values()
                .filter(|u| u.app == ctx.app)
                .map(|u| (u.name.clone(), fmt(&crate::controller::unit_workload(u))))
                .collect();
            o.insert("units".into(), Value::Object(units));
            v = json!({"application-status": v});
        }
        return out(&v, &p, Format::Smart);
    }
    let s = m
        .units
        .get(&ctx.unit)
        .map(|u| u.workload.clone())
        .unwrap_or_else(|| Status::new("unknown", ""));
    out(&fmt(&s), &p, Format::Smart)
}

/// `application-version-set`.
pub(super) fn application_version_set(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[], args)?;
    if p.positional.len() != 1 {
        return usage("no version specified");
    }
    m.apps.get_mut(&ctx.app).unwrap().version = p.positional[0].clone();
    Ok(Reply::ok(""))
}

/// `juju-log`.
pub(super) fn juju_log(c: Call) -> R {
    let Call {
        ctl, m, ctx, args, ..
    } = c;
    let p = parse(
        &[boolean(&["debug"]), value(&["l", "log-level"]), FORMAT],
        args,
    )?;
    if p.positional.is_empty() {
        return usage("no message specified");
    }
    let mut level = p
        .value("l")
        .unwrap_or(if p.flag("debug") { "DEBUG" } else { "INFO" })
        .to_uppercase();
    if !["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level.as_str()) {
        level = "INFO".into();
    }
    let prefix = match ctx.event.relation {
        Some(r) => format!(
            "{}:{r}: ",
            m.relations
                .get(&r)
                .and_then(|x| x.endpoint_of(&ctx.app))
                .map(|e| e.name.clone())
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    ctl.log(
        &ctx.model,
        &format!(
            "unit-{}: {level} unit.{}.juju-log {prefix}{}",
            ctx.unit.replace('/', "-"),
            ctx.unit,
            p.positional.join(" ")
        ),
    );
    Ok(Reply::ok(""))
}
