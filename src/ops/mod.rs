//! Operations of several steps that hooks and actions share: membership changes, the
//! roll, the restore swap, relocating data, defragmentation, standing a member down, and
//! the journals that let the next run finish or undo one cut short.

pub mod claim;
pub mod defrag;
pub mod health;
pub mod member_lock;
pub mod membership;
pub mod relocate;
pub mod restore;
pub mod roll;
pub mod snap_journal;
pub mod standdown;

use anyhow::Result;

/// Operations whose process died part-way are undone (or finished) before anything else runs.
pub fn finish_interrupted() -> Result<()> {
    restore::recover_interrupted()?;
    snap_journal::recover_interrupted()
}

/// The charm's local files, checked before a hook or an action relies on them.
pub fn check_local_files() -> Result<()> {
    use crate::unit::{read_json, LocalState, LOCAL_STATE};
    read_json::<LocalState>(LOCAL_STATE)?;
    read_json::<etcdkit::install::Installed>(etcdkit::install::STATE_FILE)?;
    // The journals of a restore or snap-upgrade cut short: finished before anything else,
    // so one that cannot be read would fail every hook and action.
    restore::check_journal()?;
    snap_journal::check_journal()?;
    read_json::<crate::unit::rejected::Rejected>(crate::unit::rejected::REJECTED)?;
    Ok(())
}
