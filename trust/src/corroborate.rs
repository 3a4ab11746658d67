//! Independent vouch paths: how many paths from the anchors reach a key through the *vouch
//! graph* while sharing no key but their anchor and the key itself (internally vertex-disjoint
//! paths). This is what the `trusted` tier asks for besides the score; the theorem it rests on
//! is in the crate doc ("Sybil-resistant tier").
//!
//! The count is a unit-capacity max-flow (each non-anchor key carries at most one path, the
//! anchors are the source), found by at most `cap` augmenting paths. Each augmenting path is a
//! breadth-first search *backwards* from the key over its vouchers, so the work is bounded by
//! the key's ancestors in the vouch graph, not by the size of the whole graph. Pure: the graph
//! is given as a function from a key to the keys with a vouch edge into it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    /// Where the key's incoming edges end.
    In,
    /// Where its outgoing edges start (one unit of capacity from `In` to `Out`).
    Out,
}

/// Up to `cap` internally vertex-disjoint paths from a source to `target` in the graph whose
/// in-neighbours `vouchers` gives (it must not list a key as its own voucher). Each path is
/// source first and ends with `target`; a direct source → target edge is a path of two keys.
/// `target` must not be a source. The number of paths is deterministic; their order is not.
pub(crate) fn independent_paths<K, S, F>(
    target: K,
    cap: u32,
    is_source: S,
    mut vouchers: F,
) -> Vec<Vec<K>>
where
    K: Copy + Eq + Hash,
    S: Fn(&K) -> bool,
    F: FnMut(&K) -> Vec<K>,
{
    debug_assert!(!is_source(&target));
    let mut memo: HashMap<K, Vec<K>> = HashMap::new();
    // Edges u → w carrying a path, and for each non-source key on a path, its successor.
    let mut flow: HashSet<(K, K)> = HashSet::new();
    let mut succ: HashMap<K, K> = HashMap::new();
    let mut found = 0;
    while found < cap {
        // Backward search in the residual graph from target's In side; `parent[y] = x` means
        // the residual edge y → x leads one step closer to the target.
        let start = (target, Side::In);
        let mut parent: HashMap<(K, Side), (K, Side)> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut reached = None;
        'search: while let Some(x) = queue.pop_front() {
            let (w, side) = x;
            let mut preds: Vec<(K, Side)> = Vec::new();
            match side {
                Side::In => {
                    let ins = memo.entry(w).or_insert_with(|| vouchers(&w));
                    for &u in ins.iter() {
                        if u != target && !flow.contains(&(u, w)) {
                            preds.push((u, Side::Out));
                        }
                    }
                    if w != target && succ.contains_key(&w) {
                        preds.push((w, Side::Out)); // undo w's own unit
                    }
                }
                Side::Out => match succ.get(&w) {
                    Some(&next) => preds.push((next, Side::In)), // undo w → next
                    None => preds.push((w, Side::In)),
                },
            }
            for y in preds {
                if y == start || parent.contains_key(&y) {
                    continue;
                }
                parent.insert(y, x);
                if y.1 == Side::Out && is_source(&y.0) {
                    reached = Some(y);
                    break 'search;
                }
                queue.push_back(y);
            }
        }
        let Some(mut node) = reached else { break };
        // Walk from the source to the target, flipping the residual edges.
        let mut add: Vec<(K, K)> = Vec::new();
        let mut remove: Vec<(K, K)> = Vec::new();
        while node != start {
            let next = parent[&node];
            match (node.1, next.1) {
                (Side::Out, Side::In) if node.0 != next.0 => add.push((node.0, next.0)),
                (Side::In, Side::Out) if node.0 != next.0 => remove.push((next.0, node.0)),
                _ => {} // through a key, or undoing it: implied by the edges around it
            }
            node = next;
        }
        for (u, w) in remove {
            flow.remove(&(u, w));
            if succ.get(&u) == Some(&w) {
                succ.remove(&u);
            }
        }
        for (u, w) in add {
            flow.insert((u, w));
            if !is_source(&u) {
                succ.insert(u, w);
            }
        }
        found += 1;
    }
    // Decompose the flow: every edge out of a source starts one path (in no particular order:
    // callers sort).
    let starts: Vec<(K, K)> = flow.iter().filter(|(u, _)| is_source(u)).copied().collect();
    starts
        .into_iter()
        .map(|(s, first)| {
            let mut path = vec![s, first];
            let mut cur = first;
            while cur != target {
                cur = succ[&cur];
                path.push(cur);
            }
            path
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Graph as edge list over small integers; sources given.
    fn paths(edges: &[(u8, u8)], sources: &[u8], target: u8, cap: u32) -> Vec<Vec<u8>> {
        let mut ins: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        for &(u, w) in edges {
            if u != w {
                ins.entry(w).or_default().push(u);
            }
        }
        independent_paths(
            target,
            cap,
            |k| sources.contains(k),
            |k| ins.get(k).cloned().unwrap_or_default(),
        )
    }

    fn check_disjoint(ps: &[Vec<u8>], sources: &[u8], target: u8, edges: &[(u8, u8)]) {
        let mut inner = HashSet::new();
        for p in ps {
            assert!(sources.contains(&p[0]));
            assert_eq!(*p.last().unwrap(), target);
            for pair in p.windows(2) {
                assert!(
                    edges.contains(&(pair[0], pair[1])),
                    "{p:?} uses a missing edge"
                );
            }
            for k in &p[1..p.len() - 1] {
                assert!(!sources.contains(k), "{p:?} passes through a source");
                assert!(inner.insert(*k), "{k} is on two paths: {ps:?}");
            }
        }
    }

    /// Min vertex cut by brute force (plus one path per direct source → target edge, which no
    /// vertex cut can break): by Menger's theorem, the number of independent paths.
    fn menger(edges: &[(u8, u8)], sources: &[u8], target: u8, n: u8) -> u32 {
        let direct = sources
            .iter()
            .filter(|s| edges.contains(&(**s, target)))
            .count() as u32;
        let inner: Vec<u8> = (0..n)
            .filter(|k| !sources.contains(k) && *k != target)
            .collect();
        let mut best = u32::MAX;
        for mask in 0u32..(1 << inner.len()) {
            let cut: HashSet<u8> = inner
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, k)| *k)
                .collect();
            // Reachability from the sources avoiding the cut and the direct edges.
            let mut seen: HashSet<u8> = sources.iter().copied().collect();
            let mut stack: Vec<u8> = sources.to_vec();
            let mut hit = false;
            while let Some(u) = stack.pop() {
                for &(a, b) in edges {
                    if a != u || cut.contains(&b) || (sources.contains(&a) && b == target) {
                        continue;
                    }
                    if b == target {
                        hit = true;
                    } else if seen.insert(b) {
                        stack.push(b);
                    }
                }
            }
            if !hit {
                best = best.min(cut.len() as u32);
            }
        }
        direct + best
    }

    #[test]
    fn three_disjoint_chains_and_a_shared_bottleneck() {
        // 0 is the source; 9 the target. Chains 0-1-9, 0-2-3-9, 0-4-9; and 0-5-6-9 shares 5
        // with 0-5-7-9: only one of those two counts.
        let edges = [
            (0, 1),
            (1, 9),
            (0, 2),
            (2, 3),
            (3, 9),
            (0, 4),
            (4, 9),
            (0, 5),
            (5, 6),
            (6, 9),
            (5, 7),
            (7, 9),
        ];
        let ps = paths(&edges, &[0], 9, 10);
        assert_eq!(ps.len(), 4, "{ps:?}");
        check_disjoint(&ps, &[0], 9, &edges);
        assert_eq!(
            paths(&edges, &[0], 9, 2).len(),
            2,
            "the cap stops the search"
        );
    }

    #[test]
    fn a_greedy_first_path_is_rerouted() {
        // The shortest path 0-1-2-9 blocks both others unless the search undoes it:
        // 0-1-3-9 and 0-4-2-9 are the two disjoint paths.
        let edges = [(0, 1), (1, 2), (2, 9), (1, 3), (3, 9), (0, 4), (4, 2)];
        let ps = paths(&edges, &[0], 9, 5);
        assert_eq!(ps.len(), 2, "{ps:?}");
        check_disjoint(&ps, &[0], 9, &edges);
    }

    #[test]
    fn agrees_with_a_brute_force_min_vertex_cut() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for _ in 0..400 {
            let n = 4 + (next() % 6) as u8; // 4..=9 keys
            let sources: Vec<u8> = (0..1 + next() % 2).map(|i| i as u8).collect();
            let target = n - 1;
            let mut edges: Vec<(u8, u8)> = Vec::new();
            for u in 0..n {
                for w in 0..n {
                    if u != w && w != sources[0] && next() % 3 == 0 {
                        edges.push((u, w));
                    }
                }
            }
            let ps = paths(&edges, &sources, target, 99);
            check_disjoint(&ps, &sources, target, &edges);
            assert_eq!(
                ps.len() as u32,
                menger(&edges, &sources, target, n),
                "{edges:?}"
            );
        }
    }
}
