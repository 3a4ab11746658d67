//! Helpers shared by the bench examples of every crate (`*/examples/`; see BENCHMARKS.md).
//! Examples cannot depend on `archy-tests` (it depends on their crates), so each one includes
//! this file: `#[path = "../../tests/bench_common.rs"] mod bench_common;`.

/// The median of a run's samples (the upper middle for an even count). NaNs sort last.
#[allow(dead_code)]
pub fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Greater));
    v[v.len() / 2]
}

/// This process's peak resident set (VmHWM) as /proc prints it ("123 kB"), or "n/a".
#[allow(dead_code)]
pub fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "n/a".into())
}
