pub mod clients;
pub mod s3;
