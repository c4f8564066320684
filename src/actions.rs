//! The actions (classic names, params and result keys; anchor-charms §4.4).

use crate::juju::{self, Context};
use anyhow::Result;

pub fn run(ctx: &Context) -> Result<()> {
    let name = ctx.action.clone().unwrap_or_default();
    juju::action_fail(&format!("action {name:?} is not implemented yet"))?;
    Ok(())
}
