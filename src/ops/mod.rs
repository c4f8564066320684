//! Operations of several steps that hooks and actions share: membership changes, the
//! roll, the restore swap, relocating data, defragmentation, standing a member down, and
//! the one transaction that lets the next run finish or undo one cut short.

pub mod claim;
pub mod classic;
pub mod defrag;
pub mod health;
pub mod member_lock;
pub mod membership;
pub mod relocate;
pub mod restore;
pub mod roll;
pub mod standdown;
pub mod txn;

use anyhow::Result;

/// Operations whose process died part-way are undone (or finished) before anything else runs.
pub fn finish_interrupted() -> Result<()> {
    txn::finish_interrupted()
}

/// The charm's local files, checked before a hook or an action relies on them.
pub fn check_local_files() -> Result<()> {
    use crate::unit::{read_json, LocalState, LOCAL_STATE};
    read_json::<LocalState>(LOCAL_STATE)?;
    read_json::<etcdkit::install::Installed>(etcdkit::install::STATE_FILE)?;
    // The transaction of an operation cut short: finished before anything else, so one
    // that cannot be read would fail every hook and action.
    txn::check()?;
    read_json::<crate::unit::rejected::Rejected>(crate::unit::rejected::REJECTED)?;
    Ok(())
}
