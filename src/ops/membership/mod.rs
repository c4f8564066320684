pub mod apply;
pub mod leave;
pub mod plan;
