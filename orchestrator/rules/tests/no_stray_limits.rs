//! Every limit lives in this crate: a limit's value compared against anywhere else in product
//! code (`len() > 16`, `..=3600`, `< 1024`) is a second copy of a rule, which is how the two
//! rule books of the past drifted. Comments, string literals, test modules and slice indices
//! (`[..16]`) are not comparisons and are skipped; exact lengths (`== 64`) are formats, not
//! limits, and are not looked at.

use std::path::{Path, PathBuf};

/// The product code: every crate's `src`, but not this crate, tests, examples or benches.
const ROOTS: &[&str] = &[
    "marketplace/src",
    "marketplace/protocol/src",
    "orchestrator/src",
    "swarm/src",
    "trust/src",
    "relays/src",
];

fn limits() -> Vec<String> {
    use archy_rules::*;
    let mut v: Vec<u64> = vec![
        MAX_PORTS as u64,
        MAX_VOLUMES as u64,
        MAX_ENV as u64,
        MAX_SECRETS as u64,
        MAX_COMMAND as u64,
        u64::from(MIN_HOST_PORT),
        MAX_STOP_GRACE_SECS,
        MAX_HEALTH_SECS,
        u64::from(MAX_HEALTH_RETRIES),
        u64::from(MAX_CPUS),
        MIN_MEMORY_MB,
        APP_ID_LEN.1 as u64,
        MAX_PUBLISHER_LEN as u64,
        MAX_VERSION_LEN as u64,
        MAX_IMAGE_NAME_LEN as u64,
        MAX_IMAGE_TAG_LEN as u64,
        MAX_MANIFEST_BYTES as u64,
        MAX_SAFE_INTEGER,
        MAX_IMAGE_LAYERS as u64,
        MAX_IMAGE_META_BYTES,
        MAX_SERVICES as u64,
        MAX_DEPENDS_ON as u64,
        MAX_DEPENDENCIES as u64,
        SERVICE_NAME_LEN.1 as u64,
    ];
    v.sort_unstable();
    v.dedup();
    v.into_iter().map(|n| n.to_string()).collect()
}

/// Source text without comments, string/char literals and `#[cfg(test)]` modules.
fn code_only(src: &str) -> String {
    let src = match src.find("#[cfg(test)]") {
        Some(i) => &src[..i],
        None => src,
    };
    let mut out = String::with_capacity(src.len());
    let b: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Integer literals (underscores removed) that stand in a comparison or a range bound.
fn compared_literals(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() && (i == 0 || !is_ident(chars[i - 1])) {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let lit: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let before: String = chars[..start].iter().collect::<String>();
            let before = before.trim_end();
            let after: String = chars[i..].iter().collect::<String>();
            let after = after.trim_start();
            let slice = before.ends_with("[..")
                || before.ends_with('[')
                || (before.ends_with("..")
                    && before[..before.len() - 2]
                        .trim_end()
                        .ends_with(|c: char| c.is_ascii_digit())
                    && before
                        .rfind('[')
                        .is_some_and(|p| !before[p..].contains(']')));
            let compared_before = ["<=", ">=", "<", ">", "..=", ".."]
                .iter()
                .any(|op| before.ends_with(op))
                && !before.ends_with("->")
                && !before.ends_with("=>");
            let compared_after = (after.starts_with("<=") || after.starts_with(">="))
                || ((after.starts_with('<') && !after.starts_with("<<"))
                    || (after.starts_with('>') && !after.starts_with(">>")));
            if (compared_before || compared_after)
                && !slice
                && lit.chars().all(|c| c.is_ascii_digit())
            {
                found.push(lit);
            }
        } else {
            i += 1;
        }
    }
    found
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_limit_is_written_twice() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let limits = limits();
    let mut files = Vec::new();
    for r in ROOTS {
        rust_files(&repo.join(r), &mut files);
    }
    assert!(files.len() > 50, "found only {} product files", files.len());
    let mut stray = Vec::new();
    for f in &files {
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for (n, line) in code.lines().enumerate() {
            for lit in compared_literals(line) {
                if limits.contains(&lit) {
                    stray.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        stray.is_empty(),
        "a limit of the rule book (archy-rules) is compared against by value; use its const:\n{}",
        stray.join("\n")
    );
}

#[test]
fn the_scanner_sees_comparisons_and_skips_slices() {
    assert_eq!(compared_literals("if self.ports.len() > 16 {"), ["16"]);
    assert_eq!(compared_literals("self.integer(m, p, 0..=3600);"), ["3600"]);
    assert_eq!(compared_literals("if host < 1_024 {"), ["1024"]);
    assert_eq!(compared_literals("16 < n"), ["16"]);
    assert!(compared_literals("&hex[..16]").is_empty());
    assert!(compared_literals("bytes[32..64].copy_from_slice(x)").is_empty());
    assert!(compared_literals("let x: Vec<u8> = vec![0; 64];").is_empty());
    assert!(compared_literals("if n == 64 {").is_empty());
    assert_eq!(
        code_only("let a = \"len() > 16\"; // > 16\nb"),
        "let a = \"\"; \nb"
    );
}
