//! A hook's process environment (the JUJU_* variables Juju sets), its context, and which file handles an event.

use super::context::*;
use super::names::*;
use super::runtime::*;
use crate::proto::{self};
use crate::state::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

impl Ctl {
    /// Builds the hook environment of juju-contract.md §2.
    pub(crate) fn environment(
        &self,
        m: &Model,
        unit: &str,
        ctx_id: &str,
        ev: Option<&Event>,
        dispatch: &str,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let charm = charm_dir_in_machine(unit);
        let u = &m.units[unit];
        let mut set = |k: &str, v: &str| {
            env.insert(k.to_string(), v.to_string());
        };
        set(
            "PATH",
            &format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                proto::MACHINE_TOOLS_BIN
            ),
        );
        set("CHARM_DIR", &charm);
        set("JUJU_CHARM_DIR", &charm);
        set("JUJU_CONTEXT_ID", ctx_id);
        set(
            "JUJU_AGENT_SOCKET_ADDRESS",
            &format!("{}/controller.sock", proto::MACHINE_SOCKET_DIR),
        );
        set("JUJU_AGENT_SOCKET_NETWORK", "unix");
        set("JUJU_UNIT_NAME", unit);
        if let Some(p) = &u.principal {
            set("JUJU_PRINCIPAL_UNIT", p);
        }
        set("JUJU_MODEL_UUID", &m.uuid);
        set("JUJU_MODEL_NAME", &m.name);
        set(
            "JUJU_API_ADDRESSES",
            &format!("{}:17070", m.net().host_address()),
        );
        set("JUJU_MACHINE_ID", &u.machine.to_string());
        if u.principal.is_none() {
            set("JUJU_PRINCIPAL_UNIT", "");
        }
        set("JUJU_AVAILABILITY_ZONE", "");
        set("JUJU_VERSION", JUJU_VERSION);
        set("CLOUD_API_VERSION", "");
        for p in ["HTTP", "HTTPS", "FTP", "NO"] {
            set(&format!("JUJU_CHARM_{p}_PROXY"), "");
        }
        set("JUJU_DISPATCH_PATH", dispatch);
        set("LANG", "C.UTF-8");
        set("DEBIAN_FRONTEND", "noninteractive");
        set("APT_LISTCHANGES_FRONTEND", "none");
        // Juju's ubuntuEnv (internal/worker/uniter/runner/context/env.go) sets TERM and no
        // HOME: a charm that needs a home must not count on one.
        set("TERM", "tmux-256color");
        set(
            "JUJU_HOOK_NAME",
            dispatch.strip_prefix("hooks/").unwrap_or(""),
        );
        if let Some(ev) = ev {
            event_environment(m, unit, ev, &mut env);
        }
        env
    }

    pub(crate) fn new_context(
        &self,
        w: &mut World,
        model: &str,
        unit: &str,
        ev: &Event,
        task: Option<u64>,
        is_action: bool,
    ) -> Option<HookCtx> {
        w.next_context += 1;
        let m = w.models.get(model)?;
        let init = m
            .units
            .get(unit)
            .and_then(|u| m.machines.get(&u.machine))
            .and_then(|x| x.init_pid)
            .unwrap_or(0);
        Some(HookCtx {
            id: format!(
                "{}-{}-{}",
                unit,
                if ev.hook.is_empty() {
                    "action"
                } else {
                    ev.hook.as_str()
                },
                w.next_context
            ),
            model: model.into(),
            unit: unit.into(),
            app: app_of(unit).into(),
            event: ev.clone(),
            task,
            is_action,
            machine_root: PathBuf::from(format!("/proc/{init}/root")),
            rel_writes: Default::default(),
            ports: vec![],
            secrets: vec![],
            state: vec![],
            storage_add: vec![],
            reboot: false,
        })
    }

    /// Which file Juju would run for this hook or action, if any.
    pub(crate) fn handler(charm_dir: &str, kind: &str, name: &str) -> Option<String> {
        let base = Path::new(charm_dir);
        if base.join("dispatch").exists() {
            return Some("dispatch".into());
        }
        let p = format!("{kind}/{name}");
        if base.join(&p).exists() {
            return Some(p);
        }
        None
    }
}

/// What Juju's uniter adds for the event a hook runs for: its relation, storage or secret
/// (internal/worker/uniter/runner/context/context.go, `HookVars`).
fn event_environment(m: &Model, unit: &str, ev: &Event, env: &mut BTreeMap<String, String>) {
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    if let Some(rel) = ev.relation {
        let r = m.relations.get(&rel);
        let ep = r
            .and_then(|r| r.endpoint_of(app_of(unit)))
            .map(|e| e.name.clone())
            .unwrap_or_default();
        set("JUJU_RELATION", &ep);
        set("JUJU_RELATION_ID", &format!("{ep}:{rel}"));
        set("JUJU_REMOTE_APP", ev.remote_app.as_deref().unwrap_or(""));
        set("JUJU_REMOTE_UNIT", ev.remote_unit.as_deref().unwrap_or(""));
        if let Some(d) = &ev.departing {
            set("JUJU_DEPARTING_UNIT", d);
        }
    }
    if let Some(s) = &ev.storage {
        let name = s.split('/').next().unwrap_or("");
        let def = m
            .apps
            .get(app_of(unit))
            .and_then(|a| a.meta.storage.get(name))
            .cloned()
            .unwrap_or_default();
        set("JUJU_STORAGE_ID", s);
        set(
            "JUJU_STORAGE_LOCATION",
            &storage_location(&def, s, m.volumes.get(s)),
        );
        let kind = if def.kind == "block" {
            "block"
        } else {
            "filesystem"
        };
        set("JUJU_STORAGE_KIND", kind);
    }
    if let Some(sid) = &ev.secret {
        set("JUJU_SECRET_ID", sid);
        let label = m
            .secrets
            .get(sid)
            .and_then(|s| s.consumer_labels.get(unit).cloned().or(s.label.clone()))
            .unwrap_or_default();
        set("JUJU_SECRET_LABEL", &label);
        if let Some(r) = ev.secret_revision.filter(|r| *r > 0) {
            set("JUJU_SECRET_REVISION", &r.to_string());
        }
    }
}
