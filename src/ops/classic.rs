//! A running deployment of the classic etcd charm on this machine: what `juju refresh etcd
//! --switch` from it leaves this charm to find (../shared/classic-footprint.md): the
//! `etcd` snap's service on `/var/snap/etcd/common/etcd.conf.yml`, a file this charm never
//! writes (its own config is /etc/etcd/etcd.conf.yml), and none of this charm's records.
//!
//! Taking such a member over in place (its data, certificates, member name and ID) is not
//! built yet (issue 26). Until it is, a unit that finds one touches nothing: not the snap,
//! not the data, not even this charm's own directory; its hooks say why and what to do,
//! and its actions refuse. The classic cluster keeps serving its clients all along.

use anyhow::{Context as _, Result};
use std::path::Path;

/// The classic charm's etcd config (its snap's `$SNAP_COMMON`).
pub const CLASSIC_CONFIG: &str = "/var/snap/etcd/common/etcd.conf.yml";

/// What a unit that finds the classic footprint says, in its status and its actions.
pub const NOT_TAKEN_OVER: &str = "this machine runs the classic etcd charm's etcd \
    (snap.etcd.etcd): this charm does not take it over yet and touches nothing; switch \
    back to the classic charm (juju refresh etcd --switch ch:etcd --channel <the channel it \
    came from>)";

/// Whether this machine holds the classic charm's etcd and nothing of this charm.
pub fn untaken() -> Result<bool> {
    untaken_in(Path::new("/"))
}

fn untaken_in(root: &Path) -> Result<bool> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let exists = |p: &str| {
        at(p)
            .try_exists()
            .with_context(|| format!("looking for {p}"))
    };
    Ok(exists(CLASSIC_CONFIG)?
        && !exists(crate::unit::LOCAL_STATE)?
        && !exists(etcdkit::install::STATE_FILE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, p: &str) {
        let f = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "x").unwrap();
    }

    #[test]
    fn the_classic_config_without_this_charms_records_is_an_untaken_member() {
        let d = tempfile::tempdir().unwrap();
        assert!(!untaken_in(d.path()).unwrap(), "nothing there");
        put(d.path(), CLASSIC_CONFIG);
        assert!(untaken_in(d.path()).unwrap());
        // This charm's own snap delivery keeps its config in /etc/etcd: once it has
        // records here, the machine is its own.
        put(d.path(), crate::unit::LOCAL_STATE);
        assert!(!untaken_in(d.path()).unwrap());
    }
}
