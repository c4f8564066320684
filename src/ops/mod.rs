pub mod claim;
pub mod defrag;
pub mod member_lock;
pub mod membership;
pub mod relocate;
pub mod roll;
pub mod standdown;
