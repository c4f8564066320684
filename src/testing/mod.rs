//! Test support for whole hooks: Juju in memory (`juju`), a machine of namespaces for the
//! unit's files and its etcd (`machine`), and the hooks' tests (`hooks`).

mod hooks;
pub mod juju;
pub mod machine;
#[path = "../../tests/support/tarball.rs"]
mod tarball;
