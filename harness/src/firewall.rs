//! The cloud's firewall, as Juju's `firewall-mode: instance` gives it on a cloud: from
//! outside the model (here: the host) a machine answers only on the ports its units opened
//! (`open-port`) and only for exposed applications (`juju expose`); machines of one model
//! always reach each other on every port. It is an nftables table in each machine's network
//! namespace, replaced in one transaction whenever ports, exposure or the mode change.
//! `firewall-mode: none` removes it (everything reachable, as on a provider without one).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::process::{Command, Stdio};

const TABLE: &str = "inet juju-firewall";

/// The nftables script for one machine: `host` is the model bridge's address on the host
/// side, `open` the ports open to it (`2379/tcp`, `1000-2000/udp`, `icmp`). `None` (mode
/// none): the table removed.
pub fn ruleset(host: &str, open: Option<&[String]>) -> String {
    // Declaring the table first makes the delete succeed when it does not exist yet.
    let mut s = format!("table {TABLE} {{}}\ndelete table {TABLE}\n");
    let Some(open) = open else {
        return s;
    };
    s.push_str(&format!(
        "table {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         iif \"lo\" accept\n    ct state established,related accept\n    \
         ip saddr != {host} accept\n"
    ));
    for p in open {
        match p.split_once('/') {
            Some((range, proto @ ("tcp" | "udp"))) => {
                s.push_str(&format!("    {proto} dport {range} accept\n"))
            }
            _ if p == "icmp" => s.push_str("    meta l4proto { icmp, ipv6-icmp } accept\n"),
            // open-port validated the form; anything else opens nothing
            _ => {}
        }
    }
    s.push_str("    drop\n  }\n}\n");
    s
}

/// Loads `script` into the network namespace `netns`. Without nftables on the host, only a
/// script that removes the table (mode none) succeeds: there is nothing to remove.
/// The nftables script for one machine of `m`.
pub fn for_machine(m: &crate::state::Model, machine: u32) -> String {
    ruleset(&m.net().host_address(), m.open_ports(machine).as_deref())
}

pub fn apply(netns: &str, script: &str) -> Result<()> {
    let installed = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if !installed {
        if !script.contains("chain") {
            return Ok(());
        }
        bail!("nft (nftables) is not installed on the host: install it (firewall-mode=instance needs it) or set model config firewall-mode=none");
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (nftables) in the machine's network namespace")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_opened_ports_of_exposed_units_pass_from_the_host() {
        let s = ruleset("10.213.1.1", Some(&["2379/tcp".into(), "icmp".into()]));
        assert!(s.contains("ip saddr != 10.213.1.1 accept"), "{s}");
        assert!(s.contains("tcp dport 2379 accept"), "{s}");
        assert!(s.contains("icmp"), "{s}");
        assert!(s.trim_end().ends_with("drop\n  }\n}"), "{s}");
        let closed = ruleset("10.213.1.1", Some(&[]));
        assert!(!closed.contains("dport"), "{closed}");
        let none = ruleset("10.213.1.1", None);
        assert!(!none.contains("chain"), "{none}");
    }
}
