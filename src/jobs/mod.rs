pub mod offsite;
pub mod snapshots;
