//! Crash points for tests: when `CRASH_AT` names a step, the process removes the file and
//! SIGKILLs itself right there, as a power cut or an OOM kill would (no unwinding, no
//! cleanup, a hook's relation writes discarded).

use std::path::Path;

pub const CRASH_AT: &str = "/var/lib/etcd-charm/crash-at";

/// Dies here when `CRASH_AT` names `step`; otherwise returns at once.
pub fn crash_point(step: &str) {
    let p = Path::new(CRASH_AT);
    // Only a crash point that is consumed fires: one left in place would kill every run.
    if std::fs::read_to_string(p).is_ok_and(|s| s.trim() == step) && std::fs::remove_file(p).is_ok()
    {
        // SIGKILL cannot be caught or fail for the process itself; nothing runs after it.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
