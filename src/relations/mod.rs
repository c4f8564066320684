pub mod clients;
pub mod etcd_client;
pub mod s3;
