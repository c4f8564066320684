//! Waiting for a condition with a deadline.

use std::time::{Duration, Instant};

/// Calls `f` every `every` until it succeeds or `deadline` has passed; the last error when
/// it never did.
pub fn retry<T, E: std::fmt::Display>(
    deadline: Duration,
    every: Duration,
    mut f: impl FnMut() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let until = Instant::now() + deadline;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => std::thread::sleep(every),
        }
    }
}
