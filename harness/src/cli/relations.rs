//! Relations: `integrate` (`relate`, `add-relation`) and `remove-relation`.

use super::common::*;

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

const JUJU_INFO: &str = "juju-info";

/// One side of a relation asked for: what the operator typed, the application, the
/// endpoint if named, and the application's charm.
type Side<'a> = (&'a str, &'a str, Option<&'a str>, &'a CharmMeta);

/// The endpoints a relation between two applications joins, as Juju picks them: provides
/// on one side, requires on the other, the same interface; the endpoints named, if any.
/// Returns the two endpoint names and the interface.
fn resolve_endpoints(
    (a, app_a, ep_a, meta_a): Side,
    (b, app_b, ep_b, meta_b): Side,
) -> Result<(String, String, String)> {
    // Every charm provides `juju-info` without declaring it (Juju's implicit endpoint):
    // what a subordinate such as nrpe relates to when nothing more specific matches.
    let with_juju_info = |meta: &CharmMeta| {
        let mut meta = meta.clone();
        let declared = meta.provides.contains_key(JUJU_INFO)
            || meta.requires.contains_key(JUJU_INFO)
            || meta.peers.contains_key(JUJU_INFO);
        if !declared {
            meta.provides.insert(JUJU_INFO.into(), JUJU_INFO.into());
        }
        (meta, !declared)
    };
    let (meta_a, implicit_a) = with_juju_info(&meta_a);
    let (meta_b, implicit_b) = with_juju_info(&meta_b);
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
                && ep_a.is_none_or(|e| e == pa.0)
                && ep_b.is_none_or(|e| e == pb.0)
            {
                candidates.push((pa.0.clone(), pb.0.clone(), ia.clone()));
            }
        }
    }
    // Juju prefers declared endpoints: the implicit juju-info only when nothing else fits.
    let uses_implicit = |c: &(String, String, String)| {
        (implicit_a && c.0 == JUJU_INFO) || (implicit_b && c.1 == JUJU_INFO)
    };
    if candidates.iter().any(|c| !uses_implicit(c)) {
        candidates.retain(|c| !uses_implicit(c));
    }
    match candidates.len() {
        0 => bail!("no relations found between {a:?} and {b:?}"),
        1 => Ok(candidates.remove(0)),
        _ => bail!(
            "ambiguous relation: {a:?} {b:?} could refer to {}",
            candidates
                .iter()
                .map(|(x, y, _)| format!("\"{app_a}:{x} {app_b}:{y}\""))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
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
    let (ea, eb, iface) = resolve_endpoints(
        (a, &app_a, ep_a.as_deref(), &meta_a),
        (b, &app_b, ep_b.as_deref(), &meta_b),
    )?;
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
    let endpoint = |app: &String, name: &String| Endpoint {
        app: app.clone(),
        name: name.clone(),
        interface: iface.clone(),
    };
    let id = m.insert_relation(
        vec![endpoint(&app_a, &ea), endpoint(&app_b, &eb)],
        container,
    );
    m.relation_created(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let mut m = Model::new("m", "0123456789".into(), 1, Default::default());
        let principal = CharmMeta {
            name: "etcd".into(),
            provides: [(
                "nrpe-external-master".to_string(),
                "nrpe-external-master".to_string(),
            )]
            .into(),
            container_endpoints: ["nrpe-external-master".to_string()].into(),
            ..Default::default()
        };
        let nrpe = CharmMeta {
            name: "nrpe".into(),
            subordinate: true,
            requires: [
                (
                    "nrpe-external-master".to_string(),
                    "nrpe-external-master".to_string(),
                ),
                ("general-info".to_string(), "juju-info".to_string()),
            ]
            .into(),
            container_endpoints: [
                "nrpe-external-master".to_string(),
                "general-info".to_string(),
            ]
            .into(),
            ..Default::default()
        };
        let plain = CharmMeta {
            name: "ubuntu".into(),
            ..Default::default()
        };
        m.apps
            .insert("etcd".into(), App::for_test("etcd", principal));
        m.apps.insert("nrpe".into(), App::for_test("nrpe", nrpe));
        m.apps
            .insert("ubuntu".into(), App::for_test("ubuntu", plain));
        m
    }

    fn endpoints(m: &Model) -> Vec<(String, String)> {
        m.relations
            .values()
            .map(|r| (r.endpoints[0].name.clone(), r.endpoints[1].name.clone()))
            .collect()
    }

    #[test]
    fn a_declared_endpoint_wins_over_the_implicit_juju_info() {
        let mut m = model();
        add_relation(&mut m, "nrpe", "etcd").unwrap();
        assert_eq!(
            endpoints(&m),
            [(
                "nrpe-external-master".to_string(),
                "nrpe-external-master".to_string()
            )]
        );
    }

    #[test]
    fn a_charm_with_nothing_to_match_relates_through_juju_info() {
        let mut m = model();
        add_relation(&mut m, "nrpe", "ubuntu").unwrap();
        assert_eq!(
            endpoints(&m),
            [("general-info".to_string(), "juju-info".to_string())]
        );
        // The subordinate's side is container-scoped: so is the relation.
        assert!(m.relations.values().all(|r| r.container));
        // Asked for by name, juju-info is taken even where a declared endpoint also fits.
        add_relation(&mut m, "nrpe:general-info", "etcd:juju-info").unwrap();
        assert_eq!(m.relations.len(), 2);
    }
}
