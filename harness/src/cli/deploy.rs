//! `deploy`: a charm (a local directory or archive, or a name from
//! `CHARM_HARNESS_CHARMHUB`) as a new application with its units.

use super::apps::{add_units, config_args};
use super::charms::{find_charm, snapshot_charm, store_resource, Charm};
use super::common::*;
use crate::flags::Parsed;
use crate::metadata::read_charm;

pub(super) async fn deploy(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
    store: &str,
) -> Result<Reply> {
    let p = parse(DEPLOY_FLAGS, args)?;
    let model = model_name(ctl, &p, env_model)?;
    let charm = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("no charm specified"))?;
    let found = find_charm(charm, cwd, store)?;
    refuse_flags(&p, charm, &found)?;
    let meta = read_charm(&found.dir)?;
    let constraints = crate::constraints::parse(p.values("constraints"))?;
    let bindings = bindings(&meta, &p)?;
    let asked = crate::bases::requested(p.value("base"), p.value("series"))?;
    let declared = crate::bases::declared(&found.dir, found.packed)?;
    let base = crate::bases::choose(&meta.name, declared.as_deref(), asked, p.flag("force"))?;
    let app = p
        .positional
        .get(1)
        .cloned()
        .unwrap_or_else(|| meta.name.clone());
    if ctl.model(&model, |m| m.apps.contains_key(&app))? {
        bail!("cannot add application \"{app}\": application already exists");
    }
    let n = unit_count(&meta, &p, &app)?;
    let to = super::apps::placement(p.value("to"))?;
    ctl.model(&model, |m| {
        super::apps::check_placement(m, &to, &format!("cannot deploy \"{app}\""))
    })??;
    let config = config_args(&meta, &app, p.values("config"), cwd)?;
    let (storage_requests, storage_volumes) = storage_args(&meta, &p)?;
    let dst = ctl.home.join("charms").join(&model).join(&app).join("1");
    let dst2 = dst.clone();
    let store_name =
        tokio::task::spawn_blocking(move || snapshot_charm(&found.dir, &dst2).map(|_| found.name))
            .await??;
    let resources = resource_args(ctl, &model, &app, &meta, &p, cwd)?;
    ctl.model_mut(&model, |m| {
        m.add_application(App {
            name: app.clone(),
            charm_dir: dst.to_string_lossy().into_owned(),
            charm_rev: 1,
            meta: meta.clone(),
            config,
            next_unit: 0,
            leader: None,
            status: None,
            version: String::new(),
            leader_settings: Default::default(),
            resources,
            storage_requests,
            storage_volumes,
            base,
            channel: store_name
                .as_ref()
                .map(|_| p.value("channel").unwrap_or("stable").to_string()),
            store_name,
            exposed: false,
            dying: false,
            constraints,
            bindings,
            trust: p.flag("trust"),
        });
        Ok(())
    })?;
    add_units(ctl, &model, &app, n, &to)?;
    Ok(Reply {
        code: 0,
        stdout: String::new(),
        stderr: format!(
            "Deployed \"{app}\" from local charm \"{}\", revision 1\n",
            meta.name
        ),
    })
}

/// The flags of `juju deploy` this controller knows (Juju 3.6's).
const DEPLOY_FLAGS: &[Flag] = &[
    value(&["n", "num-units"]),
    value(&["config"]),
    value(&["resource"]),
    value(&["storage"]),
    value(&["to"]),
    value(&["base"]),
    value(&["channel"]),
    value(&["constraints"]),
    value(&["bind"]),
    value(&["revision"]),
    value(&["attach-storage"]),
    value(&["overlay"]),
    value(&["series"]),
    boolean(&["trust"]),
    boolean(&["force"]),
];

/// `--num-units`: none for a subordinate (its units come with the principal units it is
/// related to).
fn unit_count(meta: &CharmMeta, p: &Parsed, app: &str) -> Result<u32> {
    if !meta.subordinate {
        return p.value("n").unwrap_or("1").parse().context("--num-units");
    }
    if p.value("n").is_some() || p.value("to").is_some() {
        bail!("cannot use --num-units or --to with subordinate application \"{app}\"");
    }
    Ok(0)
}

/// `--bind`: each named endpoint of the charm to a space.
fn bindings(meta: &CharmMeta, p: &Parsed) -> Result<BTreeMap<String, String>> {
    let endpoints: Vec<String> = meta
        .peers
        .keys()
        .chain(meta.provides.keys())
        .chain(meta.requires.keys())
        .cloned()
        .collect();
    crate::constraints::bindings(p.value("bind").unwrap_or(""), &endpoints)
}

/// Juju's validateCharmFlags (cmd/juju/application/deploy.go; deploy_test.go
/// TestDeployLocalWithBundleOverlay): bundle-only flags with a charm are refused; and
/// --revision picks from the store: a local charm has none, and the store (a directory)
/// holds one revision of each charm. Without --channel Juju refuses it first
/// (cmd/juju/application/deployer/deployer.go repoCharmDeployer; deployer_test.go
/// TestGetDeployerCharmHubCharmWithRevisionFail).
fn refuse_flags(p: &Parsed, charm: &str, found: &Charm) -> Result<()> {
    if p.value("overlay").is_some() {
        bail!("flags provided but not supported when deploying a charm: --overlay");
    }
    if p.value("attach-storage").is_some() {
        bail!("--attach-storage: this controller keeps no detached storage to attach (a removed unit's volumes go with it); deploy without --attach-storage");
    }
    if let Some(r) = p.value("revision") {
        if found.name.is_none() {
            bail!("--revision applies to a charm from the store; {charm:?} is a local charm");
        }
        if p.value("channel").is_none() {
            bail!("specifying a revision requires a channel for future upgrades. Please use --channel");
        }
        bail!("--revision {r}: this controller's store holds only the charm's current files; deploy without --revision");
    }
    Ok(())
}

/// `--storage` directives: the count of each store for every unit, and the volumes asked for.
#[allow(clippy::type_complexity)]
fn storage_args(
    meta: &CharmMeta,
    p: &Parsed,
) -> Result<(BTreeMap<String, u32>, BTreeMap<String, Volume>)> {
    let mut requests = BTreeMap::new();
    let mut volumes = BTreeMap::new();
    for s in p.values("storage") {
        let (name, count, volume) = super::storage::directive(meta, s)?;
        requests.insert(name.clone(), count.unwrap_or(1));
        if let Some(v) = volume {
            volumes.insert(name, v);
        }
    }
    Ok((requests, volumes))
}

/// `--resource name=path`: each a resource the charm defines, stored as its revision 1.
fn resource_args(
    ctl: &Ctl,
    model: &str,
    app: &str,
    meta: &CharmMeta,
    p: &Parsed,
    cwd: &Path,
) -> Result<BTreeMap<String, Resource>> {
    let mut resources = BTreeMap::new();
    for r in p.values("resource") {
        let (name, path) = r
            .split_once('=')
            .ok_or_else(|| anyhow!("--resource expects name=path"))?;
        if !meta.resources.contains_key(name) {
            bail!("charm does not define resource {name:?}");
        }
        let stored = store_resource(ctl, model, app, name, 1, &cwd.join(path))?;
        resources.insert(
            name.to_string(),
            Resource {
                revision: 1,
                path: stored,
            },
        );
    }
    Ok(resources)
}
