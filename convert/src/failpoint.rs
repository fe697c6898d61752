//! Crash-test hooks. `RECAST_FAILPOINT=NAME[:N]` makes the process kill itself with SIGKILL
//! the N-th time (default 1st) execution passes the point named NAME, so tests can check what a
//! crash at that exact moment leaves behind. Unset (always, outside tests) a hit costs one
//! relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> &'static Option<(String, u64)> {
    ARMED.get_or_init(|| {
        let v = std::env::var("RECAST_FAILPOINT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().ok()?),
            None => (v, 1),
        };
        Some((name, n))
    })
}

/// Passes the point `name`; see the module documentation.
pub fn hit(name: &str) {
    if let Some((armed, n)) = armed() {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            kill_self();
        }
    }
}

#[cfg(unix)]
fn kill_self() {
    // SIGKILL: no destructors, no buffered-writer flush, no atexit — the same as `kill -9`.
    let _ = std::process::Command::new("kill").arg("-9").arg(std::process::id().to_string()).status();
    std::process::abort();
}

#[cfg(not(unix))]
fn kill_self() {
    std::process::abort();
}
