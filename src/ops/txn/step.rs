//! The operations a transaction belongs to and the steps it records, each with what
//! undoes it (`undo.rs`).

use crate::unit::LocalState;
use etcdkit::install::Installed;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The operation a transaction belongs to (what the log and the refusals name).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Op {
    Restore,
    Recover,
    SnapUpgrade,
    /// the install action's re-install from the `etcd` resource
    Install,
    /// this unit's restart in its rolling turn
    Turn,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Restore => "a restore",
            Op::Recover => "a recover",
            Op::SnapUpgrade => "a snap-upgrade",
            Op::Install => "the install action",
            Op::Turn => "a rolling restart",
        }
    }
}

/// The unit's record of the cluster its member belongs to (how it was first started).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Cluster {
    pub initial_cluster: Option<String>,
    pub initial_state: Option<String>,
    pub token: Option<String>,
    pub epoch: Option<String>,
}

impl Cluster {
    pub(crate) fn of(st: &LocalState) -> Cluster {
        Cluster {
            initial_cluster: st.initial_cluster.clone(),
            initial_state: st.initial_state.clone(),
            token: st.token.clone(),
            epoch: st.epoch.clone(),
        }
    }
    pub(crate) fn apply(self, st: &mut LocalState) {
        st.initial_cluster = self.initial_cluster;
        st.initial_state = self.initial_state;
        st.token = self.token;
        st.epoch = self.epoch;
    }
}

/// One change, with what undoes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub(crate) enum Step {
    /// A directory made to hold what is set aside. Undo: removed when empty; anything left
    /// in it stays for the operator.
    MadeDir { path: PathBuf },
    /// `from` moved to `to`. Undo: what stands at `from` then goes aside as
    /// `<displaced>-<time>` beside it (an empty directory just goes), and `to` moves back.
    Moved {
        from: PathBuf,
        to: PathBuf,
        displaced: String,
    },
    /// A whole copy of `original` at `copy` (made as `<copy>.partial`, renamed once
    /// complete). Undo: a complete copy replaces the original as `Moved` does; a partial
    /// one goes (its original was never touched).
    Copied {
        original: PathBuf,
        copy: PathBuf,
        displaced: String,
    },
    /// The file held `before` (0644: etcd's config). Undo: written back.
    File { path: PathBuf, before: String },
    /// The unit's cluster record was this. Undo: put back in the local state.
    Cluster(Cluster),
    /// The install record and the `current` link of the archive delivery were these.
    /// Undo: both put back.
    Binaries {
        before: Installed,
        link: Option<PathBuf>,
    },
    /// Staged binaries switched in through the install record (its `previous`). Undo: the
    /// install record's roll back, when it holds a `previous`.
    Switched,
    /// The etcd snap was at `revision` with this install record. Undo: that revision
    /// again (`snap revert`), when another is current, and the record.
    SnapRevision {
        revision: Option<String>,
        before: Installed,
    },
}
