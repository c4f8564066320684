//! The record of a config etcd refused to run with: which rendered config, on which unit,
//! and why; a config equal to it is not tried again until the operator changes it.

/// A config that failed its turn here: held until the charm renders another one.
pub(crate) const REJECTED: &str = "/var/lib/etcd-charm/config-rejected.json";

/// A rendered config etcd did not come up healthy with.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Rejected {
    /// sha256 of the rendered config
    pub(crate) hash: String,
    /// the health check's failure and etcd's own last error
    pub(crate) why: String,
    /// etcd's settings that differ from the config that ran
    pub(crate) changed: Vec<String>,
}

impl Rejected {
    pub(crate) fn message(&self) -> String {
        format!(
            "Config not applied: etcd did not come up healthy with it{} and runs its \
             previous config again (changed: {}); fix the option with juju config",
            if self.why.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.why)
            },
            self.changed.join(", ")
        )
    }
}
