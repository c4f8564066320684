//! Charms and resources: `deploy` (a local directory, or a name from
//! `CHARM_HARNESS_CHARMHUB`), `refresh`/`upgrade-charm`, `attach-resource`/`attach`.

use super::apps::{add_units, config_args};
use super::common::*;

/// `attach-resource | attach`
pub(super) async fn attach_resource(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
) -> Result<Reply> {
    let p = parse(&[], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let app = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("application name required"))?
        .clone();
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
    let p = parse(
        &[
            value(&["path"]),
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
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let app = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("application name required"))?
        .clone();
    // `--path` names a local charm; without it, the store is asked again for the name the
    // application was deployed from (`juju upgrade-charm etcd`).
    let (store_name, base) = ctl
        .model(&model, |m| {
            m.apps
                .get(&app)
                .map(|a| (a.store_name.clone(), a.base.clone()))
        })?
        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?;
    let found = match (p.value("path"), store_name) {
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
    // --channel and --revision pick from the store: a local charm has neither. Without
    // --path the charm came from the store (the match above refused a local one).
    let from_store = p.value("path").is_none();
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
    let meta = read_charm(&found.dir)?;
    let config = config_args(&meta, &app, p.values("config"), cwd)?;
    let mut storage = vec![];
    for s in p.values("storage") {
        storage.push(super::storage::directive(&meta, s)?);
    }
    let declared = crate::bases::declared(&found.dir, found.packed)?;
    if !base.is_empty() && !p.flag("force") && !p.flag("force-base") {
        if let Some(d) = &declared {
            if !d.contains(&base) {
                bail!(
                    "cannot refresh \"{app}\": the new charm does not support its base {base} (it supports: {}); use --force to refresh anyway",
                    d.join(", ")
                );
            }
        }
    }
    let src = found.dir.clone();
    let rev = ctl
        .model(&model, |m| m.apps.get(&app).map(|a| a.charm_rev))?
        .ok_or_else(|| anyhow!("application \"{app}\" not found"))?
        + 1;
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
        a.meta = meta;
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
        upgrade_sequence(m, &app);
        Ok(())
    })?;
    // Units get the new charm files before their upgrade-charm hook.
    let units: Vec<(String, Option<u32>)> = ctl.model(&model, |m| {
        m.units
            .values()
            .filter(|u| u.app == app)
            .map(|u| {
                (
                    u.name.clone(),
                    m.machines.get(&u.machine).and_then(|x| x.init_pid),
                )
            })
            .collect()
    })?;
    for (u, pid) in units {
        if let Some(pid) = pid {
            let target = PathBuf::from(format!("/proc/{pid}/root"))
                .join(controller::charm_dir_in_machine(&u).trim_start_matches('/'));
            // The old files must go, or the unit would run a mix of both revisions.
            match std::fs::remove_dir_all(&target) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| {
                        format!("removing {u}'s old charm files {}", target.display())
                    })
                }
                _ => {}
            }
            controller::copy_tree(&dst, &target)?;
        }
    }
    Ok(Reply::ok(""))
}

/// Copies a charm directory into the controller, honouring `.jujuignore` (gitignore syntax).
pub(super) fn snapshot_charm(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    std::fs::create_dir_all(dst)?;
    let walker = ignore::WalkBuilder::new(src)
        .hidden(false)
        .git_ignore(false)
        .git_global(false)
        .git_exclude(false)
        .ignore(false)
        .parents(false)
        .add_custom_ignore_filename(".jujuignore")
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry?;
        let rel = entry.path().strip_prefix(src)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let to = dst.join(rel);
        let ft = entry.file_type().context("file type")?;
        if ft.is_dir() {
            std::fs::create_dir_all(&to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &to)?;
        } else {
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::copy(entry.path(), &to)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

pub(super) fn store_resource(
    ctl: &Ctl,
    model: &str,
    app: &str,
    name: &str,
    rev: u32,
    src: &Path,
) -> Result<String> {
    let dir = ctl
        .home
        .join("resources")
        .join(model)
        .join(app)
        .join(name)
        .join(rev.to_string());
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(src.file_name().unwrap_or_default());
    std::fs::copy(src, &file)
        .with_context(|| format!("reading resource file {}", src.display()))?;
    Ok(file.to_string_lossy().into_owned())
}

pub(super) fn upgrade_sequence(m: &mut Model, app: &str) {
    let units: Vec<String> = m
        .units
        .values()
        .filter(|u| u.app == app && u.life == Life::Alive)
        .map(|u| u.name.clone())
        .collect();
    for u in units {
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

/// A charm as `deploy` or `refresh` found it: its files in `dir` (an archive is unpacked
/// into a temporary directory that lives as long as this), and where it came from.
pub(super) struct Charm {
    pub dir: PathBuf,
    /// A `.charm` archive (Juju 3 requires its manifest.yaml bases).
    pub packed: bool,
    /// The store name it was found by (`refresh` without `--path` looks it up again).
    pub name: Option<String>,
    _unpacked: Option<tempfile::TempDir>,
}

/// The charm `deploy` names: a local charm directory or `.charm` archive (`./etcd`,
/// `/path/to/etcd.charm`), or a charm name (`etcd`, `ch:etcd`, `cs:etcd`) looked up as
/// `<dir>/<name>.charm` or `<dir>/<name>/` in the colon-separated directories of
/// `CHARM_HARNESS_CHARMHUB`, the local controller's store (an archive first, as a store
/// serves archives).
pub(super) fn find_charm(charm: &str, cwd: &Path, store: &str) -> Result<Charm> {
    // As Juju reads it: a path (with a `/` or a leading `.`) is a local charm; a bare name is
    // the store's, and only a name no store holds falls back to a directory here.
    let local = cwd.join(charm);
    let is_path = charm.contains('/') || charm.starts_with('.');
    if is_path && (local.is_dir() || local.is_file()) {
        return open_charm(&local, None);
    }
    let by_name = charm
        .strip_prefix("ch:")
        .or_else(|| charm.strip_prefix("cs:"))
        .unwrap_or(charm);
    let looks_like_name = !by_name.is_empty()
        && by_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if looks_like_name {
        for dir in store.split(':').filter(|d| !d.is_empty()) {
            let archive = Path::new(dir).join(format!("{by_name}.charm"));
            let candidate = Path::new(dir).join(by_name);
            if archive.is_file() {
                return open_charm(&archive, Some(by_name));
            }
            if candidate.join("metadata.yaml").is_file() {
                return open_charm(&candidate, Some(by_name));
            }
        }
    }
    if local.is_dir() {
        return open_charm(&local, None);
    }
    if is_path {
        bail!("charm {charm:?} not found: no such charm directory or .charm file");
    }
    if !looks_like_name {
        bail!("charm {charm:?} not found: no such directory, and not a charm name");
    }
    if store.is_empty() {
        bail!("charm {charm:?} not found: deploy a local charm directory, or set CHARM_HARNESS_CHARMHUB to directories holding <name>.charm files or <name>/ charm directories");
    }
    bail!("charm {charm:?} not found in CHARM_HARNESS_CHARMHUB ({store}): each directory there holds <name>.charm files or <name>/ charm directories")
}

fn open_charm(path: &Path, name: Option<&str>) -> Result<Charm> {
    if path.is_dir() {
        return Ok(Charm {
            dir: path.to_path_buf(),
            packed: false,
            name: name.map(String::from),
            _unpacked: None,
        });
    }
    let tmp = tempfile::Builder::new().prefix("charm-").tempdir()?;
    unpack(path, tmp.path())
        .with_context(|| format!("{} is not a charm archive", path.display()))?;
    Ok(Charm {
        dir: tmp.path().to_path_buf(),
        packed: true,
        name: name.map(String::from),
        _unpacked: Some(tmp),
    })
}

/// Unpacks a `.charm` (zip) into `dst`: files with their modes, and symlinks whose targets
/// stay inside the charm (`hooks/install -> ../dispatch`). An entry naming a path outside
/// `dst`, or a symlink pointing out of it, refuses the whole archive.
fn unpack(archive: &Path, dst: &Path) -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(archive)?;
    let mut zip = zip::ZipArchive::new(file)?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let rel = entry
            .enclosed_name()
            .ok_or_else(|| anyhow!("entry {:?} points outside the charm", entry.name()))?;
        let out = dst.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out)?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mode = entry.unix_mode().unwrap_or(0o644);
        if mode & 0o170000 == 0o120000 {
            let mut target = String::new();
            entry.read_to_string(&mut target)?;
            let resolved = rel.parent().unwrap_or(Path::new("")).join(&target);
            let mut depth = 0i32;
            for c in resolved.components() {
                match c {
                    std::path::Component::Normal(_) => depth += 1,
                    std::path::Component::ParentDir => depth -= 1,
                    std::path::Component::CurDir => {}
                    _ => depth = -1,
                }
                if depth < 0 {
                    bail!(
                        "symlink {:?} -> {target:?} points outside the charm",
                        entry.name()
                    );
                }
            }
            std::os::unix::fs::symlink(&target, &out)?;
            continue;
        }
        let mut f = std::fs::File::create(&out)?;
        std::io::copy(&mut entry, &mut f)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
    }
    Ok(())
}

pub(super) async fn deploy(
    ctl: &Arc<Ctl>,
    args: &[String],
    cwd: &Path,
    env_model: &Option<String>,
    store: &str,
) -> Result<Reply> {
    let p = parse(
        &[
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
        ],
        args,
    )?;
    let model = model_name(ctl, &p, env_model)?;
    let charm = p
        .positional
        .first()
        .ok_or_else(|| anyhow!("no charm specified"))?;
    // Juju's validateCharmFlags (cmd/juju/application/deploy.go; deploy_test.go
    // TestDeployLocalWithBundleOverlay): bundle-only flags with a charm.
    if p.value("overlay").is_some() {
        bail!("flags provided but not supported when deploying a charm: --overlay");
    }
    if p.value("attach-storage").is_some() {
        bail!("--attach-storage: this controller keeps no detached storage to attach (a removed unit's volumes go with it); deploy without --attach-storage");
    }
    let found = find_charm(charm, cwd, store)?;
    let meta = read_charm(&found.dir)?;
    // --revision picks from the store: a local charm has none, and the store (a directory)
    // holds one revision of each charm. Without --channel Juju refuses it first
    // (cmd/juju/application/deployer/deployer.go repoCharmDeployer; deployer_test.go
    // TestGetDeployerCharmHubCharmWithRevisionFail).
    if let Some(r) = p.value("revision") {
        if found.name.is_none() {
            bail!("--revision applies to a charm from the store; {charm:?} is a local charm");
        }
        if p.value("channel").is_none() {
            bail!("specifying a revision requires a channel for future upgrades. Please use --channel");
        }
        bail!("--revision {r}: this controller's store holds only the charm's current files; deploy without --revision");
    }
    let constraints = crate::constraints::parse(p.values("constraints"))?;
    let endpoints: Vec<String> = meta
        .peers
        .keys()
        .chain(meta.provides.keys())
        .chain(meta.requires.keys())
        .cloned()
        .collect();
    let bindings = crate::constraints::bindings(p.value("bind").unwrap_or(""), &endpoints)?;
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
    let n: u32 = if meta.subordinate {
        // Its units come with the principal units it is related to.
        if p.value("n").is_some() || p.value("to").is_some() {
            bail!("cannot use --num-units or --to with subordinate application \"{app}\"");
        }
        0
    } else {
        p.value("n").unwrap_or("1").parse().context("--num-units")?
    };
    let to = super::apps::placement(p.value("to"))?;
    ctl.model(&model, |m| {
        super::apps::check_placement(m, &to, &format!("cannot deploy \"{app}\""))
    })??;
    let config = config_args(&meta, &app, p.values("config"), cwd)?;
    let mut storage_requests = BTreeMap::new();
    let mut storage_volumes = BTreeMap::new();
    for s in p.values("storage") {
        let (name, count, volume) = super::storage::directive(&meta, s)?;
        storage_requests.insert(name.clone(), count.unwrap_or(1));
        if let Some(v) = volume {
            storage_volumes.insert(name, v);
        }
    }
    let dst = ctl.home.join("charms").join(&model).join(&app).join("1");
    let dst2 = dst.clone();
    let store_name =
        tokio::task::spawn_blocking(move || snapshot_charm(&found.dir, &dst2).map(|_| found.name))
            .await??;
    let mut resources = BTreeMap::new();
    for r in p.values("resource") {
        let (name, path) = r
            .split_once('=')
            .ok_or_else(|| anyhow!("--resource expects name=path"))?;
        if !meta.resources.contains_key(name) {
            bail!("charm does not define resource {name:?}");
        }
        let stored = store_resource(ctl, &model, &app, name, 1, &cwd.join(path))?;
        resources.insert(
            name.to_string(),
            Resource {
                revision: 1,
                path: stored,
            },
        );
    }
    let peers = meta.peers.clone();
    ctl.model_mut(&model, |m| {
        m.apps.insert(
            app.clone(),
            App {
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
            },
        );
        for (ep, iface) in peers {
            let id = m.next_relation;
            m.next_relation += 1;
            m.relations.insert(
                id,
                Relation {
                    id,
                    endpoints: vec![Endpoint {
                        app: app.clone(),
                        name: ep,
                        interface: iface,
                    }],
                    peer: true,
                    app_data: Default::default(),
                    unit_data: Default::default(),
                    scope: Default::default(),
                    dying: false,
                    container: false,
                },
            );
        }
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
