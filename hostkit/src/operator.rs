//! Files meant for the operator: owned by the user `juju scp` and `juju ssh` log in as.

use std::path::Path;

use crate::fs::create_private;

/// The user `juju scp` and `juju ssh` log in as (Juju's default, cloud images' default user).
pub const OPERATOR_USER: &str = "ubuntu";

/// The operator user's uid and gid, or None on a machine without that user.
fn operator_ids() -> std::io::Result<Option<(u32, u32)>> {
    Ok(nix::unistd::User::from_name(OPERATOR_USER)
        .map_err(std::io::Error::from)?
        .map(|u| (u.uid.as_raw(), u.gid.as_raw())))
}

/// Creates (or truncates) a file meant for the operator to fetch with `juju scp`: 0600 from
/// its creation and owned by the `ubuntu` user when the machine has one (real `juju scp`
/// reads as that user, never as root), so no other user can read it, even for a moment.
/// A chown that fails is an error: the operator could not fetch the file.
pub fn create_operator_file(p: &Path) -> std::io::Result<std::fs::File> {
    let f = create_private(p)?;
    if let Some((uid, gid)) = operator_ids()? {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    Ok(f)
}

/// Gives a directory made for the operator (a snapshot target the charm created) to the
/// `ubuntu` user, so `juju scp` can reach what is in it. Nothing when there is no such user.
pub fn give_to_operator(p: &Path) -> std::io::Result<()> {
    if let Some((uid, gid)) = operator_ids()? {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
    }
    Ok(())
}
