//! `refresh`/`upgrade-charm` (a new revision of an application's charm) and
//! `attach-resource`/`attach`: each queues the units' upgrade-charm.

use super::apps::config_args;
use super::charms::{find_charm, snapshot_charm, store_resource, Charm};
use super::common::*;
use crate::flags::Parsed;
use crate::metadata::read_charm;

/// `attach-resource | attach`
pub(super) async fn attach_resource(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let app = app_arg(&p)?;
    for kv in &p.positional[1..] {
        let (name, path) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("expected name=path, got {kv:?}"))?;
        let known = ctl.model(&model, |m| {
            m.apps
                .get(&app)
                .map(|a| a.meta.resources.contains_key(name))
        })?;
        match known {
            None => bail!("application \"{app}\" not found"),
            Some(false) => bail!("charm does not define resource {name:?}"),
            Some(true) => {}
        }
        let rev = ctl.model(&model, |m| {
            m.apps
                .get(&app)
                .and_then(|a| a.resources.get(name))
                .map(|r| r.revision)
                .unwrap_or(0)
        })? + 1;
        let stored = store_resource(ctl, &model, &app, name, rev, &cwd.join(path))?;
        ctl.model_mut(&model, |m| {
            m.apps
                .get_mut(&app)
                .ok_or_else(|| anyhow!("application \"{app}\" not found"))?
                .resources
                .insert(
                    name.to_string(),
                    Resource {
                        revision: rev,
                        path: stored.clone(),
                    },
                );
            upgrade_sequence(m, &app);
            Ok(())
        })?;
    }
    Ok(Reply::ok(""))
}

/// `refresh | upgrade-charm`
pub(super) async fn refresh(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
    store: &str,
) -> Result<Reply> {
    let p = parse(REFRESH_FLAGS, args)?;
    let model = model_name(ctl, &p, env_model)?;
    let app = app_arg(&p)?;
    let (found, base) = refresh_source(ctl, &model, &app, &p, cwd, store)?;
    let meta = read_charm(&found.dir)?;
    let config = config_args(&meta, &app, p.values("config"), cwd)?;
    let (old_rev, old_dir) = ctl
        .model(&model, |m| {
            m.apps.get(&app).map(|a| (a.charm_rev, a.charm_dir.clone()))
        })?
        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
    let rev = old_rev + 1;
    // Juju's checks before anything changes (state/application.go SetCharm).
    let url = match &found.name {
        Some(name) => format!("ch:amd64/{name}-{rev}"),
        None => format!("local:{}-{rev}", meta.name),
    };
    ctl.model(&model, |m| {
        controller::check_charm_change(m, &app, &meta, &url)
    })??;
    let mut storage = vec![];
    for s in p.values("storage") {
        storage.push(super::storage::directive(&meta, s)?);
    }
    check_base(&found, &base, &app, &p)?;
    let src = found.dir.clone();
    let dst = ctl
        .home
        .join("charms")
        .join(&model)
        .join(&app)
        .join(rev.to_string());
    snapshot_charm(&src, &dst)?;
    ctl.model_mut(&model, |m| {
        let a = m
            .apps
            .get_mut(&app)
            .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
        // The old settings the new charm takes (FilterSettings), then --config's.
        a.config = controller::filter_settings(&a.config, &meta);
        if p.value("switch").is_some() {
            a.store_name = found.name.clone();
        }
        keep_old_files(m, &app, &old_dir);
        let a = m
            .apps
            .get_mut(&app)
            .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
        a.meta = meta.clone();
        a.charm_rev = rev;
        a.charm_dir = dst.to_string_lossy().into_owned();
        if let Some(ch) = p.value("channel") {
            a.channel = Some(ch.to_string());
        }
        // --trust grants it (Juju's refresh: it never takes trust away).
        if p.flag("trust") {
            a.trust = true;
        }
        // --config: set with the refresh (its config-changed comes with upgrade-charm's).
        a.config.extend(config);
        // --storage: constraints for the units added from now on.
        for (name, count, volume) in storage {
            a.storage_requests.insert(name.clone(), count.unwrap_or(1));
            if let Some(v) = volume {
                a.storage_volumes.insert(name, v);
            }
        }
        m.switch_peer_relations(&app, &meta);
        upgrade_sequence(m, &app);
        Ok(())
    })?;
    Ok(Reply::ok(""))
}

/// The new charm must run on the application's base, unless --force or --force-base.
fn check_base(found: &Charm, base: &str, app: &str, p: &Parsed) -> Result<()> {
    let declared = crate::bases::declared(&found.dir, found.packed)?;
    if base.is_empty() || p.flag("force") || p.flag("force-base") {
        return Ok(());
    }
    if let Some(d) = &declared {
        if !d.iter().any(|b| b == base) {
            bail!(
                "cannot refresh \"{app}\": the new charm does not support its base {base} (it supports: {}); use --force to refresh anyway",
                d.join(", ")
            );
        }
    }
    Ok(())
}

/// The flags of `juju refresh`, with those jubilant's refresh() passes (jubilant/_juju.py),
/// as Juju 3.6 has them.
const REFRESH_FLAGS: &[Flag] = &[
    value(&["path"]),
    value(&["switch"]),
    value(&["resource"]),
    boolean(&["force"]),
    boolean(&["force-units"]),
    // What jubilant's refresh() passes (jubilant/_juju.py), as Juju 3.6 has them.
    value(&["channel"]),
    value(&["revision"]),
    value(&["base"]),
    value(&["config"]),
    value(&["storage"]),
    boolean(&["trust"]),
    boolean(&["force-base"]),
];

/// The charm a refresh brings: `--path` names a local charm; without it, the store is asked
/// again for the name the application was deployed from (`juju upgrade-charm etcd`).
/// `--channel` and `--revision` pick from the store, `--base` must be the application's.
/// Returns the charm and the application's base.
fn refresh_source(
    ctl: &Ctl,
    model: &str,
    app: &str,
    p: &Parsed,
    cwd: &Path,
    store: &str,
) -> Result<(Charm, String)> {
    let (store_name, base) = ctl
        .model(model, |m| {
            m.apps
                .get(app)
                .map(|a| (a.store_name.clone(), a.base.clone()))
        })?
        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
    // Juju's refreshCommand.Init (cmd/juju/application/refresh.go; refresh_test.go
    // TestSwitchAndPathFails).
    if p.value("switch").is_some() && p.value("path").is_some() {
        bail!("--switch and --path are mutually exclusive");
    }
    if p.value("revision").is_some() {
        for flag in ["switch", "path"] {
            if p.value(flag).is_some() {
                bail!("--{flag} and --revision are mutually exclusive");
            }
        }
    }
    let found = match (p.value("path").or(p.value("switch")), store_name) {
        // --switch to a store charm by name (`ch:etcd`, `etcd`).
        (Some(name), _) if p.value("switch").is_some() && !name.contains('/') && !name.starts_with('.') => {
            find_charm(name, cwd, store)?
        }
        (Some(path), _) => {
            let path = if path.contains('/') || path.starts_with('.') {
                path.to_string()
            } else {
                format!("./{path}")
            };
            find_charm(&path, cwd, store)?
        }
        (None, Some(name)) => find_charm(&name, cwd, store)?,
        (None, None) => bail!(
            "application \"{app}\" was deployed from a local charm: refresh it with --path <charm directory or .charm file>"
        ),
    };
    // Without --path the charm came from the store (the match above refused a local one).
    let from_store = p.value("path").is_none() && found.name.is_some();
    for flag in ["channel", "revision"] {
        if p.value(flag).is_some() && !from_store {
            bail!("--{flag} applies to a charm from the store; \"{app}\" is refreshed from a local charm (--path)");
        }
    }
    if let Some(r) = p.value("revision") {
        // The controller's store (a directory) holds one revision of each charm.
        bail!("--revision {r}: this controller's store holds only the charm's current files; refresh without --revision");
    }
    if let Some(b) = p.value("base") {
        let asked = crate::bases::requested(Some(b), None)?;
        if asked.as_deref() != Some(base.as_str()) && !p.flag("force-base") {
            bail!("--base {b}: \"{app}\" runs on {base}; refresh does not move it to another base");
        }
    }
    Ok((found, base))
}

/// Each unit gets the new charm's files from its own worker, between two of its hooks
/// (controller/deploy.rs): the old charm's (at `old_dir`) are what it has until then.
fn keep_old_files(m: &mut Model, app: &str, old_dir: &str) {
    for u in m.units.values_mut().filter(|u| u.app == app) {
        u.charm_from.get_or_insert_with(|| old_dir.to_string());
    }
}

pub(super) fn upgrade_sequence(m: &mut Model, app: &str) {
    for u in m.alive_units(app) {
        // As Juju's runHook.Commit (internal/worker/uniter/operation/runhook.go; its
        // runhook_test.go): upgrade-charm queues config-changed, which queues start only on
        // a unit that never started. Leadership hooks come only with a leadership change.
        let started = m.units.get(&u).is_some_and(|x| x.started);
        m.push(&u, Event::hook("upgrade-charm"));
        m.push(&u, Event::hook("config-changed"));
        if !started {
            m.push(&u, Event::hook("start"));
        }
    }
}
