//! Full-batch Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8 by default), projected for UDV^T. The moment
//! update and the step are one fused backend op. With `rho` > 0 it is SAM-Adam: the step uses the
//! gradient at the ascent point θ + P ⊙ g (scaled as `sam_scale` says), at the cost of a second
//! gradient per epoch.

use super::{sam_metric, sam_point, IterReport, Solver, SolverConfig, SolverState};
use crate::backend::{AdamHyper, Backend};
use crate::error::Result;
use crate::problem::Problem;

pub struct Adam<B: Backend> {
    cfg: SolverConfig,
    t: i32,
    g: B::Vector,
    m: B::Vector,
    v: B::Vector,
    /// SAM: the scale P, the ascent point and the gradient there (allocated when ρ > 0).
    sam: Option<[B::Vector; 3]>,
}

impl<B: Backend> Adam<B> {
    pub fn new(cfg: &SolverConfig, p: &Problem<B>) -> Result<Self> {
        Ok(Adam {
            cfg: cfg.clone(),
            t: 0,
            g: p.zeros()?,
            m: p.zeros()?,
            v: p.zeros()?,
            sam: if cfg.rho() > 0.0 {
                Some([p.zeros()?, p.zeros()?, p.zeros()?])
            } else {
                None
            },
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
        if self.sam.is_some() {
            format!("adam-sam-{:?}", self.cfg.sam_scale).to_lowercase()
        } else {
            "adam".into()
        }
    }

    fn next_iter(&mut self, p: &Problem<B>, theta: &mut B::Vector) -> Result<IterReport> {
        let be = p.backend;
        let loss = p.gradient(theta, &mut self.g)?;
        let gnorm = p.dot(&self.g, &self.g)?.sqrt();
        let rho = self.cfg.rho_at(self.t as u64);
        self.t += 1;
        let mut step_g = &self.g;
        if let Some([ps, point, g2]) = self.sam.as_mut() {
            if rho > 0.0 {
                sam_metric(p, self.cfg.sam_scale, rho, &self.g, gnorm, theta, ps)?;
                sam_point(p, theta, ps, &self.g, point)?;
                p.gradient(point, g2)?;
                step_g = g2;
            }
        }
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let hyper = AdamHyper {
            lr: self.cfg.lr() as f32,
            beta1: b1 as f32,
            beta2: b2 as f32,
            eps: self.cfg.eps as f32,
            c1: (1.0 / (1.0 - b1.powi(self.t))) as f32,
            c2: (1.0 / (1.0 - b2.powi(self.t))) as f32,
        };
        be.adam_step(theta, step_g, &mut self.m, &mut self.v, hyper)?;
        p.project(theta)?;
        Ok(IterReport {
            loss,
            grad_norm: gnorm,
            accepted: true,
            ..Default::default()
        })
    }
}
