//! SLF (Hessian-free Newton–CG with damping) and SSLF (the same made sharpness-aware).
//!
//! One epoch (docs/ALGORITHMS.md, "SLF" and "SSLF"):
//! 1. g = ∇E(θ), kept from the previous epoch's trial point when that step was taken;
//! 2. solve A s = b by preconditioned CG, with A = G + γI and b = −g for SLF (SSLF: see
//!    [`SamMode`]), to a tolerance from the forcing sequence; the preconditioner is rebuilt at
//!    each new θ (shifted by γ, and for the curvature form by the SAM term) and kept while
//!    steps are rejected;
//! 3. θ' = θ + ηs, projected for UDV^T, and ∇E(θ') with E(θ') in one gradient;
//! 4. Levenberg–Marquardt: ρ_LM = (E(θ) − E(θ')) / (predicted decrease of the quadratic model);
//!    γ grows ×1.5 below 0.25 and shrinks ÷1.5 above 0.75; θ' is rejected when E rises.

use super::cg::{CgLimits, ConjugateGradient};
use super::{
    sam_metric, sam_point, Damping, Forcing, IterReport, PrecondKind, SamAccept, SamMode, SamScale,
    Solver, SolverConfig, SolverKind, SolverState,
};
use crate::backend::{Backend, Shift};
use crate::error::Result;
use crate::problem::Problem;

const GAMMA_MIN: f64 = 1e-8;
const GAMMA_MAX: f64 = 1e12;
/// Loosest CG tolerance of the forcing sequence (and its first value).
const ETA_MAX: f64 = 0.5;
/// Scale of the previous step when CG starts from it.
const WARM_DECAY: f32 = 0.5;

/// State of SLF/SSLF.
pub struct Slf<B: Backend> {
    cfg: SolverConfig,
    gamma: f64,
    sam: Option<SamMode>,
    g: B::Vector,
    /// E(θ) for the cached gradient, or None when θ moved since.
    cached: Option<f64>,
    /// The gradient at the trial point.
    g_trial: B::Vector,
    b: B::Vector,
    s: B::Vector,
    trial: B::Vector,
    /// SAM work: θ̃ (ascent) or G·v (curvature).
    work: B::Vector,
    /// SAM work: g̃ (ascent) or G·G·v (curvature).
    work2: B::Vector,
    cg: ConjugateGradient<B>,
    precond: Option<B::Precond>,
    /// The shift the preconditioner was factored with, while it belongs to the current θ.
    pc_shift: Option<Shift>,
    /// The forcing term in force, and ‖g‖ of the θ it was chosen at.
    eta: f64,
    prev_gnorm: Option<f64>,
    /// Whether `s` holds the previous step (warm starts).
    have_step: bool,
    /// A resumed run must rebuild the kept factor (with `pc_shift`) before using it.
    restore_pc: bool,
    /// θ moved since the forcing term was last chosen.
    moved: bool,
    /// SAM: the scale P of ε = P ⊙ g, and a third work vector.
    pscale: B::Vector,
    work3: B::Vector,
    /// Epochs run (the ρ warm-up).
    epoch: u64,
    /// `sam_accept: sam`: (ρ, E(θ + ε(θ))) at the current θ.
    sam_obj: Option<(f64, f64)>,
}

impl<B: Backend> Slf<B> {
    pub fn new(cfg: &SolverConfig, p: &Problem<B>) -> Result<Self> {
        let sam = (cfg.name == SolverKind::Sslf).then_some(cfg.sam);
        let g = p.zeros()?;
        let precond = match cfg.preconditioner {
            PrecondKind::None => None,
            k => Some(p.precond_new(k, sam == Some(SamMode::Curvature))?),
        };
        Ok(Slf {
            cfg: cfg.clone(),
            gamma: cfg.gamma,
            sam,
            cg: ConjugateGradient::new(p.backend, &g)?,
            g,
            cached: None,
            g_trial: p.zeros()?,
            b: p.zeros()?,
            s: p.zeros()?,
            trial: p.zeros()?,
            work: p.zeros()?,
            work2: p.zeros()?,
            precond,
            pc_shift: None,
            eta: ETA_MAX,
            prev_gnorm: None,
            have_step: false,
            restore_pc: false,
            moved: true,
            pscale: p.zeros()?,
            work3: p.zeros()?,
            epoch: 0,
            sam_obj: None,
        })
    }

    /// Damping in force.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// The preconditioner in force (after any fallback of the backend).
    pub fn precond_kind(&self, p: &Problem<B>) -> PrecondKind {
        self.precond
            .as_ref()
            .map_or(PrecondKind::None, |pc| p.backend.precond_kind(pc))
    }

    /// The CG tolerance for a gradient of norm `gnorm`; `fresh` when θ moved since the last call.
    fn forcing(&mut self, gnorm: f64, fresh: bool) -> f64 {
        match self.cfg.forcing {
            Forcing::Fixed => self.cfg.cg_tol,
            Forcing::EisenstatWalker => {
                if fresh {
                    if let Some(prev) = self.prev_gnorm.filter(|&x| x > 0.0) {
                        let mut eta = 0.9 * (gnorm / prev).powi(2);
                        let safeguard = 0.9 * self.eta * self.eta;
                        if safeguard > 0.1 {
                            eta = eta.max(safeguard);
                        }
                        self.eta = eta.clamp(self.cfg.cg_tol.min(ETA_MAX), ETA_MAX);
                    }
                    self.prev_gnorm = Some(gnorm);
                }
                self.eta
            }
        }
    }
}

impl<B: Backend> Solver<B> for Slf<B> {
    fn save_state(&self, p: &Problem<B>) -> Result<SolverState> {
        let mut s = SolverState::default();
        s.scalars.insert("gamma".into(), self.gamma);
        s.scalars.insert("eta".into(), self.eta);
        if let Some(x) = self.prev_gnorm {
            s.scalars.insert("prev_gnorm".into(), x);
        }
        if let Some(loss) = self.cached {
            s.scalars.insert("cached_loss".into(), loss);
            s.put(p, "g", &self.g)?;
        }
        if let Some(sh) = self.pc_shift {
            s.scalars.insert("pc_gamma".into(), sh.gamma as f64);
            s.scalars.insert("pc_c".into(), sh.c as f64);
        }
        if self.have_step {
            s.put(p, "step", &self.s)?;
        }
        s.scalars
            .insert("moved".into(), f64::from(u8::from(self.moved)));
        Ok(s)
    }

    fn load_state(&mut self, p: &Problem<B>, s: &SolverState) -> Result<()> {
        self.gamma = s.scalar("gamma")?;
        self.eta = s.scalars.get("eta").copied().unwrap_or(ETA_MAX);
        self.prev_gnorm = s.scalars.get("prev_gnorm").copied();
        self.moved = s.scalars.get("moved").is_none_or(|&m| m != 0.0);
        self.epoch = s.scalars.get("epoch").copied().unwrap_or(0.0) as u64;
        self.sam_obj = match (s.scalars.get("sam_rho"), s.scalars.get("sam_obj")) {
            (Some(&r), Some(&o)) => Some((r, o)),
            _ => None,
        };
        self.cached = s.scalars.get("cached_loss").copied();
        if self.cached.is_some() {
            s.get(p, "g", &mut self.g)?;
        }
        self.have_step = s.vectors.contains_key("step");
        if self.have_step {
            s.get(p, "step", &mut self.s)?;
        }
        // A factor kept across rejected steps is rebuilt as it was: at the same point, with the
        // same shift (uncounted, as the uninterrupted run did not pay for it again).
        self.pc_shift = None;
        if let (Some(g), Some(c)) = (s.scalars.get("pc_gamma"), s.scalars.get("pc_c")) {
            self.pc_shift = Some(Shift {
                gamma: *g as f32,
                c: *c as f32,
            });
            self.restore_pc = true;
        }
        Ok(())
    }

    fn name(&self) -> String {
        let scale = match self.cfg.sam_scale {
            SamScale::Global => "",
            SamScale::Row => "-row",
            SamScale::Adaptive => "-adaptive",
        };
        match self.sam {
            None => "slf".into(),
            Some(SamMode::Curvature) => format!("sslf-curvature{scale}"),
            Some(SamMode::Ascent) => format!("sslf-ascent{scale}"),
        }
    }

    fn next_iter(&mut self, p: &Problem<B>, theta: &mut B::Vector) -> Result<IterReport> {
        let be = p.backend;
        let fresh = std::mem::replace(&mut self.moved, false);
        let loss = match self.cached {
            Some(e) => e,
            None => p.gradient(theta, &mut self.g)?,
        };
        self.cached = Some(loss);
        let gnorm = p.dot(&self.g, &self.g)?.sqrt();
        let tol = self.forcing(gnorm, fresh);
        let gamma = self.gamma;
        let rho = self.cfg.rho_at(self.epoch);
        self.epoch += 1;
        let c = if gnorm > 0.0 { rho / gnorm } else { 0.0 };

        // Right-hand side b, and the point where the curvature is taken (θ, or θ̃ for the ascent
        // form, held in `work`). With ρ = 0 (or g = 0) both SAM variants reduce to plain SLF.
        let sam = self.sam.filter(|_| c > 0.0);
        if sam.is_some() {
            sam_metric(
                p,
                self.cfg.sam_scale,
                rho,
                &self.g,
                gnorm,
                theta,
                &mut self.pscale,
            )?;
        }
        // The SAM objective at θ, when acceptance is judged on it.
        let judge_sam = sam.is_some() && self.cfg.sam_accept == SamAccept::Sam;
        if judge_sam && self.sam_obj.is_none_or(|(r, _)| r != rho) {
            sam_point(p, theta, &self.pscale, &self.g, &mut self.work3)?;
            self.sam_obj = Some((rho, p.loss(&self.work3)?));
        }
        match sam {
            None => {
                be.copy(&self.g, &mut self.b)?;
                be.scale(-1.0, &mut self.b)?;
            }
            Some(SamMode::Curvature) => {
                // b = −(g + B(P ⊙ g))
                be.fill(&mut self.work2, 0.0)?;
                be.mul_add(&self.pscale, &self.g, &mut self.work2)?;
                p.curvature_product(theta, &self.work2, &mut self.work)?;
                be.copy(&self.g, &mut self.b)?;
                be.axpy(1.0, &self.work, &mut self.b)?;
                be.scale(-1.0, &mut self.b)?;
            }
            Some(SamMode::Ascent) => {
                // θ̃ = θ + P ⊙ g ; g̃ = ∇E(θ̃) ; solve (G(θ̃) + γI) s = −g̃.
                sam_point(p, theta, &self.pscale, &self.g, &mut self.work)?;
                p.gradient(&self.work, &mut self.work2)?;
                be.copy(&self.work2, &mut self.b)?;
                be.scale(-1.0, &mut self.b)?;
            }
        }
        let ascent = sam == Some(SamMode::Ascent);
        let cpoint: &B::Vector = if ascent { &self.work } else { &*theta };

        // The preconditioner: rebuilt at each new point; kept (with its old shift) while steps
        // are rejected, since any fixed SPD M keeps CG exact. The curvature form's B·P·B is
        // approximated per row by c·B² with the global c = ρ/‖g‖ (exact for `global`).
        if let Some(pc) = self.precond.as_mut() {
            let shift = Shift {
                gamma: gamma as f32,
                c: if sam == Some(SamMode::Curvature) {
                    c as f32
                } else {
                    0.0
                },
            };
            if self.restore_pc {
                let kept = self.pc_shift.expect("a restored factor has its shift");
                p.precond_rebuild(cpoint, kept, pc)?;
                self.restore_pc = false;
            } else if self.pc_shift.is_none() || ascent {
                p.precond_build(cpoint, shift, pc)?;
                self.pc_shift = Some(shift);
            }
        }
        let lim = CgLimits {
            max_iters: self.cfg.cg_iters,
            rel_tol: tol,
            stall: true,
        };
        let warm = self.cfg.warm_start && self.have_step;
        if warm {
            be.scale(WARM_DECAY, &mut self.s)?;
        }
        let pc = self.precond.as_ref();
        let mut pre = |r: &B::Vector, z: &mut B::Vector| -> Result<()> {
            p.precond_apply(pc.expect("called only with a preconditioner"), r, z)
        };
        let pre: Option<&mut super::cg::Operator<'_, B::Vector>> =
            if pc.is_some() { Some(&mut pre) } else { None };
        let dot = |x: &B::Vector, y: &B::Vector| p.dot(x, y);
        let outcome = match sam {
            Some(SamMode::Curvature) => {
                // A v = Bv + γv + B(P ⊙ Bv).
                let (gv, pgv, bpgv) = (&mut self.work, &mut self.work3, &mut self.work2);
                let th = &*theta;
                let ps = &self.pscale;
                let mut apply = |v: &B::Vector, out: &mut B::Vector| -> Result<()> {
                    p.curvature_product(th, v, gv)?;
                    be.fill(pgv, 0.0)?;
                    be.mul_add(ps, gv, pgv)?;
                    p.curvature_product(th, pgv, bpgv)?;
                    be.copy(gv, out)?;
                    be.axpy(gamma as f32, v, out)?;
                    be.axpy(1.0, bpgv, out)
                };
                self.cg
                    .solve_with(be, &dot, &mut apply, pre, &self.b, &mut self.s, warm, lim)?
            }
            _ => {
                let th: &B::Vector = if ascent { &self.work } else { &*theta };
                let mut apply = |v: &B::Vector, out: &mut B::Vector| -> Result<()> {
                    p.curvature_product(th, v, out)?;
                    be.axpy(gamma as f32, v, out)
                };
                self.cg
                    .solve_with(be, &dot, &mut apply, pre, &self.b, &mut self.s, warm, lim)?
            }
        };
        self.have_step = true;

        // Quadratic model m(ηs) = −η bᵀs + ½η² sᵀAs, with sᵀAs = sᵀb − sᵀr.
        let eta = self.cfg.eta;
        let sas = outcome.xb - outcome.xr;
        let predicted = eta * outcome.xb - 0.5 * eta * eta * sas;
        be.waxpy(eta as f32, &self.s, theta, &mut self.trial)?;
        p.project(&mut self.trial)?;
        // The trial's gradient gives its loss too, and is the next epoch's when the step is taken.
        let new_loss = p.gradient(&self.trial, &mut self.g_trial)?;
        // The objective judged: E, or the SAM objective at the trial (its own ε from its gradient).
        let (old_obj, new_obj) = if judge_sam {
            let gn = p.dot(&self.g_trial, &self.g_trial)?.sqrt();
            sam_metric(
                p,
                self.cfg.sam_scale,
                rho,
                &self.g_trial,
                gn,
                &self.trial,
                &mut self.work3,
            )?;
            sam_point(p, &self.trial, &self.work3, &self.g_trial, &mut self.work)?;
            let obj = p.loss(&self.work)?;
            (self.sam_obj.expect("computed above").1, obj)
        } else {
            (loss, new_loss)
        };

        let accepted = match self.cfg.damping {
            Damping::Fixed => new_loss.is_finite(),
            Damping::LevenbergMarquardt => {
                // A non-positive prediction or a NaN loss counts as a failed step.
                let ratio = if predicted > 0.0 && new_obj.is_finite() {
                    (old_obj - new_obj) / predicted
                } else {
                    -1.0
                };
                if ratio < 0.25 {
                    self.gamma = (self.gamma * 1.5).min(GAMMA_MAX);
                } else if ratio > 0.75 {
                    self.gamma = (self.gamma / 1.5).max(GAMMA_MIN);
                }
                new_obj.is_finite() && new_obj < old_obj && new_loss.is_finite()
            }
        };
        let loss_after = if accepted {
            std::mem::swap(theta, &mut self.trial);
            std::mem::swap(&mut self.g, &mut self.g_trial);
            self.cached = Some(new_loss);
            self.pc_shift = None;
            self.moved = true;
            self.sam_obj = judge_sam.then_some((rho, new_obj));
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
