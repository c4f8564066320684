pub mod lock;
pub mod plan;
pub mod turn;
