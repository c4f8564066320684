//! The machine under the etcd charm, as any machine-level code needs it: atomic private
//! files and the charm's JSON records (`fs`), systemd units and timers (`systemd`), waiting
//! for a condition (`poll`), test crash points (`crash`), the clock (`clock`), processes
//! (`process`), files for the operator (`operator`), bounded text for messages (`text`) and block devices given to the machine
//! (`volume`). Nothing here knows Juju or etcd.
//!
//! Layout: every module is a leaf; none imports another but `fs` (used by `systemd` and `volume`) and `text`
//! (used by `volume`).

pub mod clock;
pub mod crash;
pub mod fs;
pub mod operator;
pub mod poll;
pub mod process;
pub mod systemd;
pub mod text;
pub mod volume;
