//! One persisted transaction for every operation of several steps that takes this unit's
//! member down: restore, recover, snap-upgrade, the install action and the rolling turn.
//!
//! Before a step changes the machine, the transaction records how to undo it (a [`Step`])
//! and is saved to [`FILE`]. Once the operation's result is proven (its member answers
//! healthy) it is committed: the record goes and nothing is undone any more. Until then a
//! failure undoes it in the operation itself, and a kill leaves the record for the next
//! hook or action, which undoes it before anything else ([`finish_interrupted`]). The one
//! exception is the rolling turn: the hook finishes it its own way (it restarts and gives
//! the verdict, `roll::turn::resume`), and undoes it only when the verdict is no.
//!
//! Undo runs the steps in reverse and saves after each, so an undo that is itself killed
//! goes on where it stopped; each step's undo can run twice. Nothing is deleted: what stands
//! where a step puts something back is set aside under a name of its own (rustup's
//! transaction, `dist/component/transaction.rs`, made persistent as etcd-charm needs it).
//! Only a partial copy goes, whose original was never touched.
//!
//! Must not: decide whether an operation may run, or check health (the operations do).

mod legacy;
mod record;
mod step;
mod undo;

pub use record::finish_interrupted;
pub(crate) use record::{check, Txn};
pub(crate) use step::{Cluster, Op, Step};
pub(crate) use undo::partial;

#[cfg(test)]
mod tests;
