//! An application's charm changed (`juju refresh`, `--path` or `--switch`), as Juju 3.6's
//! state does it (juju/juju `state/application.go`, `SetCharm`): the checks that refuse a
//! charm the application cannot take (`validateSetCharmConfig`, `checkStorageUpgrade`,
//! `checkRelationsOps`), with Juju's messages, and what the change does to the model: the
//! old settings the new charm still accepts (`changeCharmOps` → `FilterSettings`), peer
//! relations removed and added (`removeStalePeerRelationsOps`, `extraPeerRelations`).
//! Pure: unit-tested below without root.

use crate::state::*;
use anyhow::{bail, Result};
use serde_json::Value;

/// Refuses the change of `app`'s charm to `new` (`url`: the new charm's URL, as Juju names
/// it in the message) as Juju refuses it.
pub fn check_charm_change(m: &Model, app: &str, new: &CharmMeta, url: &str) -> Result<()> {
    let Some(a) = m.apps.get(app) else {
        bail!("application \"{app}\" not found");
    };
    let why =
        |e: String| anyhow::anyhow!("cannot upgrade application \"{app}\" to charm \"{url}\": {e}");
    if a.meta.subordinate != new.subordinate {
        return Err(why("cannot change an application's subordinacy".into()));
    }
    check_storage(m, app, &a.meta, new).map_err(why)?;
    check_relations(m, app, &a.meta, new).map_err(why)
}

/// `checkStorageUpgrade`: a store the old charm has may go only while optional and unused;
/// one both have keeps its type, sharing, read-only flag and location, no smaller maximum,
/// and a located singleton stays a singleton.
fn check_storage(m: &Model, app: &str, old: &CharmMeta, new: &CharmMeta) -> Result<(), String> {
    for (name, o) in &old.storage {
        if new.storage.contains_key(name) {
            continue;
        }
        if o.min > 0 {
            return Err(format!("required storage {name:?} removed"));
        }
        let prefix = format!("{name}/");
        let in_use = m
            .units
            .values()
            .filter(|u| u.app == app)
            .any(|u| u.storage.iter().any(|s| s.starts_with(&prefix)));
        if in_use {
            return Err(format!("in-use storage {name:?} removed"));
        }
    }
    for (name, n) in &new.storage {
        let Some(o) = old.storage.get(name) else {
            continue;
        };
        if n.kind != o.kind {
            return Err(format!(
                "existing storage {name:?} type changed from {:?} to {:?}",
                o.kind, n.kind
            ));
        }
        if n.shared != o.shared {
            return Err(format!(
                "existing storage {name:?} shared changed from {} to {}",
                o.shared, n.shared
            ));
        }
        if n.read_only != o.read_only {
            return Err(format!(
                "existing storage {name:?} read-only changed from {} to {}",
                o.read_only, n.read_only
            ));
        }
        let (ol, nl) = (
            o.location.clone().unwrap_or_default(),
            n.location.clone().unwrap_or_default(),
        );
        if nl != ol {
            return Err(format!(
                "existing storage {name:?} location changed from {ol:?} to {nl:?}"
            ));
        }
        // None is unbounded (Juju's -1).
        let less = |a: Option<u32>, b: Option<u32>| a.is_some() && (b.is_none() || a < b);
        if less(n.max, o.max) {
            let old_max = o.max.map_or("<unbounded>".to_string(), |x| x.to_string());
            return Err(format!(
                "existing storage {name:?} range contracted: max decreased from {old_max} to {}",
                n.max.unwrap_or_default()
            ));
        }
        if !ol.is_empty() && o.max == Some(1) && n.max != Some(1) {
            return Err(format!(
                "existing storage {name:?} with location changed from single to multiple"
            ));
        }
    }
    Ok(())
}

/// `checkRelationsOps`: every relation the application is in must be implemented by the
/// new charm (the same endpoint name, role and interface), peer relations aside.
fn check_relations(m: &Model, app: &str, old: &CharmMeta, new: &CharmMeta) -> Result<(), String> {
    for r in m.relations.values().filter(|r| !r.dying) {
        let Some(ep) = r.endpoint_of(app) else {
            continue;
        };
        if r.peer {
            continue;
        }
        let implemented = [
            (&old.provides, &new.provides),
            (&old.requires, &new.requires),
        ]
        .iter()
        .any(|(o, n)| o.contains_key(&ep.name) && n.get(&ep.name) == Some(&ep.interface));
        let implicit = ep.name == "juju-info" && ep.interface == "juju-info";
        if !implemented && !implicit {
            return Err(format!("would break relation {:?}", relation_key(r)));
        }
    }
    Ok(())
}

/// Juju's name of a relation: its endpoints as `app:endpoint`, sorted, space-separated.
fn relation_key(r: &Relation) -> String {
    let mut eps: Vec<String> = r
        .endpoints
        .iter()
        .map(|e| format!("{}:{}", e.app, e.name))
        .collect();
    eps.sort();
    eps.join(" ")
}

/// `FilterSettings`: the old settings the new charm's config still takes, each coerced by
/// its option type's checker (juju/schema `numeric.go`, `strings.go`): an int from an integer
/// or a string `strconv.ParseInt(s, 0, 64)` reads, a float from a float, a boolean from a
/// bool or a string `strconv.ParseBool` reads, a string from a string. The others are
/// dropped silently.
pub fn filter_settings(
    old: &std::collections::BTreeMap<String, Value>,
    new: &CharmMeta,
) -> std::collections::BTreeMap<String, Value> {
    old.iter()
        .filter_map(|(k, v)| {
            let kind = new.options.get(k)?.kind.as_str();
            let fit = match (kind, v) {
                ("int", Value::Number(n)) if n.is_i64() => Some(v.clone()),
                ("int", Value::String(s)) => go_parse_int(s).map(Value::from),
                // floatC takes float kinds only: an integer stays behind.
                ("float", Value::Number(n)) if n.is_f64() => Some(v.clone()),
                ("boolean", Value::Bool(_)) => Some(v.clone()),
                ("boolean", Value::String(s)) => go_parse_bool(s).map(Value::from),
                ("string" | "secret", Value::String(_)) => Some(v.clone()),
                _ => None,
            };
            fit.map(|v| (k.clone(), v))
        })
        .collect()
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then decimal, or `0x`, `0o` (or a
/// leading `0`) and `0b` prefixed digits, `_` allowed between digits only with a prefix.
fn go_parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.replace('_', ""))
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.replace('_', ""))
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.replace('_', ""))
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].replace('_', ""))
    } else {
        (10, lower.clone())
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let v = i64::from_str_radix(&digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl Model {
    /// The peer relations of `app` once its charm is `new`: those the new charm no longer
    /// has are removed, its new ones created (the installed units join them at once).
    pub fn switch_peer_relations(&mut self, app: &str, new: &CharmMeta) {
        let stale: Vec<u32> = self
            .relations
            .values()
            .filter(|r| {
                r.peer
                    && r.endpoint_of(app)
                        .is_some_and(|e| !new.peers.contains_key(&e.name))
            })
            .map(|r| r.id)
            .collect();
        for id in stale {
            self.remove_relation(id);
        }
        let existing: Vec<String> = self
            .relations
            .values()
            .filter(|r| r.peer && !r.dying)
            .filter_map(|r| r.endpoint_of(app).map(|e| e.name.clone()))
            .collect();
        for (ep, iface) in &new.peers {
            if existing.contains(ep) {
                continue;
            }
            let endpoint = Endpoint {
                app: app.to_string(),
                name: ep.clone(),
                interface: iface.clone(),
            };
            let id = self.insert_relation(vec![endpoint], false);
            self.relation_created(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(storage: &[(&str, &str, Option<u32>)], provides: &[(&str, &str)]) -> CharmMeta {
        CharmMeta {
            name: "etcd".into(),
            peers: [("cluster".to_string(), "etcd".to_string())].into(),
            provides: provides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            storage: storage
                .iter()
                .map(|(n, kind, max)| {
                    (
                        n.to_string(),
                        StorageDef {
                            kind: kind.to_string(),
                            location: None,
                            min: 0,
                            max: *max,
                            shared: false,
                            read_only: false,
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    fn model(old: CharmMeta) -> Model {
        let mut m = Model::new("m", "0123456789".into(), 1, Default::default());
        let mut app = App::for_test("etcd", old);
        app.name = "etcd".into();
        m.add_application(app);
        m
    }

    #[test]
    fn a_storage_type_change_is_refused_with_jujus_message() {
        // The classic etcd charm's `data` is a block device; a charm whose `data` is a
        // filesystem cannot take over its application (checkStorageUpgrade).
        let m = model(meta(&[("data", "block", Some(1))], &[("db", "etcd")]));
        let new = meta(&[("data", "filesystem", Some(1))], &[("db", "etcd")]);
        let e = check_charm_change(&m, "etcd", &new, "local:etcd-2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot upgrade application \"etcd\" to charm \"local:etcd-2\": existing storage \"data\" type changed from \"block\" to \"filesystem\""
        );
        let same = meta(&[("data", "block", Some(1))], &[("db", "etcd")]);
        check_charm_change(&m, "etcd", &same, "local:etcd-2").unwrap();
    }

    #[test]
    fn storage_may_not_shrink_or_vanish_while_required() {
        let m = model(meta(&[("data", "filesystem", Some(2))], &[]));
        let e = check_charm_change(
            &m,
            "etcd",
            &meta(&[("data", "filesystem", Some(1))], &[]),
            "u",
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .ends_with("existing storage \"data\" range contracted: max decreased from 2 to 1"));
        let m2 = model(meta(&[("data", "filesystem", None)], &[]));
        let e = check_charm_change(
            &m2,
            "etcd",
            &meta(&[("data", "filesystem", Some(3))], &[]),
            "u",
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("max decreased from <unbounded> to 3"));
        let mut required = meta(&[("data", "filesystem", Some(1))], &[]);
        required.storage.get_mut("data").unwrap().min = 1;
        let e = check_charm_change(&model(required), "etcd", &meta(&[], &[]), "u");
        assert!(e
            .unwrap_err()
            .to_string()
            .ends_with("required storage \"data\" removed"));
    }

    #[test]
    fn a_relation_in_use_must_stay_implemented_peers_aside() {
        let mut m = model(meta(&[], &[("db", "etcd")]));
        m.apps.insert(
            "client".into(),
            App::for_test(
                "client",
                CharmMeta {
                    name: "client".into(),
                    requires: [("etcd".to_string(), "etcd".to_string())].into(),
                    ..Default::default()
                },
            ),
        );
        let ep = |app: &str, name: &str| Endpoint {
            app: app.into(),
            name: name.into(),
            interface: "etcd".into(),
        };
        m.insert_relation(vec![ep("etcd", "db"), ep("client", "etcd")], false);
        let mut no_peers = meta(&[], &[]);
        no_peers.peers.clear();
        let e = check_charm_change(&m, "etcd", &no_peers, "u").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("would break relation \"client:etcd etcd:db\""),
            "{e}"
        );
        // The peer relation may go; the db one kept is enough.
        let mut keeps_db = meta(&[], &[("db", "etcd")]);
        keeps_db.peers.clear();
        check_charm_change(&m, "etcd", &keeps_db, "u").unwrap();
    }

    #[test]
    fn old_settings_are_kept_only_where_the_new_config_takes_them() {
        let mut new = meta(&[], &[]);
        for (k, kind) in [
            ("snapshot_count", "int"),
            ("enable_v2", "boolean"),
            ("channel", "string"),
            ("ratio", "float"),
        ] {
            new.options.insert(
                k.into(),
                OptionDef {
                    kind: kind.into(),
                    default: None,
                    description: String::new(),
                },
            );
        }
        let old: std::collections::BTreeMap<String, Value> = [
            ("snapshot_count", serde_json::json!("auto")),
            ("enable_v2", serde_json::json!("true")),
            ("channel", serde_json::json!("3.4/stable")),
            ("gone", serde_json::json!(1)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let kept = filter_settings(&old, &new);
        assert_eq!(kept.get("enable_v2"), Some(&Value::Bool(true)));
        assert_eq!(kept.get("channel"), Some(&serde_json::json!("3.4/stable")));
        assert!(
            !kept.contains_key("snapshot_count"),
            "'auto' is no int: dropped"
        );
        assert!(!kept.contains_key("gone"));
        let ratio = |v: Value| {
            let old = [("ratio".to_string(), v)].into();
            filter_settings(&old, &new).get("ratio").cloned()
        };
        assert_eq!(ratio(serde_json::json!(0.5)), Some(serde_json::json!(0.5)));
        assert_eq!(ratio(serde_json::json!(2)), None, "floatC takes no integer");
        assert_eq!(ratio(serde_json::json!("0.5")), None, "nor a string");
        for (text, want) in [
            ("5000", Some(5000)),
            ("0x10", Some(16)),
            (" 5", None),
            ("1e3", None),
        ] {
            let numeric = [("snapshot_count".to_string(), serde_json::json!(text))].into();
            let got = filter_settings(&numeric, &new)
                .get("snapshot_count")
                .cloned();
            assert_eq!(got, want.map(Value::from), "{text:?}");
        }
    }
}
