//! What the charms of this workspace share: Juju's hook tools (`juju`) and the CA code
//! (`pki`) that both the etcd charm's built-in CA and the easyrsa charm run.

pub mod juju;
pub mod pki;
pub mod secrets;
