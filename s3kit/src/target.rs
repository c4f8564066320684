//! Where the objects go, and the limits of S3 names and parts.

/// Where the objects go and who signs for them (serializable: a caller may keep it in a
/// private file for a job that runs later).
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// `http://…` or `https://…`, with a port when not the scheme's
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// path-style URLs (`endpoint/bucket/key`) rather than virtual hosts (`bucket.endpoint/key`)
    pub path_style: bool,
    /// the folder inside the bucket, without leading or trailing `/` (may be empty)
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
    /// `x-amz-storage-class` for uploads
    pub storage_class: Option<String>,
    /// PEM certificates to trust for the endpoint (its CA chain), besides the usual roots
    pub ca_pems: Vec<String>,
}

impl std::fmt::Debug for Target {
    // The secret key never reaches a log or an error.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .field("access_key", &self.access_key)
            .field("storage_class", &self.storage_class)
            .field("ca_pems", &self.ca_pems.len())
            .finish_non_exhaustive()
    }
}

/// The size of one uploaded part (S3 takes 5 MiB to 5 GiB, at most 10,000 parts: objects up
/// to 80 GiB at this size). The upload holds one part in memory at a time.
pub const PART_SIZE: usize = 8 << 20;

/// A bucket name S3 accepts (3–63 lowercase letters, digits, dots and hyphens, beginning and
/// ending with a letter or digit).
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for ok in ["etcd", "etcd-backups", "a.b.c", "b12"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "Etcd",
            "-etcd",
            "etcd-",
            "a..b",
            "etcd/x",
            "é-etcd",
            &"a".repeat(64),
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_secret_key_is_not_in_the_debug_text() {
        let t = Target {
            endpoint: "http://10.0.0.1:8333".into(),
            region: "us-east-1".into(),
            bucket: "etcd".into(),
            path_style: true,
            prefix: String::new(),
            access_key: "AKIA".into(),
            secret_key: "very-secret-value".into(),
            storage_class: None,
            ca_pems: vec![],
        };
        assert!(!format!("{t:?}").contains("very-secret-value"));
    }
}
