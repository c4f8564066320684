//! The transaction over files in a temporary directory: record, commit, undo, and an undo
//! cut short and run again.

use super::*;
use crate::unit;
use std::fs;
use std::path::{Path, PathBuf};

fn setup() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("txn.json");
    (d, file)
}

#[test]
fn nothing_is_written_before_the_first_step_and_a_commit_leaves_nothing() {
    let (d, file) = setup();
    let mut t = Txn::begin_at(&file, Op::Restore).unwrap();
    assert!(!file.exists());
    t.make_dir(&d.path().join("aside")).unwrap();
    assert_eq!(Txn::load_at(&file).unwrap().unwrap().steps.len(), 1);
    t.commit().unwrap();
    assert!(!file.exists());
    assert!(
        d.path().join("aside").is_dir(),
        "a commit keeps what was done"
    );
}

#[test]
fn another_transaction_is_refused_while_one_is_recorded() {
    let (d, file) = setup();
    let mut t = Txn::begin_at(&file, Op::Recover).unwrap();
    t.make_dir(&d.path().join("a")).unwrap();
    let e = Txn::begin_at(&file, Op::Restore).unwrap_err().to_string();
    assert!(e.contains("a recover is unfinished"), "{e}");
}

#[test]
fn a_corrupt_record_is_an_error_not_none() {
    let (_d, file) = setup();
    fs::write(&file, "{not json").unwrap();
    let e = Txn::load_at(&file).unwrap_err().to_string();
    assert!(e.contains("corrupt"), "{e}");
}

/// A restore's swap: the member set aside, new data in its place, the config replaced.
fn swap(d: &Path, file: &Path) -> Txn {
    let member = d.join("member");
    let aside = d.join(".pre-restore-1");
    let config = d.join("etcd.conf.yml");
    fs::create_dir_all(member.join("wal")).unwrap();
    fs::write(member.join("wal/0"), "old").unwrap();
    fs::write(&config, "old config").unwrap();
    let mut t = Txn::begin_at(file, Op::Restore).unwrap();
    t.replace_file(&config, "new config").unwrap();
    t.make_dir(&aside).unwrap();
    t.move_aside(&member, &aside.join("member"), ".failed-restore")
        .unwrap();
    fs::create_dir_all(member.join("wal")).unwrap();
    fs::write(member.join("wal/0"), "restored").unwrap();
    t
}

#[test]
fn an_undo_puts_everything_back_and_sets_what_stood_there_aside() {
    let (d, file) = setup();
    let t = swap(d.path(), &file);
    assert_eq!(
        fs::read_to_string(d.path().join("etcd.conf.yml")).unwrap(),
        "new config"
    );
    t.roll_back().unwrap();
    assert_eq!(
        fs::read_to_string(d.path().join("member/wal/0")).unwrap(),
        "old"
    );
    assert_eq!(
        fs::read_to_string(d.path().join("etcd.conf.yml")).unwrap(),
        "old config"
    );
    assert!(
        !d.path().join(".pre-restore-1").exists(),
        "the empty aside dir goes"
    );
    let failed = unit::entries_named(d.path(), ".failed-restore-");
    assert_eq!(
        failed.len(),
        1,
        "the restored data is set aside, not deleted"
    );
    assert_eq!(
        fs::read_to_string(failed[0].join("wal/0")).unwrap(),
        "restored"
    );
    assert!(!file.exists());
}

#[test]
fn an_undo_cut_short_goes_on_where_it_stopped() {
    let (d, file) = setup();
    let t = swap(d.path(), &file);
    // The last step's undo ran, then the process died before the save that drops it.
    super::undo::step(t.steps.last().unwrap()).unwrap();
    let again = Txn::load_at(&file).unwrap().unwrap();
    assert_eq!(again.steps.len(), 3);
    again.roll_back().unwrap();
    assert_eq!(
        fs::read_to_string(d.path().join("member/wal/0")).unwrap(),
        "old"
    );
    assert_eq!(
        unit::entries_named(d.path(), ".failed-restore-").len(),
        1,
        "the undo run twice sets nothing else aside"
    );
    assert_eq!(
        fs::read_to_string(d.path().join("etcd.conf.yml")).unwrap(),
        "old config"
    );
}

#[test]
fn an_aside_dir_holding_anything_else_is_kept() {
    let (d, file) = setup();
    let t = swap(d.path(), &file);
    fs::write(d.path().join(".pre-restore-1/note"), "operator's").unwrap();
    t.roll_back().unwrap();
    assert!(d.path().join(".pre-restore-1/note").exists());
}

#[test]
fn a_copy_replaces_the_original_only_when_complete() {
    let (d, file) = setup();
    let original = d.path().join("member");
    fs::create_dir_all(&original).unwrap();
    fs::write(original.join("db"), "original").unwrap();
    let copy = d.path().join("aside/member");
    let step = Step::Copied {
        original: original.clone(),
        copy: copy.clone(),
        displaced: ".failed-restore".into(),
    };
    // Partial: the original stays, the partial copy goes.
    let mut t = Txn::begin_at(&file, Op::Recover).unwrap();
    t.record(step.clone()).unwrap();
    let partial = super::undo::partial(&copy);
    fs::create_dir_all(&partial).unwrap();
    fs::write(original.join("db"), "forced").unwrap();
    t.roll_back().unwrap();
    assert!(!partial.exists());
    assert_eq!(fs::read_to_string(original.join("db")).unwrap(), "forced");
    // Complete: the copy replaces the original, which is set aside.
    let mut t = Txn::begin_at(&file, Op::Recover).unwrap();
    t.record(step).unwrap();
    fs::create_dir_all(&copy).unwrap();
    fs::write(copy.join("db"), "original").unwrap();
    t.roll_back().unwrap();
    assert_eq!(fs::read_to_string(original.join("db")).unwrap(), "original");
    assert_eq!(unit::entries_named(d.path(), ".failed-restore-").len(), 1);
}

#[test]
fn steps_read_back_as_written() {
    let (_d, file) = setup();
    let mut t = Txn::begin_at(&file, Op::SnapUpgrade).unwrap();
    t.record(Step::Switched).unwrap();
    t.record(Step::Cluster(Cluster {
        epoch: Some("3".into()),
        ..Cluster::default()
    }))
    .unwrap();
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains(r#""op": "snap-upgrade""#), "{text}");
    assert_eq!(Txn::load_at(&file).unwrap().unwrap(), t);
}
