//! The numeric core: personalised PageRank over a row-normalised edge list, solved by power
//! iteration from scratch or updated by residual pushes after a few rows change.
//!
//! State is an estimate `p` and its residual `r = α·s + (1−α)·p·W − p` under the current
//! matrix. The exact solution is `p + r·Z` with `Z = Σ_k ((1−α)W)^k`, so keeping `r` instead of
//! dropping it means incremental updates never accumulate error: whatever is not pushed yet is
//! still accounted for, and `‖p_exact − p‖₁ ≤ ‖r‖₁/α`.

use std::collections::VecDeque;
use std::sync::Arc;

use imbl::Vector;

use serde::{Deserialize, Serialize};

/// Which kinds of positive signal make up an edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EdgeKinds {
    /// A NIP-02 follow.
    pub follow: bool,
    /// An `endorse` label.
    pub endorse: bool,
}

/// One out-edge: target index, normalised transition probability, kinds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub to: u32,
    pub w: f64,
    pub kinds: EdgeKinds,
}

/// Out-edges of one key; empty means "dangling": its walk restarts at the anchors.
pub(crate) type Row = Arc<[Edge]>;

/// Personalised PageRank state.
#[derive(Clone)]
pub(crate) struct Walk {
    pub alpha: f64,
    /// Out-rows, persistent: a snapshot shares them, and replacing one row copies only the
    /// chunk that holds it.
    pub rows: Vector<Row>,
    /// Restart distribution over anchor indices (sums to 1, or empty when there is no anchor).
    pub restart: Arc<[(u32, f64)]>,
    pub p: Vec<f64>,
    pub r: Vec<f64>,
    /// Σ|r|, kept up to date by every change of `r` (exact after a solve): the certificate
    /// ‖p_exact − p‖₁ ≤ Σ|r|/α.
    pub r_l1: f64,
    /// Scratch flags of `push`, all false between calls.
    queued: Vec<bool>,
    /// Σ row lengths.
    edges: usize,
}

impl Walk {
    pub fn new(alpha: f64, rows: Vec<Row>, restart: Vec<(u32, f64)>) -> Self {
        let n = rows.len();
        let edges = rows.iter().map(|r| r.len()).sum();
        Walk {
            alpha,
            edges,
            rows: Vector::from(rows),
            restart: restart.into(),
            p: vec![0.0; n],
            r: vec![0.0; n],
            r_l1: 0.0,
            queued: vec![false; n],
        }
    }

    /// Adds `delta` to `r[i]`, keeping `r_l1`.
    fn add_r(&mut self, i: usize, delta: f64) {
        let old = self.r[i];
        let new = old + delta;
        self.r[i] = new;
        self.r_l1 += new.abs() - old.abs();
    }

    pub fn len(&self) -> usize {
        self.p.len()
    }

    pub fn edge_count(&self) -> usize {
        self.edges
    }

    /// `out = α·s + (1−α)·p·W`, dangling rows sending their mass to `s`.
    fn step(&self, p: &[f64], out: &mut [f64]) {
        let c = 1.0 - self.alpha;
        out.iter_mut().for_each(|x| *x = 0.0);
        let mut dangling = 0.0;
        for (u, row) in self.rows.iter().enumerate() {
            let pu = p[u];
            if pu == 0.0 {
                continue;
            }
            if row.is_empty() {
                dangling += pu;
                continue;
            }
            let m = c * pu;
            for e in row.iter() {
                out[e.to as usize] += m * e.w;
            }
        }
        let back = self.alpha + c * dangling;
        for &(a, sa) in self.restart.iter() {
            out[a as usize] += back * sa;
        }
    }

    /// Solves from the restart distribution; returns the number of iterations.
    /// Afterwards `p` is the last iterate and `r` its exact residual.
    pub fn solve(&mut self, tolerance: f64, max_iterations: u32) -> u32 {
        let n = self.len();
        let mut p = vec![0.0; n];
        for &(a, sa) in self.restart.iter() {
            p[a as usize] = sa;
        }
        self.iterate(p, tolerance, max_iterations)
    }

    /// Power iteration warm-started from the current estimate `p + r` (one Jacobi step ahead
    /// of `p`): converges in a few iterations when the estimate is already close.
    ///
    /// The start is rescaled to total mass 1 (the exact solution's total whenever there is an
    /// anchor): pushes leave Σr = α(1 − Σp) ≠ 0, and that component would otherwise decay only
    /// by (1−α) per iteration instead of at the graph's much faster mixing rate.
    pub fn solve_warm(&mut self, tolerance: f64, max_iterations: u32) -> u32 {
        let mut p: Vec<f64> = self.p.iter().zip(&self.r).map(|(p, r)| p + r).collect();
        let total: f64 = p.iter().sum();
        if !self.restart.is_empty() && total > 0.0 {
            p.iter_mut().for_each(|x| *x /= total);
        }
        self.iterate(p, tolerance, max_iterations)
    }

    fn iterate(&mut self, mut p: Vec<f64>, tolerance: f64, max_iterations: u32) -> u32 {
        let n = self.len();
        let mut next = vec![0.0; n];
        let mut iterations = 0;
        loop {
            self.step(&p, &mut next);
            iterations += 1;
            let diff: f64 = p.iter().zip(&next).map(|(a, b)| (a - b).abs()).sum();
            if diff < tolerance || iterations >= max_iterations {
                if diff >= tolerance {
                    tracing::warn!(iterations, diff, "trust power iteration hit max_iterations");
                }
                for (nx, pv) in next.iter_mut().zip(&p) {
                    *nx -= *pv;
                }
                self.p = p;
                self.r_l1 = next.iter().map(|x| x.abs()).sum();
                self.r = next;
                return iterations;
            }
            std::mem::swap(&mut p, &mut next);
        }
    }

    /// Adds empty (dangling, zero-mass) keys up to `n`.
    pub fn grow(&mut self, n: usize) {
        while self.rows.len() < n {
            self.rows.push_back(Arc::from(Vec::new()));
        }
        if n > self.len() {
            self.p.resize(n, 0.0);
            self.r.resize(n, 0.0);
            self.queued.resize(n, false);
        }
    }

    /// Replaces the out-row of `u`, keeping `r` the exact residual of `p` under the new matrix
    /// (`r += (1−α)·p_u·(W'_u − W_u)`). Returns the indices whose residual changed.
    pub fn replace_row(&mut self, u: usize, new_row: Row, touched: &mut Vec<u32>) {
        let cm = (1.0 - self.alpha) * self.p[u];
        let old_row = self.rows.set(u, new_row.clone());
        self.edges = self.edges + new_row.len() - old_row.len();
        let restart = self.restart.clone();
        for (row, sign) in [(&old_row, -1.0), (&new_row, 1.0)] {
            if row.is_empty() {
                for &(a, sa) in restart.iter() {
                    self.add_r(a as usize, sign * cm * sa);
                    touched.push(a);
                }
            } else {
                for e in row.iter() {
                    self.add_r(e.to as usize, sign * cm * e.w);
                    touched.push(e.to);
                }
            }
        }
    }

    /// Pushes residual from `seeds` until every residual is at most `epsilon` in magnitude
    /// (FIFO order, deterministic for a given seed order), or until `budget` pushes were made.
    /// Returns the number of pushes and whether it finished within the budget, and appends
    /// every pushed key (whose `p` changed) to `pushed`. Stopping early is safe: `r` stays the
    /// exact residual of `p`.
    pub fn push(
        &mut self,
        seeds: &[u32],
        epsilon: f64,
        budget: u64,
        pushed: &mut Vec<u32>,
    ) -> (u64, bool) {
        let c = 1.0 - self.alpha;
        let mut queue = VecDeque::new();
        for &s in seeds {
            if self.r[s as usize].abs() > epsilon && !self.queued[s as usize] {
                self.queued[s as usize] = true;
                queue.push_back(s);
            }
        }
        let restart = self.restart.clone();
        let mut pushes = 0u64;
        while let Some(x) = queue.pop_front() {
            if pushes >= budget {
                self.queued[x as usize] = false;
                for rest in queue {
                    self.queued[rest as usize] = false;
                }
                return (pushes, false);
            }
            let x = x as usize;
            self.queued[x] = false;
            let m = self.r[x];
            if m.abs() <= epsilon {
                continue;
            }
            pushes += 1;
            pushed.push(x as u32);
            self.r[x] = 0.0;
            self.r_l1 -= m.abs();
            self.p[x] += m;
            let cm = c * m;
            let row = self.rows[x].clone();
            let mut visit = |walk: &mut Walk, to: u32, delta: f64| {
                let t = to as usize;
                walk.add_r(t, delta);
                if !walk.queued[t] && walk.r[t].abs() > epsilon {
                    walk.queued[t] = true;
                    queue.push_back(to);
                }
            };
            if row.is_empty() {
                for &(a, sa) in restart.iter() {
                    visit(self, a, cm * sa);
                }
            } else {
                for e in row.iter() {
                    visit(self, e.to, cm * e.w);
                }
            }
        }
        (pushes, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(edges: &[(u32, f64)]) -> Row {
        edges
            .iter()
            .map(|&(to, w)| Edge {
                to,
                w,
                kinds: EdgeKinds::default(),
            })
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn two_node_cycle_matches_closed_form() {
        // 0 -> 1 -> 0, restart at 0: p0 = α + c·p1, p1 = c·p0  =>  p0 = α/(1−c²).
        let mut w = Walk::new(
            0.25,
            vec![row(&[(1, 1.0)]), row(&[(0, 1.0)])],
            vec![(0, 1.0)],
        );
        w.solve(1e-14, 10_000);
        let c: f64 = 0.75;
        assert!((w.p[0] - 0.25 / (1.0 - c * c)).abs() < 1e-12);
        assert!((w.p[1] - c * 0.25 / (1.0 - c * c)).abs() < 1e-12);
    }

    #[test]
    fn push_after_row_change_matches_fresh_solve() {
        let rows = vec![
            row(&[(1, 0.5), (2, 0.5)]),
            row(&[(2, 1.0)]),
            row(&[]),
            row(&[(0, 1.0)]),
        ];
        let mut w = Walk::new(0.25, rows.clone(), vec![(0, 1.0)]);
        w.solve(1e-13, 10_000);
        let mut touched = Vec::new();
        w.replace_row(1, row(&[(3, 1.0)]), &mut touched);
        let mut pushed = Vec::new();
        assert!(w.push(&touched, 1e-15, u64::MAX, &mut pushed).1);
        assert!(!pushed.is_empty());
        let l1: f64 = w.r.iter().map(|x| x.abs()).sum();
        assert!(
            (w.r_l1 - l1).abs() < 1e-15,
            "Σ|r| is kept: {} vs {l1}",
            w.r_l1
        );
        let mut rows2 = rows;
        rows2[1] = row(&[(3, 1.0)]);
        let mut fresh = Walk::new(0.25, rows2, vec![(0, 1.0)]);
        fresh.solve(1e-14, 10_000);
        for (a, b) in w.p.iter().zip(&fresh.p) {
            assert!((a - b).abs() < 1e-11, "{a} vs {b}");
        }
    }
}
