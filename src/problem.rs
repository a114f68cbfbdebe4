//! [`Problem`]: the training data, the model layout and the ridge term bound to one backend. It is
//! what solvers see: a cost, a gradient, a curvature operator and a projection, each counted.
//!
//! E(θ) = ½Σe² + ½θᵀDθ, where D is the diagonal ridge weight of the model config (λ·|K_u| per
//! entry, or λ for the Frobenius form).

use crate::backend::{Backend, Curvature, PrecondKind, Shift};
use crate::data::Matrix;
use crate::error::Result;
use crate::model::{Layout, ModelConfig, ModelKind};
use std::cell::Cell;

/// The norm balls and sign rule of the UDV^T model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BallConstraint {
    pub alpha_u: f64,
    pub alpha_v: f64,
    pub signed_d: bool,
}

/// Work done so far, in hardware-independent units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Passes over the known entries: each side (users or items) of a gradient or curvature
    /// product is one pass, and so is a loss.
    pub passes: u64,
    pub gradients: u64,
    pub products: u64,
    pub losses: u64,
    /// Preconditioner builds (one pass per side each).
    #[serde(default)]
    pub preconds: u64,
}

/// Data + model + ridge term on a backend.
pub struct Problem<'b, B: Backend> {
    pub backend: &'b B,
    pub matrix: B::Matrix,
    pub layout: Layout,
    /// Diagonal D of the ridge term.
    pub reg: B::Vector,
    pub curvature: Curvature,
    pub constraint: Option<BallConstraint>,
    counters: Cell<Counters>,
}

impl<'b, B: Backend> Problem<'b, B> {
    pub fn new(
        backend: &'b B,
        matrix: B::Matrix,
        layout: Layout,
        reg: B::Vector,
        curvature: Curvature,
        constraint: Option<BallConstraint>,
    ) -> Self {
        Problem {
            backend,
            matrix,
            layout,
            reg,
            curvature,
            constraint,
            counters: Cell::new(Counters::default()),
        }
    }

    /// The problem `model` describes on `matrix`: the ratings uploaded for `layout`, the ridge
    /// diagonal D from each row's entry count, and for UDV the norm balls. Training, `sslf bench`
    /// and the tests all build theirs here.
    pub fn from_model(
        backend: &'b B,
        matrix: &Matrix,
        model: &ModelConfig,
        layout: Layout,
        curvature: Curvature,
    ) -> Result<Self> {
        let reg = model.reg_diag(
            &layout,
            &matrix.by_user.row_counts(),
            &matrix.by_item.row_counts(),
        );
        let constraint = (layout.kind == ModelKind::Udv).then_some(BallConstraint {
            alpha_u: model.alpha_u,
            alpha_v: model.alpha_v,
            signed_d: model.signed_d,
        });
        Ok(Self::new(
            backend,
            backend.upload_matrix(matrix, &layout)?,
            layout,
            backend.upload_params(&layout, &reg)?,
            curvature,
            constraint,
        ))
    }

    /// Work counted so far.
    pub fn counters(&self) -> Counters {
        self.counters.get()
    }

    /// Sets the counters (a resumed run continues from the checkpoint's).
    pub fn set_counters(&self, c: Counters) {
        self.counters.set(c);
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// A zero vector laid out as θ.
    pub fn zeros(&self) -> Result<B::Vector> {
        self.backend.zeros_params(&self.layout)
    }

    /// Uploads a host vector laid out as θ.
    pub fn upload(&self, data: &[f32]) -> Result<B::Vector> {
        self.backend.upload_params(&self.layout, data)
    }

    /// E(θ).
    pub fn loss(&self, theta: &B::Vector) -> Result<f64> {
        let sq = self.backend.sq_error(&self.matrix, &self.layout, theta)?;
        let ridge = self.backend.wdot(&self.reg, theta, theta)?;
        self.count(|c| {
            c.passes += 1;
            c.losses += 1;
        });
        Ok(0.5 * (sq + ridge))
    }

    /// g ← ∇E(θ); returns E(θ).
    pub fn gradient(&self, theta: &B::Vector, g: &mut B::Vector) -> Result<f64> {
        let sq = self
            .backend
            .gradient(&self.matrix, &self.layout, theta, g)?;
        self.backend.mul_add(&self.reg, theta, g)?;
        let ridge = self.backend.wdot(&self.reg, theta, theta)?;
        self.count(|c| {
            c.passes += 2;
            c.gradients += 1;
        });
        Ok(0.5 * (sq + ridge))
    }

    /// out ← (G + D)·v at θ, with G the configured curvature of ½Σe².
    pub fn curvature_product(
        &self,
        theta: &B::Vector,
        v: &B::Vector,
        out: &mut B::Vector,
    ) -> Result<()> {
        self.backend.curvature_product(
            &self.matrix,
            &self.layout,
            theta,
            v,
            out,
            self.curvature,
        )?;
        self.backend.mul_add(&self.reg, v, out)?;
        self.count(|c| {
            c.passes += 2;
            c.products += 1;
        });
        Ok(())
    }

    /// A preconditioner of `kind` for this problem (for systems with a SAM term when `sam`).
    pub fn precond_new(&self, kind: PrecondKind, sam: bool) -> Result<B::Precond> {
        self.backend
            .precond_new(&self.matrix, &self.layout, kind, sam)
    }

    /// Builds and factors the preconditioner at θ with the given shift; counts one pass per side.
    pub fn precond_build(
        &self,
        theta: &B::Vector,
        shift: Shift,
        pc: &mut B::Precond,
    ) -> Result<()> {
        self.precond_rebuild(theta, shift, pc)?;
        if self.backend.precond_kind(pc) != PrecondKind::None {
            self.count(|c| {
                c.passes += 2;
                c.preconds += 1;
            });
        }
        Ok(())
    }

    /// The same build, uncounted: restores a resumed solver's preconditioner exactly as the
    /// uninterrupted run held it.
    pub fn precond_rebuild(
        &self,
        theta: &B::Vector,
        shift: Shift,
        pc: &mut B::Precond,
    ) -> Result<()> {
        self.backend
            .precond_build(&self.matrix, &self.layout, theta, &self.reg, shift, pc)
    }

    /// z ← M⁻¹r (no pass over the data).
    pub fn precond_apply(&self, pc: &B::Precond, r: &B::Vector, z: &mut B::Vector) -> Result<()> {
        self.backend.precond_apply(pc, &self.layout, r, z)
    }

    /// Projects θ onto the constraint set (UDV^T: U and V into their balls, d clipped at 0 unless
    /// signed); a no-op for unconstrained models. A norm reduction on the device, the factor chosen
    /// here, then a scale on the device.
    pub fn project(&self, theta: &mut B::Vector) -> Result<()> {
        let Some(ball) = self.constraint else {
            return Ok(());
        };
        debug_assert_eq!(self.layout.kind, ModelKind::Udv);
        let l = &self.layout;
        let nf = l.n_items * l.rank;
        for (range, alpha) in [
            (l.p_off()..l.q_off(), ball.alpha_u),
            (l.q_off()..l.q_off() + nf, ball.alpha_v),
        ] {
            let norm = self.backend.norm_sq_range(theta, range.clone())?.sqrt();
            if norm > alpha {
                self.backend
                    .scale_range(theta, range, (alpha / norm) as f32)?;
            }
        }
        if !ball.signed_d {
            self.backend
                .clamp_min_range(theta, l.d_off()..l.d_off() + l.rank, 0.0)?;
        }
        Ok(())
    }
}
