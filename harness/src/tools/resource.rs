//! `resource-get`.

use super::common::*;

/// `resource-get`.
pub(super) fn resource_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[], args)?;
    let Some(name) = p.positional.first() else {
        return usage("missing required resource name");
    };
    let app = &m.apps[&ctx.app];
    let Some(file) = app.meta.resources.get(name) else {
        return refuse(format!(
            "could not download resource: resource {name:?} is not defined by the charm"
        ));
    };
    let Some(res) = app.resources.get(name) else {
        return refuse(format!(
            "could not download resource: resource#{}/{name} not found",
            ctx.app
        ));
    };
    let dir = format!(
        "/var/lib/juju/agents/{}/resources/{name}",
        crate::controller::unit_dir_name(&ctx.unit)
    );
    let inside = format!("{dir}/{file}");
    let host_dir = ctx.machine_root.join(dir.trim_start_matches('/'));
    let marker = host_dir.join(".revision");
    let have = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    // The copy is by revision and under the charm's file name: a refresh to a charm that
    // names the resource's file otherwise (--switch) gets it under the new name, as
    // Juju's unit downloads it to the path the current charm's metadata names.
    if have != Some(res.revision) || !host_dir.join(file).exists() {
        let copy = || -> std::io::Result<()> {
            std::fs::create_dir_all(&host_dir)?;
            let tmp = host_dir.join(format!(".{file}.part"));
            std::fs::copy(&res.path, &tmp)?;
            std::fs::rename(&tmp, host_dir.join(file))?;
            std::fs::write(&marker, res.revision.to_string())
        };
        copy().map_err(|e| E::Run(format!("could not download resource: {e}")))?;
    }
    Ok(Reply::ok(inside))
}
