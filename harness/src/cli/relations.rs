//! Relations: `integrate` (`relate`, `add-relation`) and `remove-relation`.

use super::*;

/// `integrate | relate | add-relation`
pub(super) async fn integrate(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[value(&["via"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    if p.positional.len() != 2 {
        bail!("a relation must involve two applications");
    }
    ctl.model_mut(&model, |m| {
        add_relation(m, &p.positional[0], &p.positional[1])
    })?;
    Ok(Reply::ok(""))
}

/// `remove-relation`
pub(super) async fn remove_relation(
    ctl: &Arc<Ctl>,
    args: &[String],
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[boolean(&["force"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    ctl.model_mut(&model, |m| -> Result<()> {
        let ids: Vec<u32> = if p.positional.len() == 1 {
            vec![p.positional[0].parse().context("relation id")?]
        } else if p.positional.len() == 2 {
            let matches = |spec: &str, r: &Relation| {
                let (app, ep) = spec
                    .split_once(':')
                    .map(|(a, e)| (a, Some(e)))
                    .unwrap_or((spec, None));
                r.endpoints
                    .iter()
                    .any(|e| e.app == app && ep.map(|x| x == e.name).unwrap_or(true))
            };
            m.relations
                .values()
                .filter(|r| {
                    !r.peer
                        && !r.dying
                        && matches(&p.positional[0], r)
                        && matches(&p.positional[1], r)
                })
                .map(|r| r.id)
                .collect()
        } else {
            bail!("remove-relation takes two endpoints or a relation id");
        };
        if ids.is_empty() {
            bail!("relation {:?} not found", p.positional.join(" "));
        }
        for id in ids {
            m.remove_relation(id);
        }
        Ok(())
    })?;
    Ok(Reply::ok(""))
}

pub(super) fn add_relation(m: &mut Model, a: &str, b: &str) -> Result<()> {
    let split = |s: &str| {
        s.split_once(':')
            .map(|(x, y)| (x.to_string(), Some(y.to_string())))
            .unwrap_or((s.to_string(), None))
    };
    let (app_a, ep_a) = split(a);
    let (app_b, ep_b) = split(b);
    let meta_a = m
        .apps
        .get(&app_a)
        .ok_or_else(|| anyhow!("application \"{app_a}\" not found"))?
        .meta
        .clone();
    let meta_b = m
        .apps
        .get(&app_b)
        .ok_or_else(|| anyhow!("application \"{app_b}\" not found"))?
        .meta
        .clone();
    // provides on one side, requires on the other, same interface
    let mut candidates = vec![];
    for (pa, ia) in meta_a
        .provides
        .iter()
        .map(|(k, v)| (k, v, true))
        .chain(meta_a.requires.iter().map(|(k, v)| (k, v, false)))
        .map(|(k, v, p)| ((k.clone(), p), v.clone()))
    {
        for (pb, ib) in meta_b
            .provides
            .iter()
            .map(|(k, v)| ((k.clone(), true), v.clone()))
            .chain(
                meta_b
                    .requires
                    .iter()
                    .map(|(k, v)| ((k.clone(), false), v.clone())),
            )
        {
            if ia == ib
                && pa.1 != pb.1
                && ep_a.as_ref().map(|e| e == &pa.0).unwrap_or(true)
                && ep_b.as_ref().map(|e| e == &pb.0).unwrap_or(true)
            {
                candidates.push((pa.0.clone(), pb.0.clone(), ia.clone()));
            }
        }
    }
    let (ea, eb, iface) = match candidates.len() {
        0 => bail!("no relations found between {a:?} and {b:?}"),
        1 => candidates.remove(0),
        _ => bail!(
            "ambiguous relation: {a:?} {b:?} could refer to {}",
            candidates
                .iter()
                .map(|(x, y, _)| format!("\"{app_a}:{x} {app_b}:{y}\""))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    if m.relations.values().any(|r| {
        !r.dying
            && r.endpoint_of(&app_a).map(|e| e.name == ea).unwrap_or(false)
            && r.endpoint_of(&app_b).map(|e| e.name == eb).unwrap_or(false)
    }) {
        bail!("relation {app_a}:{ea} {app_b}:{eb} already exists");
    }
    // Container-scoped if either side says so; then one side must be a subordinate, whose
    // units live beside the other side's.
    let container =
        meta_a.container_endpoints.contains(&ea) || meta_b.container_endpoints.contains(&eb);
    if container && !meta_a.subordinate && !meta_b.subordinate {
        bail!(
            "cannot relate {app_a}:{ea} and {app_b}:{eb}: a container-scoped relation needs \
             a subordinate application on one side"
        );
    }
    if container && meta_a.subordinate && meta_b.subordinate {
        bail!(
            "cannot relate {app_a}:{ea} and {app_b}:{eb}: both are subordinate (the local \
             controller relates a subordinate to principals only)"
        );
    }
    let id = m.next_relation;
    m.next_relation += 1;
    m.relations.insert(
        id,
        Relation {
            id,
            endpoints: vec![
                Endpoint {
                    app: app_a.clone(),
                    name: ea.clone(),
                    interface: iface.clone(),
                },
                Endpoint {
                    app: app_b.clone(),
                    name: eb.clone(),
                    interface: iface,
                },
            ],
            peer: false,
            app_data: Default::default(),
            unit_data: Default::default(),
            scope: Default::default(),
            dying: false,
            container,
        },
    );
    let mut started = vec![];
    for (app, ep, remote) in [(&app_a, &ea, &app_b), (&app_b, &eb, &app_a)] {
        let units: Vec<(String, bool)> = m
            .units
            .values()
            .filter(|u| &u.app == app && u.life == Life::Alive)
            .map(|u| (u.name.clone(), u.started))
            .collect();
        for (u, s) in units {
            m.push(
                &u,
                Event {
                    hook: format!("{ep}-relation-created"),
                    relation: Some(id),
                    remote_app: Some(remote.clone()),
                    ..Default::default()
                },
            );
            if s {
                started.push(u);
            }
        }
    }
    for u in started {
        let addr = m
            .machines
            .get(&m.units[&u].machine)
            .map(|x| x.address.clone())
            .unwrap_or_default();
        m.enter_relation_scope(id, &u, &addr);
    }
    Ok(())
}
