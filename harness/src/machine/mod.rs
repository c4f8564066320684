//! Machines made of Linux namespaces.
//!
//! Host side (called by the controller): a bridge per model with a /24 from 10.213.0.0/16, a
//! named network namespace per machine joined to the bridge by a veth pair, and the machine
//! agent started inside it with fresh mount, UTS and PID namespaces (`nsenter` + `unshare`
//! from util-linux). The agent is PID 1 of its machine: killing it ends every process there.
//!
//! Agent side (`charm-harness machine-agent`): writable overlays over the host's /etc, /usr,
//! /var, /opt, /home, /root and /srv whose upper layers live under the controller's home,
//! private /tmp and /run, its own hostname, the hook tools, and a unix socket on which the
//! controller asks it to run processes. Nothing here knows any charm.
//!
//! Files: `link.rs` (the bridge, namespaces and veth links), `spawn.rs` (a machine's
//! processes started and ended), `agent.rs` (the agent inside a machine and the
//! controller's calls to it); the model's addresses are `crate::net`.

mod agent;
mod link;
mod spawn;

pub use crate::net::Net;
pub use crate::state::Kind;
pub use agent::*;
pub use link::*;
pub use spawn::*;
