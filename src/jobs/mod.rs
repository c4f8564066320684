pub mod snapshots;
