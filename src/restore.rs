//! The restore action (placeholder until implemented).
use crate::juju::Context;
use anyhow::Result;
use serde_json::Value;

pub fn restore(_ctx: &Context, _params: &std::collections::BTreeMap<String, Value>) -> Result<Vec<(String, String)>> {
    Err(crate::actions::Refused("restore is not implemented yet".into()).into())
}
