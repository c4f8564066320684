//! A running hook's context: what the hook tools act on, its buffered writes and secret operations.

use crate::state::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A running hook, action or exec: what the hook tools act on.
#[derive(Debug, Clone, Default)]
pub struct HookCtx {
    pub id: String,
    pub model: String,
    pub unit: String,
    pub app: String,
    pub event: Event,
    pub task: Option<u64>,
    pub is_action: bool,
    pub machine_root: PathBuf,
    /// (relation id, unit or app name) → key → value ("" deletes)
    pub rel_writes: BTreeMap<(u32, String), Bag>,
    pub ports: Vec<(bool, String)>,
    pub secrets: Vec<SecretOp>,
    pub state: Vec<(String, Option<String>)>,
    pub storage_add: Vec<(String, u32)>,
    pub reboot: bool,
}

#[derive(Debug, Clone)]
pub enum SecretOp {
    Add(Secret),
    Set {
        id: String,
        content: Option<Bag>,
        label: Option<String>,
        description: Option<String>,
        expire: Option<String>,
        rotate: Option<String>,
    },
    Remove {
        id: String,
        revision: Option<u32>,
    },
    Grant {
        id: String,
        relation: u32,
        unit: Option<String>,
    },
    Revoke {
        id: String,
        relation: u32,
        unit: Option<String>,
    },
}
