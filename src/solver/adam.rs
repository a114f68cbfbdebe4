//! Full-batch Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8 by default), projected for UDV^T. The moment
//! update and the step are one fused backend op.

use super::{IterReport, Solver, SolverConfig, SolverState};
use crate::backend::{AdamHyper, Backend};
use crate::error::Result;
use crate::problem::Problem;

pub struct Adam<B: Backend> {
    cfg: SolverConfig,
    t: i32,
    g: B::Vector,
    m: B::Vector,
    v: B::Vector,
}

impl<B: Backend> Adam<B> {
    pub fn new(cfg: &SolverConfig, p: &Problem<B>) -> Result<Self> {
        Ok(Adam {
            cfg: cfg.clone(),
            t: 0,
            g: p.zeros()?,
            m: p.zeros()?,
            v: p.zeros()?,
        })
    }
}

impl<B: Backend> Solver<B> for Adam<B> {
    fn save_state(&self, p: &Problem<B>) -> Result<SolverState> {
        let mut s = SolverState::default();
        s.scalars.insert("t".into(), self.t as f64);
        s.put(p, "m", &self.m)?;
        s.put(p, "v", &self.v)?;
        Ok(s)
    }

    fn load_state(&mut self, p: &Problem<B>, s: &SolverState) -> Result<()> {
        self.t = s.scalar("t")? as i32;
        s.get(p, "m", &mut self.m)?;
        s.get(p, "v", &mut self.v)
    }

    fn name(&self) -> String {
        "adam".into()
    }

    fn next_iter(&mut self, p: &Problem<B>, theta: &mut B::Vector) -> Result<IterReport> {
        let be = p.backend;
        let loss = p.gradient(theta, &mut self.g)?;
        let gnorm = be.dot(&self.g, &self.g)?.sqrt();
        self.t += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let hyper = AdamHyper {
            lr: self.cfg.lr() as f32,
            beta1: b1 as f32,
            beta2: b2 as f32,
            eps: self.cfg.eps as f32,
            c1: (1.0 / (1.0 - b1.powi(self.t))) as f32,
            c2: (1.0 / (1.0 - b2.powi(self.t))) as f32,
        };
        be.adam_step(theta, &self.g, &mut self.m, &mut self.v, hyper)?;
        p.project(theta)?;
        Ok(IterReport {
            loss,
            grad_norm: gnorm,
            accepted: true,
            ..Default::default()
        })
    }
}
