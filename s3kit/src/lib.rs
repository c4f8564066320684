//! An S3 bucket as the etcd charm uses it: objects under one prefix, uploaded as a stream in
//! parts (memory bounded by one part whatever the object's size) with their sha256 computed
//! as they pass, read back, listed and deleted. Requests are signed by `rusty-s3` (AWS
//! signature v4, presigned) and sent by `reqwest` over rustls, trusting the endpoint's own CA
//! chain when one is given.
//!
//! Nothing here knows Juju or etcd. Errors say which of the causes an operator can act on it
//! was: the endpoint unreachable, its TLS certificate not trusted, the credentials refused,
//! the bucket missing; anything else with the server's own code and message.

mod error;
mod store;
mod target;

pub use error::Error;
pub use store::{Listed, Store, Transferred};
pub use target::{valid_bucket_name, Target, PART_SIZE};
