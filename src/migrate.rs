//! The snap-upgrade action (placeholder until implemented).
use crate::juju::Context;
use anyhow::Result;
use serde_json::Value;

pub fn snap_upgrade(
    _ctx: &Context,
    _params: &std::collections::BTreeMap<String, Value>,
) -> Result<Vec<(String, String)>> {
    Err(crate::actions::Refused("snap-upgrade is not implemented yet".into()).into())
}
