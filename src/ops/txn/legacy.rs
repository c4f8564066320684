//! The journals this charm wrote before its operations shared one transaction type: a
//! restore's or recover's swap (`restore-journal.json`), a snap-upgrade's switch or purge
//! (`migration-journal.json`) and a rolling turn's kept config (`etcd.conf.yml.kept`). A
//! unit whose charm is refreshed while one is open finishes it as the transaction it
//! converts to, which undoes the same things.

use super::step::{Cluster, Op, Step};
use crate::unit;
use anyhow::{Context as _, Result};
use etcdkit::install::Installed;
use std::path::{Path, PathBuf};

const RESTORE: &str = "/var/lib/etcd-charm/restore-journal.json";
const MIGRATION: &str = "/var/lib/etcd-charm/migration-journal.json";
const CONFIG_KEPT: &str = "/etc/etcd/etcd.conf.yml.kept";

#[derive(serde::Deserialize)]
struct RestoreJournal {
    aside: PathBuf,
    member: PathBuf,
    config: String,
    initial_cluster: Option<String>,
    initial_state: Option<String>,
    token: Option<String>,
    epoch: Option<String>,
}

#[derive(serde::Deserialize)]
enum MigrationJournal {
    Switch {
        data: PathBuf,
        new_data: Option<PathBuf>,
        config: String,
        old_link: Option<PathBuf>,
        before: Installed,
    },
    Purge {
        data: PathBuf,
        aside: PathBuf,
    },
}

fn config_file() -> PathBuf {
    PathBuf::from(etcdkit::service::CONFIG_FILE)
}

fn txn(op: Op, steps: Vec<Step>) -> (Op, Vec<Step>) {
    (op, steps)
}

/// The open legacy journal as a transaction (the steps in the order they were taken).
pub(super) fn convert() -> Result<Option<(Op, Vec<Step>)>> {
    if let Some(j) = unit::read_json::<RestoreJournal>(RESTORE)? {
        return Ok(Some(from_restore(j)));
    }
    if let Some(j) = unit::read_json::<MigrationJournal>(MIGRATION)? {
        return Ok(Some(from_migration(j)));
    }
    match std::fs::read_to_string(CONFIG_KEPT) {
        Ok(kept) => Ok(Some(txn(
            Op::Turn,
            vec![
                Step::File {
                    path: config_file(),
                    before: kept,
                },
                Step::Switched,
            ],
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {CONFIG_KEPT}")),
    }
}

fn from_restore(j: RestoreJournal) -> (Op, Vec<Step>) {
    txn(
        Op::Restore,
        vec![
            Step::File {
                path: config_file(),
                before: j.config,
            },
            Step::Cluster(Cluster {
                initial_cluster: j.initial_cluster,
                initial_state: j.initial_state,
                token: j.token,
                epoch: j.epoch,
            }),
            Step::MadeDir {
                path: j.aside.clone(),
            },
            Step::Moved {
                from: j.member,
                to: j.aside.join("member"),
                displaced: ".failed-restore".into(),
            },
        ],
    )
}

fn from_migration(j: MigrationJournal) -> (Op, Vec<Step>) {
    match j {
        MigrationJournal::Switch {
            data,
            new_data,
            config,
            old_link,
            before,
        } => {
            let mut steps = vec![
                Step::File {
                    path: config_file(),
                    before: config,
                },
                Step::Binaries {
                    before,
                    link: old_link,
                },
            ];
            steps.extend(new_data.map(|to| Step::Moved {
                from: data,
                to,
                displaced: ".purge-leftover".into(),
            }));
            txn(Op::SnapUpgrade, steps)
        }
        MigrationJournal::Purge { data, aside } => txn(
            Op::SnapUpgrade,
            vec![Step::Moved {
                from: data,
                to: aside,
                displaced: ".purge-leftover".into(),
            }],
        ),
    }
}

/// The legacy journals go once their transaction is saved.
pub(super) fn remove() -> Result<()> {
    for f in [RESTORE, MIGRATION, CONFIG_KEPT] {
        unit::remove_if_present(Path::new(f))?;
    }
    Ok(())
}

/// A legacy journal, if any, is readable.
pub(super) fn check() -> Result<()> {
    unit::read_json::<RestoreJournal>(RESTORE)?;
    unit::read_json::<MigrationJournal>(MIGRATION)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_journal_undoes_the_swap_then_the_state_then_the_config() {
        let j: RestoreJournal = serde_json::from_str(
            r#"{"aside":"/d/.pre-restore-3-1","member":"/d/member","config":"c","initial_cluster":"a=b","initial_state":"new","token":"t","epoch":"2"}"#,
        )
        .unwrap();
        let (op, steps) = from_restore(j);
        assert_eq!(op, Op::Restore);
        assert!(matches!(&steps[3], Step::Moved { from, to, .. }
            if from == Path::new("/d/member") && to == Path::new("/d/.pre-restore-3-1/member")));
        assert!(matches!(&steps[1], Step::Cluster(c) if c.epoch.as_deref() == Some("2")));
        assert!(matches!(&steps[0], Step::File { before, .. } if before == "c"));
    }

    #[test]
    fn a_migration_journal_moves_the_data_back_only_when_it_moved() {
        let before = r#"{"delivery":"deb","version":"3.4.23","bin_dir":"/usr/bin"}"#;
        for (new_data, steps) in [("null", 2), (r#""/var/snap/etcd/common/data""#, 3)] {
            let j: MigrationJournal = serde_json::from_str(&format!(
                r#"{{"Switch":{{"data":"/var/lib/etcd","new_data":{new_data},"config":"c","old_link":null,"before":{before}}}}}"#
            ))
            .unwrap();
            assert_eq!(from_migration(j).1.len(), steps, "new_data {new_data}");
        }
        let j: MigrationJournal = serde_json::from_str(
            r#"{"Purge":{"data":"/var/lib/etcd","aside":"/var/lib/etcd.migrating"}}"#,
        )
        .unwrap();
        assert!(matches!(&from_migration(j).1[..], [Step::Moved { .. }]));
    }
}
