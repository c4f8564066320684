//! Crash points for tests: when `CRASH_AT` names a step, the process removes it and
//! SIGKILLs itself right there, as a power cut or an OOM kill would (no unwinding, no
//! cleanup, a hook's relation writes discarded).

use std::path::Path;

pub const CRASH_AT: &str = "/var/lib/etcd-charm/crash-at";

/// Dies here when `CRASH_AT`'s first line names `step`; otherwise returns at once. The
/// file may list several steps, one per line, each fired in its turn: the line is removed
/// as the process dies, and the file with the last one.
pub fn crash_point(step: &str) {
    let p = Path::new(CRASH_AT);
    let Ok(text) = std::fs::read_to_string(p) else {
        return;
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    if lines.next().map(str::trim) != Some(step) {
        return;
    }
    let rest: Vec<&str> = lines.collect();
    // Only a crash point that is consumed fires: one left in place would kill every run.
    let consumed = if rest.is_empty() {
        std::fs::remove_file(p).is_ok()
    } else {
        std::fs::write(p, rest.join("\n") + "\n").is_ok()
    };
    if consumed {
        // SIGKILL cannot be caught or fail for the process itself; nothing runs after it.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
