pub mod clients;
pub mod peers;
