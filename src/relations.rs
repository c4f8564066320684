//! The client relations with the classic charm's wire contracts (anchor-charms §4):
//! `db` (interface `etcd`): connection_string, version, client_ca, client_cert, client_key,
//! identical on every unit; `proxy` (interface `etcd-proxy`): cluster plus the TLS trio.

use crate::juju::{self, Bag};
use crate::pki;

pub fn publish(unit: &str, view: &ClusterView, version: &str) -> anyhow::Result<()> {
    let db = juju::relation_ids("db")?;
    let proxy = juju::relation_ids("proxy")?;
    if db.is_empty() && proxy.is_empty() {
        return Ok(());
    }
    let read = |f: &str| std::fs::read_to_string(pki::path(f)).unwrap_or_default();
    let (cert, key) = (read("client.crt"), read("client.key"));
    let ca = view.ca.clone().unwrap_or_default();
    if view.members.is_empty() || cert.is_empty() || ca.is_empty() {
        return Ok(());
    }
    let trio = |b: &mut Bag, prefix: &str| {
        b.insert(format!("{prefix}ca"), ca.clone());
        b.insert(format!("{prefix}cert"), cert.clone());
        b.insert(format!("{prefix}key"), key.clone());
    };
    for rel in db {
        let mut b = Bag::new();
        b.insert("connection_string".into(), view.members.clone());
        b.insert("version".into(), version.to_string());
        trio(&mut b, "client_");
        set_if_changed(unit, &rel, b)?;
    }
    for rel in proxy {
        let mut b = Bag::new();
        b.insert("cluster".into(), view.cluster.clone());
        trio(&mut b, "client_");
        set_if_changed(unit, &rel, b)?;
    }
    Ok(())
}

fn set_if_changed(unit: &str, rel: &str, want: Bag) -> anyhow::Result<()> {
    juju::relation_update(rel, &juju::relation_get(rel, unit, false)?, want)?;
    Ok(())
}

/// What the client relations need from the peer view.
pub struct ClusterView {
    pub members: String,
    pub cluster: String,
    pub ca: Option<String>,
}
