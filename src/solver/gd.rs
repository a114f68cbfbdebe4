//! Full-batch gradient descent with optional heavy-ball momentum, projected for UDV^T:
//! v ← μv − lr·g; θ ← Π(θ + v).

use super::{IterReport, Solver, SolverConfig, SolverState};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::Problem;

pub struct Gd<B: Backend> {
    lr: f64,
    momentum: f64,
    g: B::Vector,
    vel: B::Vector,
}

impl<B: Backend> Gd<B> {
    pub fn new(cfg: &SolverConfig, p: &Problem<B>) -> Result<Self> {
        Ok(Gd {
            lr: cfg.lr(),
            momentum: cfg.momentum,
            g: p.zeros()?,
            vel: p.zeros()?,
        })
    }
}

impl<B: Backend> Solver<B> for Gd<B> {
    fn save_state(&self, p: &Problem<B>) -> Result<SolverState> {
        let mut s = SolverState::default();
        s.put(p, "velocity", &self.vel)?;
        Ok(s)
    }

    fn load_state(&mut self, p: &Problem<B>, s: &SolverState) -> Result<()> {
        s.get(p, "velocity", &mut self.vel)
    }

    fn name(&self) -> String {
        "gd".into()
    }

    fn next_iter(&mut self, p: &Problem<B>, theta: &mut B::Vector) -> Result<IterReport> {
        let be = p.backend;
        let loss = p.gradient(theta, &mut self.g)?;
        let gnorm = p.dot(&self.g, &self.g)?.sqrt();
        if self.momentum > 0.0 {
            be.scale(self.momentum as f32, &mut self.vel)?;
            be.axpy(-self.lr as f32, &self.g, &mut self.vel)?;
            be.axpy(1.0, &self.vel, theta)?;
        } else {
            be.axpy(-self.lr as f32, &self.g, theta)?;
        }
        p.project(theta)?;
        Ok(IterReport {
            loss,
            grad_norm: gnorm,
            accepted: true,
            ..Default::default()
        })
    }
}
