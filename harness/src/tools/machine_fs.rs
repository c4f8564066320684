//! Files a hook tool's argument names (`--file`, `secret-add key#file=…`), read inside the
//! unit's machine: a relative path from the unit's charm directory, an absolute one from the
//! machine's root, and every symbolic link on the way resolved against the machine's root
//! too (`openat2` with `RESOLVE_IN_ROOT`), never against the controller's, as Juju's
//! hook tools read on the machine itself (juju/juju `core/secrets/secret.go`:
//! `CreateSecretData` and `ReadSecretData` read `#file=` values and `--file` with
//! `os.ReadFile`, in the unit agent's process on the unit's machine).

use crate::controller::HookCtx;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Reads a file named by a hook tool argument, inside the machine's filesystem.
pub fn read_in_machine(ctx: &HookCtx, path: &str) -> Result<String, String> {
    let rel = if path.starts_with('/') {
        path.trim_start_matches('/').to_string()
    } else {
        format!(
            "{}/{path}",
            crate::controller::charm_dir_in_machine(&ctx.unit).trim_start_matches('/')
        )
    };
    read_in_root(&ctx.machine_root, &rel).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Reads `rel` under `root` as if `root` were `/`.
fn read_in_root(root: &std::path::Path, rel: &str) -> std::io::Result<String> {
    let dir = std::fs::File::open(root)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(dir.as_raw_fd(), rel, how).map_err(std::io::Error::from)?;
    // openat2 returned a new descriptor this function alone owns.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::read_in_root;

    /// An absolute link inside the machine points into the machine, not at the host, as
    /// Juju's `os.ReadFile` on the machine sees it (juju/juju core/secrets/secret.go).
    #[test]
    fn links_resolve_inside_the_machine() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path().join("machine");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/secret"), "machine's").unwrap();
        std::fs::write(host.path().join("secret"), "host's").unwrap();
        let outside = host.path().join("secret");
        std::os::unix::fs::symlink("/etc/secret", root.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        assert_eq!(read_in_root(&root, "link").unwrap(), "machine's");
        // The host's absolute path means nothing inside the machine.
        assert!(read_in_root(&root, "abs").is_err());
        assert!(read_in_root(&root, "../secret").is_err());
    }
}
