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
    /// sslf: SAM radius ρ.
    pub rho: f64,
    pub sam: SamMode,
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
            rho: 0.05,
            sam: SamMode::Curvature,
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
        if !(self.rho >= 0.0 && self.rho.is_finite()) {
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
