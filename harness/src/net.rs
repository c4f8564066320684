//! A model's network as addresses and names (pure: nothing here touches the host): the
//! bridge, the host's and each machine's addresses, namespaces and links.

/// Names of everything the host side creates for one model's network.
#[derive(Clone, Debug)]
pub struct Net {
    pub index: u8,
}

impl Net {
    pub fn bridge(&self) -> String {
        format!("chb{}", self.index)
    }
    pub fn host_address(&self) -> String {
        format!("10.213.{}.1", self.index)
    }
    pub fn machine_address(&self, machine: u32) -> String {
        format!("10.213.{}.{}", self.index, 10 + machine)
    }
    /// The machine's IPv6 unique-local address on eth0, beside its IPv4 one: what LXD's
    /// default bridge (`ipv6.address=auto`) and dual-stack clouds give every machine.
    pub fn machine_address6(&self, machine: u32) -> String {
        format!("fd42:213:{:x}::{:x}", self.index, 10 + machine)
    }
    /// The /64 the machines' IPv6 addresses are in.
    pub fn subnet6(&self) -> String {
        format!("fd42:213:{:x}::/64", self.index)
    }
    /// The address of a machine's second interface (`eth1`, model config
    /// `harness-second-interface`): a second NIC in the same space, as on MAAS.
    pub fn second_address(&self, machine: u32) -> String {
        format!("10.214.{}.{}", self.index, 10 + machine)
    }
    pub fn netns(&self, machine: u32) -> String {
        format!("chb{}m{}", self.index, machine)
    }
    pub fn host_veth(&self, machine: u32) -> String {
        format!("chb{}m{}h", self.index, machine)
    }
}
