//! The `juju` commands the controller answers (the subset jubilant uses, juju-contract.md §5),
//! plus the harness's own fault operations (cut-network, crash-machine, reboot-machine, ...).
//! Arguments arrive from the thin CLI client and are parsed here with Juju's flag rules.

mod actions;
mod apps;
mod charms;
mod common;
mod deploy;
mod machines;
mod models;
mod refresh;
mod relations;
mod secrets;
mod ssh;
mod status;
mod storage;
mod tasks;

use crate::controller::Ctl;
use crate::proto::Reply;
use anyhow::Result;
use std::path::Path;
use std::sync::Arc;

pub async fn handle(
    ctl: &Arc<Ctl>,
    args: Vec<String>,
    cwd: &str,
    env_model: Option<String>,
    charmhub: Option<String>,
    juju29: bool,
) -> Reply {
    let Some((cmd, rest)) = args.split_first() else {
        return Reply::ok(USAGE);
    };
    // The commands Juju 3 renamed or removed (juju/juju cmd/juju/commands/main.go registers
    // none of them in 3.6): a 3.6 client answers as Juju's command runner does for a name it
    // does not know; a 2.9 client (`CHARM_HARNESS_CLIENT=2.9`) has them, and its `run` is
    // what 3.x calls `exec`.
    let cmd = cmd.as_str();
    let missing = if juju29 { JUJU3_ONLY } else { JUJU29_ONLY };
    if missing.contains(&cmd) {
        return Reply::err(
            1,
            format!("juju: {cmd:?} is not a juju command. See \"juju --help\"."),
        );
    }
    let cmd = if juju29 && cmd == "run" { "exec" } else { cmd };
    match run(ctl, cmd, rest, Path::new(cwd), env_model, charmhub).await {
        Ok(r) => r,
        Err(e) => Reply::err(1, format!("{e:#}")),
    }
}

/// Juju 2.9 spellings that Juju 3.6 rejects (the 2.9 → 3 renames: run-action → run,
/// show-action-output → show-task, attach → attach-resource, upgrade-charm → refresh,
/// add-relation → integrate).
const JUJU29_ONLY: &[&str] = &[
    "run-action",
    "show-action-output",
    "attach",
    "upgrade-charm",
    "add-relation",
];

/// Juju 3 commands a 2.9 client does not have.
const JUJU3_ONLY: &[&str] = &["integrate", "exec", "show-task", "wait-for"];

const USAGE: &str = "charm-harness: a local Juju-compatible controller\n\
commands: add-model destroy-model models deploy add-unit remove-unit remove-application integrate\n\
remove-relation config model-config run exec status show-unit show-model debug-log attach-resource\n\
run-action show-action-output show-task actions show-action scp ssh attach\n\
resolve version wait-settled cut-network heal-network crash-machine start-machine reboot-machine\n\
show-machine kill-controller constraints set-constraints trust expose unexpose add-storage remove-storage storage storage-pools\n";

async fn run(
    ctl: &Arc<Ctl>,
    cmd: &str,
    args: &[String],
    cwd: &Path,
    env_model: Option<String>,
    charmhub: Option<String>,
) -> Result<Reply> {
    let store = charmhub
        .or_else(|| std::env::var("CHARM_HARNESS_CHARMHUB").ok())
        .unwrap_or_default();
    match cmd {
        "version" => models::version(args).await,
        "add-model" => models::add_model(ctl, args).await,
        "destroy-model" => models::destroy_model(ctl, args).await,
        "models" => models::models(ctl, args).await,
        "show-model" => models::show_model(ctl, args, &env_model).await,
        "deploy" => deploy::deploy(ctl, args, cwd, &env_model, &store).await,
        "add-unit" => apps::add_unit(ctl, args, &env_model).await,
        "remove-unit" => apps::remove_unit(ctl, args, &env_model).await,
        "remove-application" => apps::remove_application(ctl, args, &env_model).await,
        "integrate" | "relate" | "add-relation" => {
            relations::integrate(ctl, args, &env_model).await
        }
        "add-storage" => storage::add(ctl, args, &env_model),
        "remove-storage" | "detach-storage" => storage::remove(ctl, args, &env_model),
        "storage" | "list-storage" => storage::list(ctl, args, &env_model),
        "storage-pools" | "list-storage-pools" => storage::pools(args),
        "expose" | "unexpose" => apps::expose(ctl, cmd == "expose", args, &env_model),
        "remove-relation" => relations::remove_relation(ctl, args, &env_model).await,
        "config" => apps::config(ctl, args, cwd, &env_model),
        "constraints" | "get-constraints" => apps::constraints(ctl, false, args, &env_model),
        "set-constraints" => apps::constraints(ctl, true, args, &env_model),
        "trust" => apps::trust(ctl, args, &env_model),
        "add-secret" => secrets::add(ctl, args, &env_model),
        "grant-secret" | "revoke-secret" => {
            secrets::grant(ctl, cmd == "grant-secret", args, &env_model)
        }
        "model-config" => models::model_config(ctl, args, &env_model).await,
        "run" => actions::run(ctl, args, cwd, &env_model).await,
        "run-action" => actions::run_action(ctl, args, cwd, &env_model).await,
        "show-action-output" => actions::show_action_output(ctl, args, &env_model).await,
        "show-task" => actions::show_task(ctl, args, &env_model).await,
        "actions" | "list-actions" => actions::list(ctl, args, &env_model),
        "show-action" => actions::show(ctl, args, &env_model),
        "scp" => ssh::scp(ctl, args, cwd, &env_model).await,
        "ssh" => ssh::ssh(ctl, args, &env_model).await,
        "exec" => ssh::exec(ctl, args, &env_model).await,
        "status" => status::status(ctl, args, &env_model).await,
        "show-unit" => status::show_unit_cmd(ctl, args, &env_model).await,
        "show-machine" => machines::show_machine(ctl, args, &env_model).await,
        "add-machine" => machines::add_machine(ctl, args, &env_model).await,
        "remove-machine" => machines::remove_machine(ctl, args, &env_model).await,
        "debug-log" => status::debug_log(ctl, args, &env_model).await,
        "attach-resource" | "attach" => refresh::attach_resource(ctl, args, cwd, &env_model).await,
        "refresh" | "upgrade-charm" => refresh::refresh(ctl, args, cwd, &env_model, &store).await,
        "resolve" | "resolved" => apps::resolve(ctl, args, &env_model).await,
        "wait-settled" => models::wait_settled(ctl, args, &env_model).await,
        "cut-network" | "heal-network" | "crash-machine" | "start-machine" | "reboot-machine" => {
            machines::cut_network(ctl, cmd, args, &env_model).await
        }
        other => Ok(Reply::err(2, format!("unrecognized command: juju {other}"))),
    }
}
