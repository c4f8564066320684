//! The transaction record: begun, its steps recorded before they are taken, committed or
//! rolled back; and the undo of one a kill left.

use super::legacy;
use super::step::{Cluster, Op, Step};
use super::undo;
use crate::juju;
use crate::unit::{self, LocalState};
use anyhow::{bail, Context as _, Result};
use etcdkit::install::Installed;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the transaction under way is recorded.
pub(crate) const FILE: &str = "/var/lib/etcd-charm/txn.json";

/// A transaction under way: its operation and its steps so far.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Txn {
    pub op: Op,
    pub steps: Vec<Step>,
    #[serde(skip, default = "default_file")]
    file: PathBuf,
}

fn default_file() -> PathBuf {
    PathBuf::from(FILE)
}

impl Txn {
    /// A new transaction for `op`; nothing is written until its first step. Refused while
    /// another one is recorded (the next hook finishes or undoes that one first).
    pub(crate) fn begin(op: Op) -> Result<Txn> {
        Txn::begin_at(Path::new(FILE), op)
    }

    pub(crate) fn begin_at(file: &Path, op: Op) -> Result<Txn> {
        if let Some(other) = Txn::load_at(file)? {
            bail!(
                "{} is unfinished on this unit ({}); the next hook finishes or undoes it, then run this again",
                other.op.name(),
                file.display()
            );
        }
        Ok(Txn {
            op,
            steps: vec![],
            file: file.to_path_buf(),
        })
    }

    /// The transaction recorded, if any: the file, or the journals this charm wrote
    /// before the transaction had one type (converted, so a charm refreshed while one was
    /// open still finishes it). A record that cannot be read is an error, never "none".
    pub(crate) fn load() -> Result<Option<Txn>> {
        if let Some(t) = Txn::load_at(Path::new(FILE))? {
            return Ok(Some(t));
        }
        let Some((op, steps)) = legacy::convert()? else {
            return Ok(None);
        };
        let t = Txn {
            op,
            steps,
            file: PathBuf::from(FILE),
        };
        t.save()?;
        legacy::remove()?;
        Ok(Some(t))
    }

    pub(crate) fn load_at(file: &Path) -> Result<Option<Txn>> {
        let path = file
            .to_str()
            .context("the transaction's path is not UTF-8")?;
        Ok(unit::read_json::<Txn>(path)?.map(|mut t| {
            t.file = file.to_path_buf();
            t
        }))
    }

    fn save(&self) -> Result<()> {
        let path = self
            .file
            .to_str()
            .context("the transaction's path is not UTF-8")?;
        unit::write_json(path, self)
    }

    /// Records a step before it is taken: from here a kill leaves what undoes it.
    pub(crate) fn record(&mut self, step: Step) -> Result<()> {
        self.steps.push(step);
        self.save()
    }

    /// Whether a step like `step` is recorded (one of its kind, e.g. `File` of any path).
    pub(crate) fn has(&self, step: impl Fn(&Step) -> bool) -> bool {
        self.steps.iter().any(step)
    }

    /// The content a `File` step kept of `path`.
    pub(crate) fn kept_file(&self, path: &Path) -> Option<&str> {
        self.steps.iter().find_map(|s| match s {
            Step::File { path: p, before } if p == path => Some(before.as_str()),
            _ => None,
        })
    }

    /// Moves `from` to `to`, recorded first (an undo moves it back).
    pub(crate) fn move_aside(&mut self, from: &Path, to: &Path, displaced: &str) -> Result<()> {
        self.record(Step::Moved {
            from: from.into(),
            to: to.into(),
            displaced: displaced.into(),
        })?;
        std::fs::rename(from, to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))
    }

    /// Makes a private directory to hold what is set aside, recorded first.
    pub(crate) fn make_dir(&mut self, path: &Path) -> Result<()> {
        self.record(Step::MadeDir { path: path.into() })?;
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| format!("making {} private", path.display()))
    }

    /// Writes `text` to the file at `path` (0644), what it held recorded first.
    pub(crate) fn replace_file(&mut self, path: &Path, text: &str) -> Result<()> {
        let before = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} before it is replaced", path.display()))?;
        self.record(Step::File {
            path: path.into(),
            before,
        })?;
        crate::pki::write_file(path, text.as_bytes(), 0o644)?;
        Ok(())
    }

    /// Saves `st` with the cluster record `new`, the one it had recorded first.
    pub(crate) fn set_cluster(&mut self, st: &mut LocalState, new: Cluster) -> Result<()> {
        self.record(Step::Cluster(Cluster::of(st)))?;
        new.apply(st);
        st.save()
    }

    /// Keeps what was done: nothing is undone from here.
    pub(crate) fn commit(self) -> Result<()> {
        unit::remove_if_present(&self.file)
    }

    /// Undoes the steps, last first, saving after each; the record goes once all are
    /// undone. etcd's service is left as it is (see `undo`).
    pub(crate) fn roll_back(mut self) -> Result<()> {
        while let Some(step) = self.steps.last().cloned() {
            undo::step(&step).with_context(|| format!("undoing {}", self.op.name()))?;
            self.steps.pop();
            self.save()?;
            unit::crash_point(&format!("txn-undo-{}", self.steps.len()));
        }
        self.commit()
    }

    /// Undoes the whole operation: etcd stopped, the steps undone, etcd started again on
    /// what ran before.
    pub(crate) fn undo(self) -> Result<()> {
        // The binaries the install record names at each moment: the undo may switch them.
        let svc = || etcdkit::service::Service {
            etcd_binary: Installed::load().map(|i| i.etcd()).unwrap_or_default(),
        };
        svc().stop().context("stopping etcd to undo")?;
        self.roll_back()?;
        svc().start().context("starting etcd on what ran before")?;
        Ok(())
    }
}

/// Undoes an operation whose process died part-way, before anything else runs: every
/// hook and action calls this first. A rolling turn is left to the hook's reconcile,
/// which finishes it (`roll::turn::resume`).
pub fn finish_interrupted() -> Result<()> {
    let Some(t) = Txn::load()? else {
        return Ok(());
    };
    if t.op == Op::Turn {
        return Ok(());
    }
    juju::log(
        "WARNING",
        &format!(
            "{} was interrupted before its result was proven; undoing its {} step(s)",
            t.op.name(),
            t.steps.len()
        ),
    );
    t.undo()
}

/// The recorded transaction, if any, is readable (one that is not blocks the unit).
pub(crate) fn check() -> Result<()> {
    legacy::check()?;
    Txn::load_at(Path::new(FILE)).map(|_| ())
}
