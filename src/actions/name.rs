//! The actions this charm answers (actions.yaml), parsed once from the name Juju gives.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Health,
    PackageClientCredentials,
    Snapshot,
    Restore,
    Recover,
    Compact,
    Defrag,
    CopyFrom,
    AlarmList,
    AlarmDisarm,
    Install,
    SnapUpgrade,
    PreUpgradeCheck,
    ResumeUpgrade,
    UpgradePackage,
    ListBackups,
    VerifyBackup,
}

impl Action {
    /// Every action, as actions.yaml lists them.
    #[cfg(test)]
    pub const ALL: [Action; 17] = [
        Action::Health,
        Action::PackageClientCredentials,
        Action::Snapshot,
        Action::Restore,
        Action::Recover,
        Action::Compact,
        Action::Defrag,
        Action::CopyFrom,
        Action::AlarmList,
        Action::AlarmDisarm,
        Action::Install,
        Action::SnapUpgrade,
        Action::PreUpgradeCheck,
        Action::ResumeUpgrade,
        Action::UpgradePackage,
        Action::ListBackups,
        Action::VerifyBackup,
    ];

    /// The action Juju names; None for a name this charm does not know.
    pub fn parse(name: &str) -> Option<Action> {
        serde_json::from_value(serde_json::Value::String(name.into())).ok()
    }

    /// Its name in actions.yaml.
    #[cfg(test)]
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            _ => format!("{self:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// actions.yaml and the enum name the same actions: one added to either is seen.
    #[test]
    fn every_action_in_actions_yaml_is_known_and_every_known_one_is_there() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/actions.yaml")).unwrap();
        let yaml: std::collections::BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str(&text).unwrap();
        for name in yaml.keys() {
            let a = Action::parse(name).unwrap_or_else(|| panic!("{name} is not an Action"));
            assert_eq!(&a.name(), name);
        }
        for a in Action::ALL {
            assert!(yaml.contains_key(&a.name()), "{a:?} is not in actions.yaml");
        }
        assert_eq!(Action::parse("Health"), None);
        assert_eq!(Action::parse("no-such"), None);
    }
}
