//! Whether a member's v2 store holds data written through the v2 API: etcd 3.6 no longer has
//! a v2 store and refuses to start on one with such data, so an upgrade to 3.6 waits until
//! it is gone. Asked of `etcdutl check v2store` (the 3.5 tools have it from 3.5.2x, the 3.6
//! tools too) on a copy of the member's WAL and v2 snapshots: the tool wants a data
//! directory etcd is not using, and the member keeps serving while it looks.

use crate::install::Installed;
use crate::version::Version;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the check found.
#[derive(Debug, PartialEq, Eq)]
pub enum V2Store {
    /// only etcd's own membership records
    MetaOnly,
    /// keys written through the v2 API (etcdutl's words)
    Custom(String),
}

/// Where the copy is made (the charm's own state directory, never etcd's data dir).
const WORK_DIR: &str = "/var/lib/etcd-charm";

/// What an operator does when the v2 store holds data.
pub const REMEDY: &str = "move what is still needed to the v3 API (etcd's v2 migration \
     guide), delete the v2 keys and directories (with enable_v2=true), then set \
     snapshot_count=1 until this check passes (etcd must write a new v2 snapshot) and set it \
     back";

/// The gate before an upgrade into `target`: from 3.6 on (no v2 store there), the v2 store
/// of the member whose data is in `data_dir` must hold nothing but membership. The tools
/// are the running ones' `etcdutl`, else the staged ones'. Ok says what was checked (None
/// when the target needs no check); Err why the upgrade may not go on, and what to do.
pub fn gate(target: Version, inst: &Installed, data_dir: &Path) -> Result<Option<String>, String> {
    if target.major != 3 || target.minor < 6 {
        return Ok(None);
    }
    let mut tools: Vec<PathBuf> = inst.etcdutl().into_iter().map(PathBuf::from).collect();
    if let Some(staged) = &inst.staged {
        tools.push(Path::new(staged).join("etcdutl"));
    }
    let Some(etcdutl) = checker(&tools) else {
        return Err(format!(
            "etcd {target} has no v2 store and this unit has no etcdutl with `check v2store` \
             to prove the v2 store empty: run etcd 3.5.26 or later first"
        ));
    };
    match check(&etcdutl, data_dir)? {
        V2Store::MetaOnly => Ok(Some(format!(
            "the v2 store holds only membership ({} check v2store)",
            etcdutl.display()
        ))),
        V2Store::Custom(said) => Err(format!(
            "the v2 store of this member holds data written through the v2 API ({said}); \
             etcd {target} will not start on it: {REMEDY}"
        )),
    }
}

/// The first of `tools` (etcdutl paths, best first) that has `check v2store`.
pub fn checker(tools: &[PathBuf]) -> Option<PathBuf> {
    tools.iter().find(|t| has_check(t)).cloned()
}

fn has_check(etcdutl: &Path) -> bool {
    etcdutl.is_file()
        && Command::new(etcdutl)
            .args(["check", "v2store", "--help"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Runs `etcdutl check v2store` on a copy of `data_dir`'s WAL and v2 snapshot files.
pub fn check(etcdutl: &Path, data_dir: &Path) -> Result<V2Store, String> {
    std::fs::create_dir_all(WORK_DIR).map_err(|e| format!("cannot create {WORK_DIR}: {e}"))?;
    let copy = tempfile::Builder::new()
        .prefix(".v2store-check-")
        .tempdir_in(WORK_DIR)
        .map_err(|e| format!("cannot make a directory under {WORK_DIR}: {e}"))?;
    let member = data_dir.join("member");
    for (dir, wanted) in [("wal", ".wal"), ("snap", ".snap")] {
        let to = copy.path().join("member").join(dir);
        std::fs::create_dir_all(&to).map_err(|e| format!("{}: {e}", to.display()))?;
        let from = member.join(dir);
        let entries =
            std::fs::read_dir(&from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", from.display()))?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(wanted) {
                std::fs::copy(entry.path(), to.join(&name))
                    .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
            }
        }
    }
    let out = Command::new(etcdutl)
        .args(["check", "v2store", "--data-dir"])
        .arg(copy.path())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", etcdutl.display()))?;
    judge(
        out.status.success(),
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
}

/// etcdutl's answer: success says the store is clean; a failure naming custom content says
/// it is not; any other failure is an error (never taken as clean).
fn judge(ok: bool, stdout: &str, stderr: &str) -> Result<V2Store, String> {
    if ok {
        return Ok(V2Store::MetaOnly);
    }
    let said = format!("{}\n{}", stdout.trim(), stderr.trim());
    match said
        .lines()
        .find(|l| l.contains("custom content") || l.contains("custom v2 content"))
    {
        Some(line) => Ok(V2Store::Custom(
            line.trim().trim_start_matches("Error: ").to_string(),
        )),
        None => Err(format!(
            "etcdutl check v2store failed: {}",
            super::last_line(&said)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcdutls_answers_are_read_and_an_unknown_failure_is_not_taken_as_clean() {
        assert_eq!(
            judge(true, "No custom content found in v2store.\n", ""),
            Ok(V2Store::MetaOnly)
        );
        assert_eq!(
            judge(false, "", "Error: detected custom content in v2store\n"),
            Ok(V2Store::Custom("detected custom content in v2store".into()))
        );
        assert_eq!(
            judge(
                false,
                "",
                "Error: detected custom v2 content in WAL records"
            ),
            Ok(V2Store::Custom(
                "detected custom v2 content in WAL records".into()
            ))
        );
        let e = judge(false, "", "Error: open /x/member/wal: permission denied").unwrap_err();
        assert!(e.contains("permission denied"), "{e}");
    }
}
