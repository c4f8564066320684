//! Juju in memory, for whole-hook tests: a `charmkit::juju::Backend` that answers the argv
//! of every hook tool the charm runs from a `World` (config, leadership, relation data,
//! secrets, addresses, resources, goal state), as Juju 3.6's tools answer them, and records
//! each call. Relation and secret writes are buffered and committed only when the hook
//! succeeds, as the uniter commits a hook's context (juju/juju
//! `internal/worker/uniter/runner/context/context.go`, `Flush`); a status is set at once.
//! A tool argv the charm has not used before is an error, so a new call is noticed here.

use charmkit::juju::{Backend, Bag, JujuError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One relation as this unit sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Relation {
    pub endpoint: String,
    /// every unit in scope, this one included, with its databag
    pub units: BTreeMap<String, Bag>,
    /// application databags, by application
    pub apps: BTreeMap<String, Bag>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Secret {
    pub id: String,
    pub label: String,
    pub content: Bag,
    pub revision: u32,
}

/// What the hook sees of Juju, and what it left there.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct World {
    pub unit: String,
    pub leader: bool,
    pub config: BTreeMap<String, Value>,
    /// relation id (`cluster:0`) → relation
    pub relations: BTreeMap<String, Relation>,
    /// this unit's ingress addresses
    pub addresses: Vec<String>,
    /// resource name → the file `resource-get` names
    pub resources: BTreeMap<String, String>,
    pub secrets: Vec<Secret>,
    pub opened_ports: Vec<String>,
    /// unit → its goal-state status (`active`, `dying`)
    pub goal: BTreeMap<String, String>,
    pub action_params: BTreeMap<String, Value>,
    // What the hooks left.
    pub unit_status: (String, String),
    pub app_status: Option<(String, String)>,
    pub version: String,
    pub action_results: BTreeMap<String, String>,
    pub action_failed: Option<String>,
    /// every tool call of the last hook: the tool then its arguments
    pub calls: Vec<Vec<String>>,
    /// (level, message) of the last hook's `juju-log` lines
    pub logs: Vec<(String, String)>,
}

impl World {
    pub fn app(&self) -> String {
        self.unit.split('/').next().unwrap_or("").to_string()
    }
}

/// What a hook wrote that Juju keeps only once it succeeds.
#[derive(Default)]
struct Pending {
    /// (relation, `Some(app)` or the unit) → keys written
    relation: Vec<(String, Option<String>, Bag)>,
    secrets_added: Vec<Secret>,
    secrets_set: Vec<(String, Bag)>,
}

pub struct FakeJuju {
    world: Mutex<World>,
    pending: Mutex<Pending>,
}

fn usage(tool: &str, args: &[&str]) -> JujuError {
    JujuError::Tool {
        tool: tool.into(),
        code: 2,
        stderr: format!("the in-memory Juju does not know this call: {tool} {args:?}"),
    }
}

fn refused(tool: &str, msg: &str) -> JujuError {
    JujuError::Tool {
        tool: tool.into(),
        code: 1,
        stderr: format!("ERROR {msg}"),
    }
}

/// The contents of `key#file=path` arguments.
fn file_content(args: &[&str]) -> std::result::Result<Bag, String> {
    let mut out = Bag::new();
    for a in args {
        let (k, p) = a
            .split_once("#file=")
            .ok_or_else(|| format!("a secret value not passed as key#file=: {a}"))?;
        let v = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

impl FakeJuju {
    pub fn new(world: World) -> FakeJuju {
        FakeJuju {
            world: Mutex::new(world),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// The world after the hook: its buffered writes committed when it succeeded, dropped
    /// when it failed.
    pub fn finish(&self, succeeded: bool) -> World {
        let mut w = self.world.lock().unwrap().clone();
        let p = std::mem::take(&mut *self.pending.lock().unwrap());
        if succeeded {
            for (rel, app, bag) in p.relation {
                let r = w.relations.get_mut(&rel).expect("written relation exists");
                let target = match app {
                    Some(a) => r.apps.entry(a).or_default(),
                    None => r.units.entry(w.unit.clone()).or_default(),
                };
                for (k, v) in bag {
                    if v.is_empty() {
                        target.remove(&k);
                    } else {
                        target.insert(k, v);
                    }
                }
            }
            w.secrets.extend(p.secrets_added);
            for (id, content) in p.secrets_set {
                if let Some(s) = w.secrets.iter_mut().find(|s| s.id == id) {
                    s.content = content;
                    s.revision += 1;
                }
            }
        }
        w
    }

    /// A databag as this hook sees it: the committed one with this hook's own writes on it.
    fn bag(&self, w: &World, rel: &str, app: Option<&str>, unit: &str) -> Bag {
        let r = &w.relations[rel];
        let mut b = match app {
            Some(a) => r.apps.get(a).cloned().unwrap_or_default(),
            None => r.units.get(unit).cloned().unwrap_or_default(),
        };
        let mine = app.is_some_and(|a| a == w.app()) || (app.is_none() && unit == w.unit);
        if mine {
            for (wr, wa, bag) in &self.pending.lock().unwrap().relation {
                if wr == rel && wa.as_deref() == app {
                    for (k, v) in bag {
                        if v.is_empty() {
                            b.remove(k);
                        } else {
                            b.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        b
    }

    fn relation_get(&self, w: &World, args: &[&str]) -> Result<Value> {
        let t = "relation-get";
        let (rel, app, target) = match args {
            ["-r", rel, "--app", "-", target] => (*rel, true, *target),
            ["-r", rel, "-", target] => (*rel, false, *target),
            _ => return Err(usage(t, args)),
        };
        if !w.relations.contains_key(rel) {
            return Err(refused(
                t,
                &format!("invalid value \"{rel}\" for option -r: relation not found"),
            ));
        }
        if app && target == w.app() && !w.leader {
            return Err(refused(t, "permission denied"));
        }
        let bag = if app {
            self.bag(w, rel, Some(target), "")
        } else {
            self.bag(w, rel, None, target)
        };
        Ok(json!(bag))
    }

    fn relation_set(&self, w: &World, args: &[&str], stdin: Option<&str>) -> Result<Value> {
        let t = "relation-set";
        let (rel, app) = match args {
            ["-r", rel, "--app", "--file", "-"] => (*rel, true),
            ["-r", rel, "--file", "-"] => (*rel, false),
            _ => return Err(usage(t, args)),
        };
        if !w.relations.contains_key(rel) {
            return Err(refused(t, &format!("relation {rel} not found")));
        }
        if app && !w.leader {
            return Err(refused(
                t,
                "cannot write relation settings: permission denied",
            ));
        }
        let bag: Bag = serde_json::from_str(stdin.unwrap_or(""))
            .map_err(|e| refused(t, &format!("cannot parse settings: {e}")))?;
        self.pending
            .lock()
            .unwrap()
            .relation
            .push((rel.to_string(), app.then(|| w.app()), bag));
        Ok(Value::Null)
    }

    fn secret(&self, w: &mut World, tool: &str, args: &[&str]) -> Result<Value> {
        match (tool, args) {
            ("secret-add", ["--owner", "application", "--label", label, rest @ ..]) => {
                if !w.leader {
                    return Err(refused(tool, "this unit is not the leader"));
                }
                let content = file_content(rest).map_err(|e| refused(tool, &e))?;
                let id = format!("secret:fake{:04}", w.secrets.len() + 100);
                self.pending.lock().unwrap().secrets_added.push(Secret {
                    id: id.clone(),
                    label: label.to_string(),
                    content,
                    revision: 1,
                });
                Ok(Value::String(id))
            }
            ("secret-set", [id, rest @ ..]) => {
                let content = file_content(rest).map_err(|e| refused(tool, &e))?;
                if !w.secrets.iter().any(|s| s.id == *id) {
                    return Err(refused(tool, &format!("secret {id:?} not found")));
                }
                self.pending
                    .lock()
                    .unwrap()
                    .secrets_set
                    .push((id.to_string(), content));
                Ok(Value::Null)
            }
            ("secret-info-get", ["--label", label, "--format=json"]) => {
                match w.secrets.iter().find(|s| s.label == *label) {
                    Some(s) => {
                        Ok(json!({ s.id.clone(): {"label": s.label, "revision": s.revision} }))
                    }
                    None => Err(refused(tool, &format!("secret {label:?} not found"))),
                }
            }
            ("secret-get", ["--label", label, "--format=json"]) => {
                match w.secrets.iter().find(|s| s.label == *label) {
                    Some(s) => Ok(json!(s.content)),
                    None => Err(refused(tool, &format!("secret {label:?} not found"))),
                }
            }
            _ => Err(usage(tool, args)),
        }
    }

    fn answer(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<Value> {
        let mut w = self.world.lock().unwrap();
        match (tool, args) {
            ("juju-log", ["--log-level", level, "--", msg]) => {
                w.logs.push((level.to_string(), msg.to_string()));
                Ok(Value::Null)
            }
            ("config-get", ["--format=json"]) => Ok(json!(w.config)),
            ("is-leader", ["--format=json"]) => Ok(json!(w.leader)),
            ("status-set", [flag, status, "--", msg]) => {
                let s = (status.to_string(), msg.to_string());
                match *flag {
                    "--application=true" if !w.leader => {
                        Err(refused(tool, "this unit is not the leader"))
                    }
                    "--application=true" => {
                        w.app_status = Some(s);
                        Ok(Value::Null)
                    }
                    "--application=false" => {
                        w.unit_status = s;
                        Ok(Value::Null)
                    }
                    _ => Err(usage(tool, args)),
                }
            }
            ("application-version-set", ["--", v]) => {
                w.version = v.to_string();
                Ok(Value::Null)
            }
            ("relation-ids", [endpoint, "--format=json"]) => Ok(json!(w
                .relations
                .iter()
                .filter(|(_, r)| r.endpoint == *endpoint)
                .map(|(id, _)| id.clone())
                .collect::<Vec<_>>())),
            ("relation-list", ["-r", rel, "--format=json"]) => match w.relations.get(*rel) {
                Some(r) => Ok(json!(r
                    .units
                    .keys()
                    .filter(|u| **u != w.unit)
                    .cloned()
                    .collect::<Vec<_>>())),
                None => Err(refused(tool, &format!("relation {rel} not found"))),
            },
            ("relation-get", a) => {
                let a: Vec<&str> = a
                    .iter()
                    .copied()
                    .filter(|x| *x != "--format=json")
                    .collect();
                self.relation_get(&w, &a)
            }
            ("relation-set", a) => self.relation_set(&w, a, stdin),
            ("network-get", [_, "--format=json"]) => Ok(json!({
                "ingress-addresses": w.addresses,
                "egress-subnets": w.addresses.iter().map(|a| format!("{a}/32")).collect::<Vec<_>>(),
            })),
            ("resource-get", [name]) => match w.resources.get(*name) {
                Some(p) => Ok(Value::String(p.clone())),
                None => Err(refused(tool, &format!("resource {name:?} not found"))),
            },
            ("opened-ports", ["--format=json"]) => Ok(json!(w.opened_ports)),
            ("open-port", [p]) => {
                if !w.opened_ports.iter().any(|x| x == p) {
                    w.opened_ports.push(p.to_string());
                }
                Ok(Value::Null)
            }
            ("close-port", [p]) => {
                w.opened_ports.retain(|x| x != p);
                Ok(Value::Null)
            }
            ("goal-state", ["--format=json"]) => {
                let units: BTreeMap<&String, Value> = w
                    .goal
                    .iter()
                    .map(|(u, s)| (u, json!({"status": s, "since": "2026-12-07 00:00:00Z"})))
                    .collect();
                Ok(json!({"units": units, "relations": {}}))
            }
            ("storage-list", [_, "--format=json"]) => Ok(json!([])),
            ("action-get", ["--format=json"]) => Ok(json!(w.action_params)),
            ("action-set", kvs) => {
                for kv in kvs.iter() {
                    let (k, v) = kv.split_once('=').ok_or_else(|| usage(tool, args))?;
                    w.action_results.insert(k.into(), v.into());
                }
                Ok(Value::Null)
            }
            ("action-fail", ["--", msg]) => {
                w.action_failed = Some(msg.to_string());
                Ok(Value::Null)
            }
            ("action-log", ["--", msg]) => {
                w.logs.push(("ACTION".into(), msg.to_string()));
                Ok(Value::Null)
            }
            (t, _) if t.starts_with("secret-") => self.secret(&mut w, tool, args),
            _ => Err(usage(tool, args)),
        }
    }
}

impl Backend for FakeJuju {
    fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut call = vec![tool.to_string()];
        call.extend(args.iter().map(|a| a.to_string()));
        self.world.lock().unwrap().calls.push(call);
        let v = self.answer(tool, args, stdin)?;
        Ok(match v {
            Value::Null => String::new(),
            Value::String(s) if !args.contains(&"--format=json") => s + "\n",
            v => v.to_string() + "\n",
        })
    }
}
