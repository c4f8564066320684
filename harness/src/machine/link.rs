//! The host side of a model's network: its bridge, and per machine a named network
//! namespace joined to it by a veth pair (with a second interface when asked), links cut
//! and restored.

use crate::net::Net;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Claims a free bridge index: creating the bridge is the atomic claim, so two controllers
/// never share a subnet.
pub fn create_bridge(preferred: Option<u8>) -> Result<Net> {
    if let Some(i) = preferred {
        let net = Net { index: i };
        if !link_exists(&net.bridge()) {
            setup_bridge(&net)?;
        }
        return Ok(net);
    }
    // Start at a random index so a name just released by one controller is rarely reused at
    // once by another (tests run several controllers side by side).
    let start: u16 = rand::random::<u16>() % 250;
    for k in 0..250u16 {
        let net = Net {
            index: ((start + k) % 250 + 1) as u8,
        };
        if link_exists(&net.bridge()) {
            continue;
        }
        // Creating the bridge is the claim; a concurrent controller's claim fails here.
        if setup_bridge(&net).is_ok() {
            return Ok(net);
        }
    }
    bail!("no free subnet in 10.213.0.0/16: remove unused chb* bridges (ip link del chbN)")
}

fn setup_bridge(net: &Net) -> Result<()> {
    ip(&["link", "add", &net.bridge(), "type", "bridge"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", net.host_address()),
        "dev",
        &net.bridge(),
    ])?;
    ip(&["link", "set", &net.bridge(), "up"])
}

/// Best effort: a bridge already gone is the aim; one that stays, the leak check names.
pub fn delete_bridge(net: &Net) {
    let _ = ip(&["link", "del", &net.bridge()]);
}

/// The network namespace and veth of one machine, with an IPv4 and an IPv6 unique-local
/// address on eth0 and, when `second_nic`, a second interface eth1 with an address of its
/// own. Safe to call again: existing parts are kept.
///
/// `hold`, for tests (model config `harness-hold-at=veth`): once the veth pair exists on the
/// host, and before it moves into the namespace, the file is created and creation waits
/// (up to a minute) until it is gone: a moment too short to hit by timing.
pub fn create_netns(net: &Net, machine: u32, second_nic: bool, hold: Option<&Path>) -> Result<()> {
    let ns = net.netns(machine);
    let host = net.host_veth(machine);
    if Path::new("/run/netns").join(&ns).exists() && link_exists(&host) {
        return Ok(());
    }
    delete_netns(net, machine);
    let peer = format!("chb{}m{}c", net.index, machine);
    ip(&["netns", "add", &ns])?;
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
    if let Some(hold) = hold {
        hold_at(hold)?;
    }
    ip(&["link", "set", &peer, "netns", &ns])?;
    ip(&["link", "set", &host, "master", &net.bridge(), "up"])?;
    ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{}/24", net.machine_address(machine)),
        "dev",
        "eth0",
    ])?;
    // nodad: the address is usable at once (no duplicate detection on a bridge we own).
    ip(&[
        "-n",
        &ns,
        "-6",
        "addr",
        "add",
        &format!("{}/64", net.machine_address6(machine)),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    if second_nic {
        // A veth pair inside the machine (the kernel may lack the dummy driver): an address
        // in the binding like a second NIC's, which nothing outside the machine routes to
        // (the charm must not depend on it).
        ip(&[
            "-n", &ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth1p", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", net.second_address(machine)),
            "dev",
            "eth1",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth1", "up"])?;
    }
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Creates `file` and waits until something removes it (a test's hold point), or a minute.
/// The file's directory is the model's: never made here (a destroyed model's stays gone).
pub fn hold_at(file: &Path) -> Result<()> {
    std::fs::write(file, b"")
        .with_context(|| format!("creating the hold point {}", file.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

/// Best effort, as `delete_bridge`: each part may be gone already (the namespace takes its
/// veth with it).
pub fn delete_netns(net: &Net, machine: u32) {
    let _ = ip(&["link", "del", &net.host_veth(machine)]);
    let _ = ip(&["netns", "del", &net.netns(machine)]);
}

/// Removes what the host holds for a machine whose processes are gone: its network
/// namespace and veth, and its cgroups.
pub fn remove_host_parts(net: &Net, machine: u32) {
    delete_netns(net, machine);
    if let Err(e) = crate::cgroups::remove(&net.netns(machine)) {
        eprintln!("machine {machine}: {e:#}");
    }
}

/// Cuts a machine off the network (both ways) or heals it.
pub fn set_link(net: &Net, machine: u32, up: bool) -> Result<()> {
    ip(&[
        "link",
        "set",
        &net.host_veth(machine),
        if up { "up" } else { "down" },
    ])
}
