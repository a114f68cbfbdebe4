//! Classic per-entry SGD (Funk / LIBMF style) over a freshly shuffled K every epoch. It runs on the
//! host, single-threaded and seeded, whatever the backend: θ is downloaded once, updated on the
//! host, and uploaded after every epoch so evaluation runs where the other solvers run.
//!
//! Per entry: e = r − r̂; each parameter row x moves by lr·(e·∂r̂/∂x − w·x), where w is the ridge
//! weight per entry (λ for per-entry regularization, λ/|K_u| for the Frobenius form).

use super::{IterReport, Solver, SolverConfig, SolverState};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::{Layout, ModelKind};
use crate::problem::Problem;
use rand::prelude::*;

/// The training entries SGD visits, held on the host (SGD updates θ per entry in a shuffled
/// order, which has no device formulation here).
#[derive(Debug, Clone, Default)]
pub struct HostEntries {
    pub users: Vec<u32>,
    pub items: Vec<u32>,
    pub values: Vec<f32>,
}

pub struct Sgd {
    lr: f64,
    decay: f64,
    data: HostEntries,
    /// Ridge weight per entry for each θ coordinate (D / count).
    w: Vec<f32>,
    theta: Option<Vec<f32>>,
    order: Vec<usize>,
    rng: StdRng,
    seed: u64,
    /// Epochs run (shuffles drawn) so far.
    epochs: u64,
}

impl Sgd {
    /// `reg` is the ridge diagonal D and `counts_*` the per-row entry counts of the training data.
    pub fn new(
        cfg: &SolverConfig,
        layout: &Layout,
        data: HostEntries,
        reg: &[f32],
        user_counts: &[u32],
        item_counts: &[u32],
        seed: u64,
    ) -> Self {
        let f = layout.rank;
        let mut w = reg.to_vec();
        let per = |x: &mut f32, c: u32| *x /= c.max(1) as f32;
        for (u, &c) in user_counts.iter().enumerate() {
            w[layout.p_off() + u * f..layout.p_off() + (u + 1) * f]
                .iter_mut()
                .for_each(|x| per(x, c));
        }
        for (i, &c) in item_counts.iter().enumerate() {
            w[layout.q_off() + i * f..layout.q_off() + (i + 1) * f]
                .iter_mut()
                .for_each(|x| per(x, c));
        }
        if layout.has_biases() {
            for (u, &c) in user_counts.iter().enumerate() {
                per(&mut w[layout.b_off() + u], c);
            }
            for (i, &c) in item_counts.iter().enumerate() {
                per(&mut w[layout.c_off() + i], c);
            }
        }
        let order = (0..data.values.len()).collect();
        Sgd {
            lr: cfg.lr(),
            decay: cfg.lr_decay,
            data,
            w,
            theta: None,
            order,
            rng: StdRng::seed_from_u64(seed ^ 0x5_6D),
            seed,
            epochs: 0,
        }
    }

    /// Draws the next epoch's order: each epoch shuffles the previous one.
    fn shuffle(&mut self) {
        self.order.shuffle(&mut self.rng);
        self.epochs += 1;
    }

    fn epoch(&mut self, l: &Layout, th: &mut [f32]) {
        let f = l.rank;
        let lr = self.lr as f32;
        self.shuffle();
        let (p_off, q_off) = (l.p_off(), l.q_off());
        for &k in &self.order {
            let (u, i, r) = (
                self.data.users[k] as usize,
                self.data.items[k] as usize,
                self.data.values[k],
            );
            let (pu, qi) = (p_off + u * f, q_off + i * f);
            match l.kind {
                ModelKind::Lf => {
                    let mut pred = 0f32;
                    for t in 0..f {
                        pred += th[pu + t] * th[qi + t];
                    }
                    let (bu, ci) = (l.b_off() + u, l.c_off() + i);
                    if l.biases {
                        pred += l.mu + th[bu] + th[ci];
                    }
                    let e = r - pred;
                    for t in 0..f {
                        let (p, q) = (th[pu + t], th[qi + t]);
                        th[pu + t] += lr * (e * q - self.w[pu + t] * p);
                        th[qi + t] += lr * (e * p - self.w[qi + t] * q);
                    }
                    if l.biases {
                        th[bu] += lr * (e - self.w[bu] * th[bu]);
                        th[ci] += lr * (e - self.w[ci] * th[ci]);
                    }
                }
                ModelKind::Udv => {
                    let d_off = l.d_off();
                    let mut pred = 0f32;
                    for t in 0..f {
                        pred += th[pu + t] * th[d_off + t] * th[qi + t];
                    }
                    let e = r - pred;
                    for t in 0..f {
                        let (a, d, b) = (th[pu + t], th[d_off + t], th[qi + t]);
                        th[pu + t] += lr * (e * d * b - self.w[pu + t] * a);
                        th[qi + t] += lr * (e * d * a - self.w[qi + t] * b);
                        th[d_off + t] += lr * e * a * b;
                    }
                }
            }
        }
        self.lr *= self.decay;
    }
}

impl<B: Backend> Solver<B> for Sgd {
    fn name(&self) -> String {
        "sgd".into()
    }

    fn save_state(&self, _p: &Problem<B>) -> Result<SolverState> {
        let mut s = SolverState::default();
        s.scalars.insert("lr".into(), self.lr);
        s.scalars.insert("epochs".into(), self.epochs as f64);
        Ok(s)
    }

    /// The shuffle stream is replayed from the seed (one shuffle per epoch run), so a resumed run
    /// visits the entries in the same orders as an uninterrupted one.
    fn load_state(&mut self, _p: &Problem<B>, s: &SolverState) -> Result<()> {
        let epochs = s.scalar("epochs")? as u64;
        self.rng = StdRng::seed_from_u64(self.seed ^ 0x5_6D);
        self.order = (0..self.data.values.len()).collect();
        self.epochs = 0;
        while self.epochs < epochs {
            self.shuffle();
        }
        self.lr = s.scalar("lr")?;
        self.theta = None;
        Ok(())
    }

    fn next_iter(&mut self, p: &Problem<B>, theta: &mut B::Vector) -> Result<IterReport> {
        let mut host = match self.theta.take() {
            Some(t) => t,
            None => p.backend.download(theta)?,
        };
        self.epoch(&p.layout, &mut host);
        *theta = p.upload(&host)?;
        p.project(theta)?;
        if p.constraint.is_some() {
            host = p.backend.download(theta)?;
        }
        self.theta = Some(host);
        let loss = p.loss(theta)?;
        Ok(IterReport {
            loss,
            accepted: true,
            ..Default::default()
        })
    }
}
