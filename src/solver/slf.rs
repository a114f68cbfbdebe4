//! SLF (Hessian-free Newton–CG with damping) and SSLF (the same made sharpness-aware).
//!
//! One epoch:
//! 1. g = ∇E(θ) (kept from the last epoch when θ did not move);
//! 2. solve A s = b by CG, with A = G + γI and b = −g for SLF; for SSLF see [`SamMode`];
//! 3. θ' = θ + ηs, projected for UDV^T;
//! 4. Levenberg–Marquardt: ρ_LM = (E(θ) − E(θ')) / (predicted decrease of the quadratic model);
//!    γ grows ×1.5 below 0.25 and shrinks ÷1.5 above 0.75; θ' is rejected when E rises.

use super::cg::ConjugateGradient;
use super::{Damping, IterReport, SamMode, Solver, SolverConfig, SolverKind, SolverState};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::Problem;

const GAMMA_MIN: f64 = 1e-8;
const GAMMA_MAX: f64 = 1e12;

/// State of SLF/SSLF.
pub struct Slf<B: Backend> {
    cfg: SolverConfig,
    gamma: f64,
    sam: Option<SamMode>,
    g: B::Vector,
    /// E(θ) for the cached gradient, or None when θ moved since.
    cached: Option<f64>,
    b: B::Vector,
    s: B::Vector,
    trial: B::Vector,
    /// SAM work: θ̃ (ascent) or G·v (curvature).
    work: B::Vector,
    /// SAM work: g̃ (ascent) or G·G·v (curvature).
    work2: B::Vector,
    cg: ConjugateGradient<B>,
}

impl<B: Backend> Slf<B> {
    pub fn new(cfg: &SolverConfig, p: &Problem<B>) -> Result<Self> {
        let sam = (cfg.name == SolverKind::Sslf).then_some(cfg.sam);
        let g = p.zeros()?;
        Ok(Slf {
            cfg: cfg.clone(),
            gamma: cfg.gamma,
            sam,
            cg: ConjugateGradient::new(p.backend, &g)?,
            g,
            cached: None,
            b: p.zeros()?,
            s: p.zeros()?,
            trial: p.zeros()?,
            work: p.zeros()?,
            work2: p.zeros()?,
        })
    }

    /// Damping in force.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }
}

impl<B: Backend> Solver<B> for Slf<B> {
    fn save_state(&self, p: &Problem<B>) -> Result<SolverState> {
        let mut s = SolverState::default();
        s.scalars.insert("gamma".into(), self.gamma);
        if let Some(loss) = self.cached {
            s.scalars.insert("cached_loss".into(), loss);
            s.put(p, "g", &self.g)?;
        }
        Ok(s)
    }

    fn load_state(&mut self, p: &Problem<B>, s: &SolverState) -> Result<()> {
        self.gamma = s.scalar("gamma")?;
        self.cached = s.scalars.get("cached_loss").copied();
        if self.cached.is_some() {
            s.get(p, "g", &mut self.g)?;
        }
        Ok(())
    }

    fn name(&self) -> String {
        match self.sam {
            None => "slf".into(),
            Some(SamMode::Curvature) => "sslf-curvature".into(),
            Some(SamMode::Ascent) => "sslf-ascent".into(),
        }
    }

    fn next_iter(&mut self, p: &Problem<B>, theta: &mut B::Vector) -> Result<IterReport> {
        let be = p.backend;
        let loss = match self.cached {
            Some(e) => e,
            None => p.gradient(theta, &mut self.g)?,
        };
        self.cached = Some(loss);
        let gnorm = be.dot(&self.g, &self.g)?.sqrt();
        let gamma = self.gamma;
        let rho = self.cfg.rho;
        let c = if gnorm > 0.0 { rho / gnorm } else { 0.0 };

        // Right-hand side b and the point where the curvature is taken.
        // With ρ = 0 (or g = 0) both SAM variants reduce to plain SLF.
        let sam = self.sam.filter(|_| c > 0.0);
        let outcome = match sam {
            None => {
                be.copy(&self.g, &mut self.b)?;
                be.scale(-1.0, &mut self.b)?;
                let tol = self.cfg.cg_tol * gnorm;
                let th = &*theta;
                let mut apply = |v: &B::Vector, out: &mut B::Vector| -> Result<()> {
                    p.curvature_product(th, v, out)?;
                    be.axpy(gamma as f32, v, out)
                };
                self.cg
                    .solve(be, &mut apply, &self.b, &mut self.s, self.cfg.cg_iters, tol)?
            }
            Some(SamMode::Curvature) => {
                // b = −(g + c·G g)
                p.curvature_product(theta, &self.g, &mut self.work)?;
                be.copy(&self.g, &mut self.b)?;
                be.axpy(c as f32, &self.work, &mut self.b)?;
                be.scale(-1.0, &mut self.b)?;
                let bnorm = be.dot(&self.b, &self.b)?.sqrt();
                let tol = self.cfg.cg_tol * bnorm;
                let th = &*theta;
                let (gv, ggv) = (&mut self.work, &mut self.work2);
                let mut apply = |v: &B::Vector, out: &mut B::Vector| -> Result<()> {
                    p.curvature_product(th, v, gv)?;
                    p.curvature_product(th, gv, ggv)?;
                    be.copy(gv, out)?;
                    be.axpy(gamma as f32, v, out)?;
                    be.axpy(c as f32, ggv, out)
                };
                self.cg
                    .solve(be, &mut apply, &self.b, &mut self.s, self.cfg.cg_iters, tol)?
            }
            Some(SamMode::Ascent) => {
                // θ̃ = θ + c·g ; g̃ = ∇E(θ̃) ; solve (G(θ̃) + γI) s = −g̃.
                be.waxpy(c as f32, &self.g, theta, &mut self.work)?;
                p.project(&mut self.work)?;
                p.gradient(&self.work, &mut self.work2)?;
                be.copy(&self.work2, &mut self.b)?;
                be.scale(-1.0, &mut self.b)?;
                let bnorm = be.dot(&self.b, &self.b)?.sqrt();
                let tol = self.cfg.cg_tol * bnorm;
                let th = &self.work;
                let mut apply = |v: &B::Vector, out: &mut B::Vector| -> Result<()> {
                    p.curvature_product(th, v, out)?;
                    be.axpy(gamma as f32, v, out)
                };
                self.cg
                    .solve(be, &mut apply, &self.b, &mut self.s, self.cfg.cg_iters, tol)?
            }
        };

        // Quadratic model m(ηs) = −η bᵀs + ½η² sᵀAs, with sᵀAs = sᵀb − sᵀr.
        let eta = self.cfg.eta;
        let sas = outcome.xb - outcome.xr;
        let predicted = eta * outcome.xb - 0.5 * eta * eta * sas;
        be.waxpy(eta as f32, &self.s, theta, &mut self.trial)?;
        p.project(&mut self.trial)?;
        let new_loss = p.loss(&self.trial)?;

        let accepted = match self.cfg.damping {
            Damping::Fixed => new_loss.is_finite(),
            Damping::LevenbergMarquardt => {
                // A non-positive prediction or a NaN loss counts as a failed step.
                let ratio = if predicted > 0.0 && new_loss.is_finite() {
                    (loss - new_loss) / predicted
                } else {
                    -1.0
                };
                if ratio < 0.25 {
                    self.gamma = (self.gamma * 1.5).min(GAMMA_MAX);
                } else if ratio > 0.75 {
                    self.gamma = (self.gamma / 1.5).max(GAMMA_MIN);
                }
                new_loss.is_finite() && new_loss < loss
            }
        };
        let loss_after = if accepted {
            std::mem::swap(theta, &mut self.trial);
            self.cached = None;
            new_loss
        } else {
            loss
        };
        Ok(IterReport {
            loss: loss_after,
            grad_norm: gnorm,
            cg_iters: outcome.iters,
            damping: Some(self.gamma),
            accepted,
        })
    }
}
