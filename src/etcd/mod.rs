//! The workload: deliveries (`install`), config rendering (`render`, pure), the service
//! (`service`: systemd or the built-in supervisor) and the gateway API client (`client`).
//! Nothing here calls a hook tool.

pub mod client;
pub mod install;
pub mod render;
pub mod service;

pub const DATA_DIR: &str = "/var/lib/etcd";
