//! The wire between the CLI, the hook tools, the controller and the machine agents:
//! one JSON request line per connection, one JSON reply line. Clients are blocking and
//! tiny (no async runtime), so a hook-tool call costs a process start and one round trip.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// What a client asks of the controller.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Request {
    /// A `juju`/`charm-harness` command line, parsed by the controller.
    Cli {
        args: Vec<String>,
        cwd: String,
        model: Option<String>,
        /// The client's `CHARM_HARNESS_CHARMHUB` (charm names resolve where the command
        /// was typed, as Juju's client resolves them).
        #[serde(default)]
        charmhub: Option<String>,
        /// The client's `CHARM_HARNESS_CLIENT`: `2.9` for a Juju 2.9 client's commands
        /// (`run-action`, `show-action-output`, `attach`, `upgrade-charm`, `add-relation`,
        /// `run` as exec); anything else, or unset, is Juju 3.6's client.
        #[serde(default)]
        client: Option<String>,
    },
    /// A hook tool called inside a hook, action or exec context.
    Tool {
        tool: String,
        args: Vec<String>,
        context: String,
        stdin: Option<String>,
    },
    /// Stop everything the controller started and exit.
    Shutdown,
}

/// The answer to every request: what to print and the exit code.
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct Reply {
    pub code: i32,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
}

impl Reply {
    pub fn ok(stdout: impl Into<String>) -> Reply {
        Reply {
            code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    pub fn err(code: i32, msg: impl AsRef<str>) -> Reply {
        Reply {
            code,
            stdout: String::new(),
            stderr: format!("ERROR {}\n", msg.as_ref()),
        }
    }
}

/// What the controller asks of a machine agent.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AgentRequest {
    Ping,
    /// Run a process inside the machine and report how it ended.
    Run {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: String,
    },
}

#[derive(Serialize, Deserialize, Debug, Default)]
pub struct AgentReply {
    pub code: i32,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub error: Option<String>,
    /// the process's peak resident memory (wait4's ru_maxrss), in KiB
    #[serde(default)]
    pub max_rss_kb: Option<u64>,
}

/// Sends one request and reads one reply, blocking.
pub fn call<Q: Serialize, A: for<'de> Deserialize<'de>>(
    socket: &Path,
    req: &Q,
) -> std::io::Result<A> {
    let mut s = UnixStream::connect(socket)?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut r = BufReader::new(s);
    let mut buf = String::new();
    r.read_line(&mut buf)?;
    if buf.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the controller closed the connection",
        ));
    }
    Ok(serde_json::from_str(&buf)?)
}

/// The controller's home: state, sockets, machine layers. `CHARM_HARNESS_HOME` or /tmp/charm-harness.
pub fn home() -> PathBuf {
    std::env::var_os("CHARM_HARNESS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/charm-harness"))
}

pub fn controller_socket(home: &Path) -> PathBuf {
    home.join("run").join("controller.sock")
}

/// Where machines see the controller's socket directory.
pub const MACHINE_SOCKET_DIR: &str = "/var/lib/juju/harness";
/// Where a systemd machine sees its own directory of the controller's home (the agent's socket).
pub const MACHINE_DIR: &str = "/var/lib/juju/harness-machine";
pub const MACHINE_TOOLS_BIN: &str = "/var/lib/juju/tools/bin";

pub const TOOL_NAMES: &[&str] = &[
    "action-fail",
    "action-get",
    "action-log",
    "action-set",
    "add-metric",
    "application-version-set",
    "close-port",
    "config-get",
    "credential-get",
    "goal-state",
    "is-leader",
    "juju-log",
    "juju-reboot",
    "leader-get",
    "leader-set",
    "network-get",
    "open-port",
    "opened-ports",
    "relation-get",
    "relation-ids",
    "relation-list",
    "relation-model-get",
    "relation-set",
    "resource-get",
    "secret-add",
    "secret-get",
    "secret-grant",
    "secret-ids",
    "secret-info-get",
    "secret-remove",
    "secret-revoke",
    "secret-set",
    "state-delete",
    "state-get",
    "state-set",
    "status-get",
    "status-set",
    "storage-add",
    "storage-get",
    "storage-list",
    "unit-get",
];
