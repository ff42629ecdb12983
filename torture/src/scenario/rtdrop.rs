//! TODO
use super::Ctx;
/// Runs the scenario.
pub fn run(_ctx: &mut Ctx) {}
