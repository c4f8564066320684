//! `storage-list`, `storage-get`, `storage-add`.

use super::common::*;

/// `storage-list`.
pub(super) fn storage_list(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT], args)?;
    let ids: Vec<String> = m
        .units
        .get(&ctx.unit)
        .map(|u| {
            u.storage
                .iter()
                .filter(|s| {
                    p.positional
                        .first()
                        .map(|n| s.split('/').next() == Some(n.as_str()))
                        .unwrap_or(true)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    out(&json!(ids), &p, Format::Smart)
}

/// `storage-get`.
pub(super) fn storage_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT, value(&["s"])], args)?;
    let id = match p
        .value("s")
        .map(String::from)
        .or_else(|| ctx.event.storage.clone())
    {
        Some(i) => i,
        None => return usage("no storage instance specified"),
    };
    if !m
        .units
        .get(&ctx.unit)
        .map(|u| u.storage.contains(&id))
        .unwrap_or(false)
    {
        return usage(format!(
            "invalid value {id:?} for option -s: storage instance {id:?} not found"
        ));
    }
    let name = id.split('/').next().unwrap_or("");
    let def = m.apps[&ctx.app]
        .meta
        .storage
        .get(name)
        .cloned()
        .unwrap_or_default();
    let loc = storage_location(&def, &id, m.volumes.get(&id));
    if def.kind != "block" {
        // The location exists before a hook looks at it; one that cannot be made, the
        // charm's own use of it reports.
        let _ = std::fs::create_dir_all(ctx.machine_root.join(loc.trim_start_matches('/')));
    }
    let v =
        json!({"kind": if def.kind == "block" { "block" } else { "filesystem" }, "location": loc});
    match p.positional.first().map(String::as_str) {
        None => out(&v, &p, Format::Smart),
        Some(k @ ("kind" | "location")) => out(&v[k], &p, Format::Smart),
        Some(k) => refuse(format!("invalid storage attribute {k:?}")),
    }
}

/// `storage-add`.
pub(super) fn storage_add(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[], args)?;
    if p.positional.is_empty() {
        return usage("storage add requires a storage directive");
    }
    for a in &p.positional {
        let (name, count) = match a.split_once('=') {
            Some((n, c)) => (
                n.to_string(),
                c.parse::<u32>()
                    .map_err(|_| E::Usage(format!("cannot parse count in {a:?}")))?,
            ),
            None => (a.clone(), 1),
        };
        if !m.apps[&ctx.app].meta.storage.contains_key(&name) {
            return refuse(format!("storage {name:?} not found"));
        }
        ctx.storage_add.push((name, count));
    }
    Ok(Reply::ok(""))
}
