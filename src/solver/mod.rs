//! Solvers: one outer iteration ("epoch") at a time over a [`Problem`]. A solver owns its state
//! (damping, moments, work vectors) and asks the problem for costs, gradients, curvature products
//! and projections; it never touches wgpu, rayon or files.

pub mod adam;
pub mod cg;
pub mod gd;
pub mod sgd;
pub mod slf;

pub use crate::backend::PrecondKind;
use crate::backend::{Backend, Curvature};
use crate::error::Result;
use crate::problem::Problem;
use serde::{Deserialize, Serialize};

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SolverKind {
    /// Hessian-free Gauss–Newton with CG and damping.
    #[default]
    Slf,
    /// SLF made sharpness-aware.
    Sslf,
    /// Full-batch gradient descent, optional momentum.
    Gd,
    /// Full-batch Adam.
    Adam,
    /// Classic per-entry SGD on the host.
    Sgd,
}

/// Damping rule of SLF/SSLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Damping {
    /// γ stays at `gamma`; every step is taken.
    Fixed,
    /// γ adapts to the ratio of actual to predicted decrease; steps that raise E are rejected.
    #[default]
    LevenbergMarquardt,
}

/// How the CG tolerance of SLF/SSLF is chosen each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Forcing {
    /// CG stops at `cg_tol` every epoch.
    Fixed,
    /// Eisenstat–Walker: η_k = 0.9·(‖g_k‖/‖g_{k−1}‖)², safeguarded, within [cg_tol, 0.5]: loose
    /// far from a minimum, tight near one.
    #[default]
    EisenstatWalker,
}

/// How SSLF adds sharpness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamMode {
    /// First-order SAM in the curvature: b = −(g + ρGg/‖g‖), A = G + γI + (ρ/‖g‖)G².
    #[default]
    Curvature,
    /// The SAM ascent step: gradient and curvature at θ + ρg/‖g‖, step applied at θ.
    Ascent,
}

/// How the SAM perturbation ε = P ⊙ g is scaled (docs/ALGORITHMS.md, "SSLF").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamScale {
    /// P = ρ/‖g‖: one radius for the whole θ.
    #[default]
    Global,
    /// P = ρ/‖g_row‖ per user row, item row (factors and bias) and the d block: every row moves
    /// by ρ, the analogue of SAM's small m on sparse data.
    Row,
    /// ASAM: P = ρ·T²/‖T g‖ with T = |θ| + 0.01, invariant to the rescaling (a·p_u, q_i/a).
    Adaptive,
}

/// Which objective LM's acceptance test and ratio use in SSLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamAccept {
    /// The training loss E(θ).
    #[default]
    Loss,
    /// The SAM objective E(θ + ε(θ)) that the step minimises (one more pass per epoch).
    Sam,
}

/// The ASAM offset η in T = |θ| + η.
pub const ASAM_ETA: f32 = 0.01;

/// The `solver` section of a config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SolverConfig {
    pub name: SolverKind,
    /// slf/sslf: most CG iterations per epoch.
    pub cg_iters: usize,
    /// slf/sslf: CG stops when ‖r‖ ≤ tol·‖b‖ (in the preconditioned norm) with tol = cg_tol
    /// (`fixed` forcing), or tol ≥ cg_tol chosen by the forcing sequence.
    pub cg_tol: f64,
    /// slf/sslf: the CG preconditioner.
    pub preconditioner: PrecondKind,
    /// slf/sslf: how the CG tolerance is chosen.
    pub forcing: Forcing,
    /// slf/sslf: start CG from the previous step (scaled by 0.5) instead of from 0.
    pub warm_start: bool,
    pub damping: Damping,
    /// slf/sslf: initial (or fixed) damping γ.
    pub gamma: f64,
    /// slf/sslf: step length η.
    pub eta: f64,
    pub curvature: Curvature,
    /// sslf and adam: SAM radius ρ (null: sslf 0.05, adam 0, i.e. plain Adam).
    pub rho: Option<f64>,
    pub sam: SamMode,
    /// sslf (and adam with rho > 0): how the perturbation is scaled.
    pub sam_scale: SamScale,
    /// sslf/adam: ρ grows linearly to `rho` over this many epochs (0: constant).
    pub rho_warmup: usize,
    /// sslf: the objective of LM's acceptance test.
    pub sam_accept: SamAccept,
    /// gd/adam/sgd: learning rate (null: the solver's default).
    pub lr: Option<f64>,
    /// gd: heavy-ball momentum.
    pub momentum: f64,
    /// adam: β₁.
    pub beta1: f64,
    /// adam: β₂.
    pub beta2: f64,
    /// adam: ε.
    pub eps: f64,
    /// sgd: learning rate multiplied by this after every epoch.
    pub lr_decay: f64,
}

impl Default for SolverConfig {
    fn default() -> Self {
        SolverConfig {
            name: SolverKind::Slf,
            cg_iters: 20,
            cg_tol: 0.1,
            preconditioner: PrecondKind::BlockJacobi,
            forcing: Forcing::EisenstatWalker,
            warm_start: false,
            damping: Damping::LevenbergMarquardt,
            gamma: 1.0,
            eta: 1.0,
            curvature: Curvature::GaussNewton,
            rho: None,
            sam: SamMode::Curvature,
            sam_scale: SamScale::Global,
            rho_warmup: 0,
            sam_accept: SamAccept::Loss,
            lr: None,
            momentum: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            lr_decay: 1.0,
        }
    }
}

impl SolverConfig {
    /// The SAM radius in force: the configured ρ, or the solver's default (sslf 0.05; adam 0,
    /// i.e. plain Adam).
    pub fn rho(&self) -> f64 {
        self.rho.unwrap_or(match self.name {
            SolverKind::Sslf => 0.05,
            _ => 0.0,
        })
    }

    /// The learning rate in force for first-order solvers.
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(match self.name {
            SolverKind::Gd => 1e-3,
            SolverKind::Adam => 0.01,
            SolverKind::Sgd => 0.01,
            _ => 0.0,
        })
    }

    /// Checks ranges; `Err` holds (field, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let pos = |v: f64| v > 0.0 && v.is_finite();
        if self.cg_iters == 0 {
            return Err(("cg_iters", "must be ≥ 1".into()));
        }
        if !(self.cg_tol > 0.0 && self.cg_tol < 1.0) {
            return Err(("cg_tol", "must be in (0, 1)".into()));
        }
        if !pos(self.gamma) {
            return Err(("gamma", "must be > 0".into()));
        }
        if !pos(self.eta) {
            return Err(("eta", "must be > 0".into()));
        }
        if !(self.rho() >= 0.0 && self.rho().is_finite()) {
            return Err(("rho", "must be ≥ 0".into()));
        }
        if let Some(lr) = self.lr {
            if !pos(lr) {
                return Err(("lr", "must be > 0".into()));
            }
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(("momentum", "must be in [0, 1)".into()));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(("beta1", "β₁ and β₂ must be in [0, 1)".into()));
        }
        if !pos(self.eps) {
            return Err(("eps", "must be > 0".into()));
        }
        if !(self.lr_decay > 0.0 && self.lr_decay <= 1.0) {
            return Err(("lr_decay", "must be in (0, 1]".into()));
        }
        Ok(())
    }
}

impl SolverConfig {
    /// ρ in force at epoch `k` (0-based) under the warm-up.
    pub fn rho_at(&self, k: u64) -> f64 {
        if self.rho_warmup == 0 {
            self.rho()
        } else {
            self.rho() * ((k + 1) as f64 / self.rho_warmup as f64).min(1.0)
        }
    }
}

/// Writes the SAM scale P (θ-shaped) for ε = P ⊙ g at θ; `gnorm` = ‖g‖.
pub fn sam_metric<B: Backend>(
    p: &Problem<B>,
    scale: SamScale,
    rho: f64,
    g: &B::Vector,
    gnorm: f64,
    theta: &B::Vector,
    out: &mut B::Vector,
) -> Result<()> {
    let be = p.backend;
    match scale {
        SamScale::Global => {
            let c = if gnorm > 0.0 { rho / gnorm } else { 0.0 };
            be.fill(out, c as f32)
        }
        SamScale::Row => be.row_scale(&p.layout, g, rho as f32, out),
        SamScale::Adaptive => {
            be.abs_shift_sq(theta, ASAM_ETA, out)?;
            let n = p.wdot(out, g, g)?.sqrt();
            if n > 0.0 {
                be.scale((rho / n) as f32, out)
            } else {
                be.fill(out, 0.0)
            }
        }
    }
}

/// out ← θ + P ⊙ g, projected: the SAM ascent point.
pub fn sam_point<B: Backend>(
    p: &Problem<B>,
    theta: &B::Vector,
    scale: &B::Vector,
    g: &B::Vector,
    out: &mut B::Vector,
) -> Result<()> {
    p.backend.copy(theta, out)?;
    p.backend.mul_add(scale, g, out)?;
    p.project(out)
}

/// What one outer iteration did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IterReport {
    /// Training objective E at the iterate the epoch ends on (slf/sslf/sgd), or at the iterate it
    /// started from (gd/adam, whose gradient gives it for free).
    pub loss: f64,
    /// ‖∇E‖ at the start of the epoch (0 for sgd).
    pub grad_norm: f64,
    /// CG iterations taken (slf/sslf).
    pub cg_iters: usize,
    /// Damping γ after the update (slf/sslf).
    pub damping: Option<f64>,
    /// Whether the step was taken (LM may reject one).
    pub accepted: bool,
}

/// An optimizer over a problem on backend `B`.
pub trait Solver<B: Backend> {
    /// Short name for logs.
    fn name(&self) -> String;
    /// One outer iteration; θ is updated in place.
    fn next_iter(&mut self, p: &Problem<B>, theta: &mut B::Vector) -> Result<IterReport>;
    /// Everything the next iterations depend on besides θ (for checkpoints).
    fn save_state(&self, p: &Problem<B>) -> Result<SolverState>;
    /// Restores what [`Solver::save_state`] returned, on a solver built from the same config.
    fn load_state(&mut self, p: &Problem<B>, state: &SolverState) -> Result<()>;
}

/// A solver's carried state: named scalars and θ-shaped vectors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SolverState {
    pub scalars: std::collections::BTreeMap<String, f64>,
    pub vectors: std::collections::BTreeMap<String, Vec<f32>>,
}

impl SolverState {
    pub fn scalar(&self, name: &str) -> Result<f64> {
        self.scalars.get(name).copied().ok_or_else(|| {
            crate::error::Error::Unsupported(format!(
                "the checkpoint's solver state has no `{name}`"
            ))
        })
    }

    pub fn vector(&self, name: &str) -> Result<&[f32]> {
        self.vectors.get(name).map(|v| v.as_slice()).ok_or_else(|| {
            crate::error::Error::Unsupported(format!(
                "the checkpoint's solver state has no vector `{name}`"
            ))
        })
    }

    /// Downloads `v` as `name`.
    pub fn put<B: Backend>(&mut self, p: &Problem<B>, name: &str, v: &B::Vector) -> Result<()> {
        self.vectors.insert(name.into(), p.backend.download(v)?);
        Ok(())
    }

    /// Uploads vector `name` into `v` (laid out as θ).
    pub fn get<B: Backend>(&self, p: &Problem<B>, name: &str, v: &mut B::Vector) -> Result<()> {
        let data = self.vector(name)?;
        if data.len() != p.layout.len() {
            return Err(crate::error::Error::Unsupported(format!(
                "the checkpoint's `{name}` has {} values, the model {}",
                data.len(),
                p.layout.len()
            )));
        }
        *v = p.upload(data)?;
        Ok(())
    }
}
