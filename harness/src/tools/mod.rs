//! The hook tools, server side: each call arrives with its context id and is answered from
//! the model state with Juju's flags, formats, exit codes (2 for argument errors, 1 for
//! refusals) and stderr phrases. Relation writes, ports, secrets, state and storage-add are
//! buffered in the context; status, leader-set, logs and action results apply at once.

mod action;
mod common;
mod config;
mod leader;
mod machine_fs;
mod misc;
mod network;
mod ports;
mod relation;
mod resource;
pub(crate) mod secrets;
mod state;
mod status;
mod storage;

use common::*;

use crate::controller::{Ctl, HookCtx};
use crate::proto::Reply;

pub fn handle(
    ctl: &Ctl,
    tool: &str,
    args: &[String],
    context: &str,
    stdin: Option<&str>,
    _peer: Option<u32>,
) -> Reply {
    let mut contexts = crate::controller::lock(&ctl.contexts);
    let Some(ctx) = contexts.get_mut(context) else {
        return Reply::err(
            1,
            format!("bad request: unknown context id {context:?} (is a hook running?)"),
        );
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Reply::ok(help(tool));
    }
    // Only the tools with immediate effects change the model; the others read it or
    // buffer into the context, and need no write to disk.
    let immediate = matches!(
        tool,
        "status-set"
            | "application-version-set"
            | "leader-set"
            | "action-set"
            | "action-fail"
            | "action-log"
            | "secret-get"
    );
    let r = ctl.mutate_if(|w| {
        let r = match w.models.get_mut(&ctx.model) {
            Some(m) => dispatch(ctl, m, ctx, tool, args, stdin),
            None => Err(E::Run("model not found".into())),
        };
        let changed = immediate && r.is_ok();
        (r, changed)
    });
    match r {
        Ok(r) => r,
        Err(E::Usage(m)) => Reply::err(2, m),
        Err(E::Run(m)) => Reply::err(1, m),
    }
}

fn help(tool: &str) -> String {
    match tool {
        "relation-set" => "Usage: relation-set [options] key=value [key=value ...]\n\nOptions:\n--app  (= false)\n--file  (= )\n    file containing key-value pairs\n--format  (= )\n-r, --relation  (= )\n".into(),
        _ => format!("Usage: {tool} [options]\n"),
    }
}

fn dispatch(
    ctl: &Ctl,
    m: &mut Model,
    ctx: &mut HookCtx,
    tool: &str,
    args: &[String],
    stdin: Option<&str>,
) -> R {
    macro_rules! call {
        () => {
            Call {
                ctl,
                m,
                ctx,
                tool,
                args,
                stdin,
            }
        };
    }
    match tool {
        "status-set" => status::status_set(call!()),
        "status-get" => status::status_get(call!()),
        "application-version-set" => status::application_version_set(call!()),
        "juju-log" => status::juju_log(call!()),
        "config-get" => config::config_get(call!()),
        "is-leader" => leader::is_leader_tool(call!()),
        "leader-get" => leader::leader_get(call!()),
        "leader-set" => leader::leader_set(call!()),
        "relation-ids" => relation::relation_ids(call!()),
        "relation-list" => relation::relation_list(call!()),
        "relation-get" => relation::relation_get(call!()),
        "relation-set" => relation::relation_set(call!()),
        "relation-model-get" => relation::relation_model_get(call!()),
        "network-get" => network::network_get(call!()),
        "unit-get" => network::unit_get(call!()),
        "open-port" | "close-port" => ports::open_port(call!()),
        "opened-ports" => ports::opened_ports(call!()),
        "resource-get" => resource::resource_get(call!()),
        "storage-list" => storage::storage_list(call!()),
        "storage-get" => storage::storage_get(call!()),
        "storage-add" => storage::storage_add(call!()),
        "action-get" => action::action_get(call!()),
        "action-set" => action::action_set(call!()),
        "action-fail" => action::action_fail(call!()),
        "action-log" => action::action_log(call!()),
        "goal-state" => misc::goal_state(call!()),
        "state-get" => state::state_get(call!()),
        "state-set" => state::state_set(call!()),
        "state-delete" => state::state_delete(call!()),
        "credential-get" => misc::credential_get(call!()),
        "juju-reboot" => misc::juju_reboot(call!()),
        "add-metric" => misc::add_metric(call!()),
        t if t.starts_with("secret-") => {
            secrets::dispatch(m, ctx, t, args, stdin).map_err(|e| match e {
                secrets::SErr::Usage(s) => E::Usage(s),
                secrets::SErr::Run(s) => E::Run(s),
            })
        }
        other => refuse(format!("unknown hook tool {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_keys() {
        assert!(valid_action_key("snapshot"));
        assert!(valid_action_key("a-1"));
        assert!(!valid_action_key("a_b"));
        assert!(!valid_action_key("Ab"));
        assert!(!valid_action_key("-a"));
    }

    #[test]
    fn ports() {
        assert_eq!(normalize_port("80/tcp").unwrap(), "80/tcp");
        assert_eq!(normalize_port("2379").unwrap(), "2379/tcp");
        assert_eq!(normalize_port("8000-8100/udp").unwrap(), "8000-8100/udp");
        assert!(normalize_port("0").is_err());
        assert!(normalize_port("80/sctp").is_err());
    }

    #[test]
    fn nested_results() {
        let mut m = BTreeMap::new();
        set_nested(&mut m, &["a".into(), "b".into()], "1".into());
        set_nested(&mut m, &["a".into(), "c".into()], "2".into());
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"a": {"b": "1", "c": "2"}})
        );
    }
}
