//! A naive f64 implementation of ALGORITHMS.md, written as obviously-correct loops over COO
//! entries. Its derivatives are checked against finite differences; both backends are checked
//! against it.
#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

use sslf::data::Ratings;
use sslf::model::{Layout, ModelKind};

pub struct Reference {
    pub layout: Layout,
    pub data: Ratings,
    /// Ridge diagonal D.
    pub reg: Vec<f64>,
}

impl Reference {
    pub fn new(layout: Layout, data: Ratings, reg: &[f32]) -> Self {
        Reference {
            layout,
            data,
            reg: reg.iter().map(|&x| x as f64).collect(),
        }
    }

    fn rows(&self, k: usize) -> (usize, usize) {
        let l = &self.layout;
        (
            l.p_off() + self.data.users[k] as usize * l.rank,
            l.q_off() + self.data.items[k] as usize * l.rank,
        )
    }

    pub fn predict(&self, th: &[f64], k: usize) -> f64 {
        let l = &self.layout;
        let (a, b) = self.rows(k);
        let mut s = 0.0;
        for t in 0..l.rank {
            s += match l.kind {
                ModelKind::Lf => th[a + t] * th[b + t],
                ModelKind::Udv => th[a + t] * th[l.d_off() + t] * th[b + t],
            };
        }
        if l.has_biases() {
            s += l.mu as f64
                + th[l.b_off() + self.data.users[k] as usize]
                + th[l.c_off() + self.data.items[k] as usize];
        }
        s
    }

    /// e = r − r̂ per entry.
    pub fn residuals(&self, th: &[f64]) -> Vec<f64> {
        (0..self.data.nnz())
            .map(|k| self.data.values[k] as f64 - self.predict(th, k))
            .collect()
    }

    pub fn sq_error(&self, th: &[f64]) -> f64 {
        self.residuals(th).iter().map(|e| e * e).sum()
    }

    /// E = ½Σe² + ½θᵀDθ.
    pub fn loss(&self, th: &[f64]) -> f64 {
        let ridge: f64 = th.iter().zip(&self.reg).map(|(x, d)| d * x * x).sum();
        0.5 * (self.sq_error(th) + ridge)
    }

    /// ∂r̂_k/∂θ as (index, value) pairs.
    pub fn jrow(&self, th: &[f64], k: usize) -> Vec<(usize, f64)> {
        let l = &self.layout;
        let (a, b) = self.rows(k);
        let mut out = Vec::new();
        for t in 0..l.rank {
            match l.kind {
                ModelKind::Lf => {
                    out.push((a + t, th[b + t]));
                    out.push((b + t, th[a + t]));
                }
                ModelKind::Udv => {
                    let d = th[l.d_off() + t];
                    out.push((a + t, d * th[b + t]));
                    out.push((b + t, d * th[a + t]));
                    out.push((l.d_off() + t, th[a + t] * th[b + t]));
                }
            }
        }
        if l.has_biases() {
            out.push((l.b_off() + self.data.users[k] as usize, 1.0));
            out.push((l.c_off() + self.data.items[k] as usize, 1.0));
        }
        out
    }

    /// J·v: the change of r̂ along v, per entry.
    pub fn jvp(&self, th: &[f64], v: &[f64]) -> Vec<f64> {
        (0..self.data.nnz())
            .map(|k| self.jrow(th, k).iter().map(|&(j, x)| x * v[j]).sum())
            .collect()
    }

    /// Jᵀ·w.
    pub fn jtv(&self, th: &[f64], w: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; th.len()];
        for k in 0..self.data.nnz() {
            for (j, x) in self.jrow(th, k) {
                out[j] += x * w[k];
            }
        }
        out
    }

    /// ∇E = Jᵀ(−e) + Dθ.
    pub fn gradient(&self, th: &[f64]) -> Vec<f64> {
        let e: Vec<f64> = self.residuals(th).iter().map(|x| -x).collect();
        let mut g = self.jtv(th, &e);
        for j in 0..g.len() {
            g[j] += self.reg[j] * th[j];
        }
        g
    }

    /// Data part of G·v = JᵀJv (no ridge).
    pub fn gn_data(&self, th: &[f64], v: &[f64]) -> Vec<f64> {
        self.jtv(th, &self.jvp(th, v))
    }

    /// Data part of the Hessian of ½Σe² times v: JᵀJv + Σ(−e)∇²r̂·v.
    pub fn hess_data(&self, th: &[f64], v: &[f64]) -> Vec<f64> {
        let l = &self.layout;
        let mut out = self.gn_data(th, v);
        let e = self.residuals(th);
        for k in 0..self.data.nnz() {
            let w = -e[k];
            let (a, b) = self.rows(k);
            for t in 0..l.rank {
                match l.kind {
                    ModelKind::Lf => {
                        out[a + t] += w * v[b + t];
                        out[b + t] += w * v[a + t];
                    }
                    ModelKind::Udv => {
                        let (dt, dd) = (th[l.d_off() + t], v[l.d_off() + t]);
                        out[a + t] += w * (dt * v[b + t] + dd * th[b + t]);
                        out[b + t] += w * (dt * v[a + t] + dd * th[a + t]);
                        out[l.d_off() + t] += w * (v[a + t] * th[b + t] + th[a + t] * v[b + t]);
                    }
                }
            }
        }
        out
    }
}
