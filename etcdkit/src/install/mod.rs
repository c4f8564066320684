//! Deliveries of the etcd binaries (docs/ARCHITECTURE.md §3.3): an upstream release tarball from the
//! `etcd` resource or a pinned URL (sha256 verified while streaming, unpacked defensively
//! into a staging dir, switched in by moving the `current` link), the Debian package, or the
//! snap. A delivery only provides binaries; the charm owns config, certificates and data.
//!
//! Files: `common` (the error, delivery kinds, tool runners), `record` (install.json, versions),
//! `unpack` (tar safety), `archive`, `download`, `deb`, `snap`, and `switch` (a staged
//! delivery switched in a rolling turn, committed or rolled back).

mod archive;
mod common;
mod deb;
mod download;
mod record;
mod snap;
mod switch;
mod unpack;

pub use archive::*;
pub use common::*;
pub use deb::*;
pub use download::*;
pub use record::*;
pub use snap::*;
pub use switch::*;
pub use unpack::*;

#[cfg(test)]
mod tests;
