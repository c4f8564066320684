//! `action-get`, `action-set`, `action-fail`, `action-log`.

use super::common::*;

/// `action-get`.
pub(super) fn action_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT], args)?;
    let t = get_action_params(m, ctx)?;
    let mut v = &t.params;
    if let Some(k) = p.positional.first() {
        for seg in k.split('.') {
            v = v.get(seg).unwrap_or(&Value::Null);
        }
    }
    out(v, &p, Format::Smart)
}

/// `action-set`.
pub(super) fn action_set(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[], args)?;
    get_action_params(m, ctx)?;
    let mut sets = vec![];
    for a in &p.positional {
        let Some((k, v)) = a.split_once('=') else {
            return usage(format!("argument {a:?} must be of the form key...=value"));
        };
        let segs: Vec<&str> = k.split('.').collect();
        for s in &segs {
            if !valid_action_key(s) {
                return usage(format!("key {k:?} must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric, hyphens and periods"));
            }
            if ["stdout", "stdout-encoding", "stderr", "stderr-encoding"].contains(s) {
                return usage(format!("cannot set reserved action key \"{k}\""));
            }
        }
        sets.push((
            segs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            v.to_string(),
        ));
    }
    let t = m.tasks.get_mut(&ctx.task.unwrap()).unwrap();
    for (segs, v) in sets {
        set_nested(&mut t.results, &segs, v);
    }
    Ok(Reply::ok(""))
}

/// `action-fail`.
pub(super) fn action_fail(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[], args)?;
    get_action_params(m, ctx)?;
    if p.positional.len() > 1 {
        return usage(format!("unrecognized args: {:?}", &p.positional[1..]));
    }
    let t = m.tasks.get_mut(&ctx.task.unwrap()).unwrap();
    t.status = "failing".into();
    t.message =
        p.positional.first().cloned().unwrap_or_else(|| {
            "action failed without reason given, check action for errors".into()
        });
    Ok(Reply::ok(""))
}

/// `action-log`.
pub(super) fn action_log(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[], args)?;
    get_action_params(m, ctx)?;
    if p.positional.is_empty() {
        return usage("no message specified");
    }
    let t = m.tasks.get_mut(&ctx.task.unwrap()).unwrap();
    t.log
        .push(format!("{} {}", now_rfc3339(), p.positional.join(" ")));
    Ok(Reply::ok(""))
}
