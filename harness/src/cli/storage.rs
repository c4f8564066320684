//! Storage: `add-storage`, `remove-storage` (`detach-storage`), `storage`,
//! `storage-pools` (`list-storage-pools`), and the `--storage` directive of `deploy`. The
//! pools and how a volume is made are in `crate::storage`.

use super::common::*;
use crate::storage::{parse_directive, DEFAULT_SIZE_MIB, POOLS};

/// `name=pool,size,count` (or just `name`) checked against the charm's storage: the name,
/// the optional count, and the volume when it is not the default rootfs pool.
pub(super) fn directive(
    meta: &CharmMeta,
    spec: &str,
) -> Result<(String, Option<u32>, Option<Volume>)> {
    let (name, rest) = spec.split_once('=').unwrap_or((spec, ""));
    if !meta.storage.contains_key(name) {
        bail!(
            "charm {:?} has no storage {name:?} (it has: {})",
            meta.name,
            meta.storage.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let (pool, size, count) = parse_directive(rest)?;
    let block = meta.storage.get(name).is_some_and(|d| d.kind == "block");
    let volume = match pool.as_deref() {
        Some("loop") => Some(Volume::loop_of(size.unwrap_or(DEFAULT_SIZE_MIB))),
        // A block store is a device: loop is the pool that makes one here.
        Some("rootfs") if block => bail!(
            "storage {name:?} is a block device: the rootfs pool gives directories only; use loop"
        ),
        None if block => Some(Volume::loop_of(size.unwrap_or(DEFAULT_SIZE_MIB))),
        _ => None,
    };
    Ok((name.to_string(), count, volume))
}

/// `add-storage <unit> <name>[=<pool>,<size>,<count>]`
pub(super) fn add(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    let p = parse(&[], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let [unit, spec] = p.positional.as_slice() else {
        bail!("usage: add-storage <unit> <storage>[=<pool>,<size>,<count>]");
    };
    let ids = ctl.model_mut(&model, |m| {
        let unit = resolve_unit(m, unit)?;
        let u = &m.units[&unit];
        if u.life != Life::Alive {
            bail!("unit {unit:?} is dying");
        }
        let meta = &m.apps[&u.app].meta;
        let (name, count, volume) = directive(meta, spec)?;
        let count = count.unwrap_or(1);
        let have = u
            .storage
            .iter()
            .filter(|s| s.split('/').next() == Some(name.as_str()))
            .count() as u32;
        if let Some(max) = meta.storage[&name].max {
            if have + count > max {
                bail!(
                    "cannot add {count} {name:?} storage to {unit}: it has {have} and the charm allows at most {max}"
                );
            }
        }
        Ok(m.add_storage(&unit, &name, count, volume))
    })?;
    Ok(Reply {
        code: 0,
        stdout: String::new(),
        stderr: ids
            .iter()
            .map(|id| format!("added storage {id}\n"))
            .collect(),
    })
}

/// `remove-storage <id>...`: each instance's unit runs `<name>-storage-detaching`; once it
/// succeeds the volume is unmounted and destroyed. A failing hook keeps it attached.
pub(super) fn remove(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    let p = parse(&[boolean(&["force"]), boolean(&["no-destroy"])], args)?;
    let model = model_name(ctl, &p, env_model)?;
    if p.positional.is_empty() {
        bail!("usage: remove-storage <storage id>... (see juju storage)");
    }
    ctl.model_mut(&model, |m| {
        for id in &p.positional {
            let Some(unit) = m
                .units
                .values()
                .find(|u| u.storage.contains(id))
                .map(|u| u.name.clone())
            else {
                bail!("storage {id:?} not found (see juju storage)");
            };
            let name = id.split('/').next().unwrap_or("");
            let u = &m.units[&unit];
            let min = m.apps[&u.app].meta.storage.get(name).map_or(0, |d| d.min);
            let have = u
                .storage
                .iter()
                .filter(|s| s.split('/').next() == Some(name))
                .count() as u32;
            if have <= min {
                bail!("cannot remove {id}: {unit} must keep at least {min} {name:?} storage");
            }
            m.volumes
                .entry(id.clone())
                .or_insert(Volume {
                    pool: "rootfs".into(),
                    size_mib: 0,
                    removing: false,
                    device: None,
                })
                .removing = true;
            m.push(
                &unit,
                Event {
                    hook: format!("{name}-storage-detaching"),
                    storage: Some(id.clone()),
                    ..Default::default()
                },
            );
        }
        Ok(())
    })?;
    Ok(Reply::ok(""))
}

/// Every storage instance of a model as Juju's combined listing has it: `storage`, then
/// a block store's volume under `volumes` and a filesystem store's under `filesystems`
/// (cmd/juju/storage/list.go).
fn listing(m: &Model) -> Value {
    let mut storage = Map::new();
    let mut filesystems = Map::new();
    let mut volumes = Map::new();
    for u in m.units.values() {
        for id in &u.storage {
            let name = id.split('/').next().unwrap_or("");
            let Some(def) = m.apps[&u.app].meta.storage.get(name) else {
                continue;
            };
            let vol = m.volumes.get(id);
            let pool = vol.map_or("rootfs", |v| v.pool.as_str());
            let life = if vol.is_some_and(|v| v.removing) {
                "dying"
            } else {
                "alive"
            };
            let location = controller::storage_location(def, id, vol);
            let attachment = json!({"units": {u.name.clone(): {
                "machine": u.machine.to_string(), "location": location, "life": life}}});
            storage.insert(
                id.clone(),
                json!({"kind": def.kind, "life": life, "persistent": false,
                    "status": {"current": "attached", "since": ""},
                    "attachments": attachment}),
            );
            // A block store is a volume, a filesystem store a filesystem (Juju's
            // combined listing: cmd/juju/storage/list.go, storage, filesystems, volumes).
            let entry = json!({"provider-id": id.replace('/', "-"), "storage": id,
                "pool": pool, "size": vol.map_or(0, |v| v.size_mib), "life": life,
                "status": {"current": "attached"}});
            if def.kind == "block" {
                volumes.insert(id.replace('/', "-"), entry);
            } else {
                filesystems.insert(id.replace('/', "-"), entry);
            }
        }
    }
    let mut out = json!({"storage": storage});
    if !filesystems.is_empty() {
        out["filesystems"] = Value::Object(filesystems);
    }
    if !volumes.is_empty() {
        out["volumes"] = Value::Object(volumes);
    }
    out
}

/// `storage [--format tabular|yaml|json]`: every instance, its unit, pool, size, location.
pub(super) fn list(ctl: &Arc<Ctl>, args: &[String], env_model: &Option<String>) -> Result<Reply> {
    let p = parse(&[FORMAT], args)?;
    let model = model_name(ctl, &p, env_model)?;
    let v = ctl.model(&model, listing)?;
    if p.value("format").is_some_and(|f| f != "tabular") {
        return fmt_out(&v, &p, Format::Yaml);
    }
    let mut rows = vec![vec![
        "Unit".to_string(),
        "Storage ID".into(),
        "Type".into(),
        "Pool".into(),
        "Size".into(),
        "Status".into(),
        "Message".into(),
    ]];
    for (id, s) in v["storage"].as_object().into_iter().flatten() {
        let key = id.replace('/', "-");
        let fs = if v["volumes"][&key].is_object() {
            &v["volumes"][&key]
        } else {
            &v["filesystems"][&key]
        };
        let unit = s["attachments"]["units"]
            .as_object()
            .and_then(|u| u.keys().next().cloned())
            .unwrap_or_default();
        let size = fs["size"].as_u64().unwrap_or(0);
        rows.push(vec![
            unit,
            id.clone(),
            s["kind"].as_str().unwrap_or("").into(),
            fs["pool"].as_str().unwrap_or("").into(),
            if size == 0 {
                String::new()
            } else {
                format!("{size} MiB")
            },
            if s["life"] == "dying" {
                "detaching".into()
            } else {
                "attached".into()
            },
            String::new(),
        ]);
    }
    if rows.len() == 1 {
        return Ok(Reply::ok("No storage to display.\n"));
    }
    Ok(Reply::ok(super::status::table(&rows)))
}

/// `storage-pools` / `list-storage-pools`
pub(super) fn pools(args: &[String]) -> Result<Reply> {
    let p = parse(&[FORMAT], args)?;
    let v: Map<String, Value> = POOLS
        .iter()
        .map(|(n, prov)| (n.to_string(), json!({"provider": prov})))
        .collect();
    if p.value("format").is_some_and(|f| f != "tabular") {
        return fmt_out(&Value::Object(v), &p, Format::Yaml);
    }
    let mut rows = vec![vec![
        "Name".to_string(),
        "Provider".into(),
        "Attributes".into(),
    ]];
    rows.extend(
        POOLS
            .iter()
            .map(|(n, prov)| vec![n.to_string(), prov.to_string(), String::new()]),
    );
    Ok(Reply::ok(super::status::table(&rows)))
}
