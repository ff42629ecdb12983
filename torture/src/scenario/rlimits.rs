//! TODO
use super::Ctx;
/// Runs the scenario.
pub fn run(_ctx: &mut Ctx) {}
/// child
pub fn child_nofile(_ctx: &Ctx) -> i32 {
    0
}
/// child
pub fn child_memlock(_ctx: &Ctx) -> i32 {
    0
}
