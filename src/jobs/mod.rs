pub mod offsite;
pub mod sealed;
pub mod snapshots;
