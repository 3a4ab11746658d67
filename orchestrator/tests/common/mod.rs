//! What the real-Podman test files of this crate share: the loud skip when Podman is absent,
//! and names unique across parallel tests and runs.

use std::sync::atomic::{AtomicU32, Ordering};

/// Whether `argv` (`podman`, or e.g. `runuser -u archy -- podman`) runs; if not, says loudly
/// that the tests proving `what` against real Podman were skipped.
pub fn podman_binary_present(argv: &[String], what: &str) -> bool {
    let present = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        eprintln!(
            "\n\n!!! SKIPPED: `podman` is not installed. These tests prove {what} against real \
             Podman: run `sudo tests/setup/podman.sh` and re-run them. !!!\n"
        );
    }
    present
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique across parallel tests and runs: `<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}
