//! `charm-harness`: a local Juju for one Linux host. One binary, chosen by its name:
//! - as a hook tool (`relation-get`, `status-set`, ...): a thin client of the controller;
//! - as `juju` or `charm-harness`: the CLI (a thin client too; the controller parses);
//! - `charm-harness bootstrap`: the controller daemon (started on demand by the CLI);
//! - `charm-harness machine-agent`: PID 1 of a machine (started by the controller).
//!
//! Modules, each depending only on those listed before it (no import cycles):
//! - `flags` (gnuflag rules), `format` (smart/yaml/json), `proto` (the wire: requests,
//!   replies, hook tool names), `cgroups`;
//! - `rootfs` (a machine's filesystem: overlays, identity, tools), `boot` (systemd as a
//!   machine's PID 1), `machine` (namespaces, bridges, the machine agent);
//! - `state` (the models' data, saved to `state.json`), `controller` (model operations and
//!   hook sequencing);
//! - `tools/` (hook tools: one function per tool; `tools/secrets.rs` for secret-*),
//!   `cli/` (juju commands, one file per group: `models`, `deploy`, `apps`, `relations`,
//!   `actions`, `ssh` (scp, ssh, exec), `status`, `machines`);
//! - `server` (the controller daemon's socket: routes CLI and tool requests).

mod bases;
mod boot;
mod cgroups;
mod cli;
mod constraints;
mod controller;
mod firewall;
mod flags;
mod format;
mod machine;
mod metadata;
mod net;
mod proto;
mod rootfs;
mod server;
mod state;
mod storage;
mod tools;

use proto::{Reply, Request};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn print_and_exit(r: Reply) -> ! {
    let _ = std::io::stdout().write_all(r.stdout.as_bytes());
    let _ = std::io::stderr().write_all(r.stderr.as_bytes());
    let _ = std::io::stdout().flush();
    std::process::exit(r.code)
}

fn tool_main(tool: &str, args: Vec<String>) -> ! {
    let (Ok(context), Ok(sock)) = (
        std::env::var("JUJU_CONTEXT_ID"),
        std::env::var("JUJU_AGENT_SOCKET_ADDRESS"),
    ) else {
        print_and_exit(Reply::err(1, format!("{tool}: not running in a hook context (JUJU_CONTEXT_ID and JUJU_AGENT_SOCKET_ADDRESS unset)")));
    };
    let reads_stdin = ["relation-set", "state-set", "secret-add", "secret-set"].contains(&tool)
        && (args
            .windows(2)
            .any(|w| w[0].trim_start_matches('-') == "file" && w[1] == "-")
            || args.iter().any(|a| a.trim_start_matches('-') == "file=-"));
    let stdin = reads_stdin.then(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_to_string(&mut s);
        s
    });
    let req = Request::Tool {
        tool: tool.to_string(),
        args,
        context,
        stdin,
    };
    match proto::call::<_, Reply>(Path::new(&sock), &req) {
        Ok(r) => print_and_exit(r),
        Err(e) => print_and_exit(Reply::err(
            1,
            format!("cannot reach the controller at {sock}: {e}"),
        )),
    }
}

/// Connects to the controller, starting it first if nothing answers.
fn ensure_controller(home: &Path) -> std::io::Result<()> {
    let sock = proto::controller_socket(home);
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        return Ok(());
    }
    std::fs::create_dir_all(home)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("controller.log"))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("bootstrap")
        .env("CHARM_HARNESS_HOME", home)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another controller may have won the race for this home.
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "the controller exited ({status}); see {}",
                    home.join("controller.log").display()
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "the controller did not start; see {}",
                home.join("controller.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill_controller(home: &Path) -> ! {
    let sock = proto::controller_socket(home);
    if std::os::unix::net::UnixStream::connect(&sock).is_err() {
        print_and_exit(match server::destroy_unreachable(home) {
            Ok(()) => Reply::ok(""),
            Err(e) => Reply::err(1, format!("{e:#}")),
        });
    }
    let pid: Option<i32> = std::fs::read_to_string(home.join("run").join("controller.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let r = proto::call::<_, Reply>(&sock, &Request::Shutdown)
        .unwrap_or_else(|e| Reply::err(1, e.to_string()));
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    print_and_exit(r)
}

/// `charm-harness machine-agent`: a machine's agent (booting its namespaces), or with
/// `--serve` the agent's server inside the machine.
fn machine_agent(args: &[String]) -> anyhow::Result<()> {
    let p = flags::parse(
        &[
            flags::value(&["dir"]),
            flags::value(&["home"]),
            flags::value(&["hostname"]),
            flags::value(&["address"]),
            flags::value(&["machine"]),
            flags::value(&["kind"]),
            flags::value(&["serve"]),
        ],
        args,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(sock) = p.value("serve") {
        return machine::serve_main(Path::new(sock));
    }
    let kind = p
        .value("kind")
        .and_then(machine::Kind::parse)
        .unwrap_or_default();
    machine::agent_main(
        PathBuf::from(p.value("dir").unwrap_or_default()),
        PathBuf::from(p.value("home").unwrap_or_default()),
        p.value("hostname").unwrap_or("machine").to_string(),
        p.value("address").unwrap_or_default().to_string(),
        p.value("machine").and_then(|m| m.parse().ok()).unwrap_or(0),
        kind,
    )
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = PathBuf::from(args.remove(0));
    let name = argv0
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    if proto::TOOL_NAMES.contains(&name.as_str()) {
        tool_main(&name, args);
    }
    if name == "jujud" {
        println!("{}-debian-amd64", controller::JUJU_VERSION);
        return;
    }
    let home = proto::home();
    match args.first().map(String::as_str) {
        Some("bootstrap") => {
            if let Err(e) = server::bootstrap(home) {
                eprintln!("ERROR {e:#}");
                std::process::exit(1);
            }
            return;
        }
        Some("machine-agent") => {
            if let Err(e) = machine_agent(&args[1..]) {
                eprintln!("machine agent: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        Some("kill-controller") => kill_controller(&home),
        Some("help") | Some("--help") | Some("-h") | None => {
            print_and_exit(Reply::ok("usage: charm-harness <command> [args]  (also answers as `juju`)\nsee README.md for the commands\n"));
        }
        _ => {}
    }
    if let Some(tool) = args
        .first()
        .filter(|a| proto::TOOL_NAMES.contains(&a.as_str()))
        .cloned()
    {
        // `charm-harness relation-get ...` works like the tool itself.
        tool_main(&tool, args[1..].to_vec());
    }
    if let Err(e) = ensure_controller(&home) {
        print_and_exit(Reply::err(1, format!("cannot start the controller: {e}")));
    }
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into());
    let req = Request::Cli {
        args,
        cwd,
        model: std::env::var("JUJU_MODEL").ok(),
        charmhub: std::env::var("CHARM_HARNESS_CHARMHUB").ok(),
        client: std::env::var("CHARM_HARNESS_CLIENT").ok(),
    };
    match proto::call::<_, Reply>(&proto::controller_socket(&home), &req) {
        Ok(r) => print_and_exit(r),
        Err(e) => print_and_exit(Reply::err(1, format!("controller: {e}"))),
    }
}
