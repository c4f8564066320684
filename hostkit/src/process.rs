//! Processes seen through /proc.

use std::path::Path;

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// PIDs whose executable is `exe`.
pub fn pids_of_exe(exe: &str) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() {
            if std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p == Path::new(exe))
                .unwrap_or(false)
            {
                out.push(pid);
            }
        }
    }
    out
}

/// The PID a pidfile names, if it names one.
pub fn read_pid(p: &str) -> Option<u32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}
