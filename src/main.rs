//! `etcd-charm`: the etcd machine charm. Juju runs `dispatch`, which runs this binary with
//! `JUJU_DISPATCH_PATH` set; it parses the context once, runs the hook's reconcile or the
//! action's handler, and turns the result into an exit code.
//!
//! Layers (each arrow the only way down, no cycles):
//! - `actions` (the action dispatch and the simple actions) → `restore`, `recover`,
//!   `migrate` (the multi-step operations, each with a journal that the next run finishes or
//!   undoes: `finish_interrupted`) → `action_support` (refusals, the leader check, endpoints);
//! - `charm` (the hooks' reconcile and status);
//! - all of them → `cluster` (membership decisions, pure), `relations` (db, proxy), `unit`
//!   (this unit's state file, names, data dir, crash points) → `pki` (CA, keys, CSRs),
//!   `etcd` (install, render, service, API client, snapshot stream) → `juju` (the only code
//!   that runs hook tools).

mod actions;
mod config;
#[cfg(test)]
mod fuzz;
mod hook;
mod jobs;
mod juju;
mod monitoring;
mod ops;
mod pki;
mod relations;
#[cfg(test)]
mod testing;
mod unit;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "etcd-charm",
    about = "The etcd machine charm (run by Juju through dispatch)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a hook by name (normally chosen by JUJU_DISPATCH_PATH).
    Hook { name: String },
    /// Run an action by name.
    Action { name: String },
    /// Take one scheduled snapshot (run by the unit's systemd timer, outside any hook).
    ScheduledSnapshot,
    /// A Nagios check (NRPE runs it as `nagios`): `service` (etcd runs) or `alarms` (none
    /// raised, from the list the timer keeps). Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    NagiosCheck { which: String },
    /// Refresh the alarm list the Nagios alarm check reads (run by a systemd timer as root).
    NagiosAlarmList {
        #[arg(long)]
        endpoint: String,
    },
    /// Answer one request for the charm's metrics on stdin/stdout (systemd's metrics socket
    /// runs it per connection while related over `cos-agent`).
    ServeMetrics,
    /// The built-in supervisor: runs etcd as a child, restarts it when it fails.
    Supervise {
        #[arg(long)]
        etcd: String,
        #[arg(long)]
        config: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let mut ctx = juju::Context::from_env();
    let result = match cli.cmd {
        Some(Cmd::Supervise { etcd, config }) => etcdkit::service::supervise(&etcd, &config),
        Some(Cmd::ScheduledSnapshot) => jobs::snapshots::run(),
        Some(Cmd::ServeMetrics) => monitoring::cos::serve(),
        Some(Cmd::NagiosCheck { which }) => {
            let (code, line) = monitoring::nrpe::nagios_check(&which);
            println!("{line}");
            std::process::exit(code);
        }
        Some(Cmd::NagiosAlarmList { endpoint }) => monitoring::nrpe::refresh_alarm_list(&endpoint),
        Some(Cmd::Hook { name }) => {
            ctx = ctx.for_hook(&name);
            hook::hook(&ctx)
        }
        Some(Cmd::Action { name }) => {
            ctx.action = Some(name.clone());
            ctx.dispatch = format!("actions/{name}");
            actions::run(&ctx)
        }
        None if ctx.dispatch.starts_with("actions/") => actions::run(&ctx),
        None if ctx.dispatch.starts_with("hooks/") => hook::hook(&ctx),
        None => {
            eprintln!("etcd-charm: no JUJU_DISPATCH_PATH; run it through Juju, or see --help");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        let msg = format!("{e:#}");
        eprintln!("ERROR {msg}");
        juju::log("ERROR", &msg);
        std::process::exit(1);
    }
}
