//! The workload: deliveries (`install`), config rendering (`render`, pure), the service
//! (`service`: systemd or the built-in supervisor) and the gateway API client (`client`).
//! Nothing here calls a hook tool.

pub mod api;
pub mod archive;
pub mod client;
pub mod grpc;
pub mod install;
pub mod offline;
pub mod render;
pub mod rpc;
pub mod service;
pub mod snapshot;
pub mod v2store;
pub mod version;

pub const DATA_DIR: &str = "/var/lib/etcd";
/// The snap delivery's data dir (the classic charm's snap keeps its files under common/).
pub const SNAP_DATA_DIR: &str = "/var/snap/etcd/common/data";
/// Where the `data` storage's volume is mounted (the classic charm's place, kept so a
/// takeover finds it there), and etcd's data directory on it.
pub const VOLUME_MOUNT: &str = "/media/etcd";
pub const VOLUME_DATA_DIR: &str = "/media/etcd/data";

/// The last non-empty line of a tool's output, trimmed: where etcd's tools say why they
/// failed.
pub use hostkit::text::last_line;
