//! [`Problem`]: the training data, the model layout and the ridge term bound to one backend. It is
//! what solvers see: a cost, a gradient, a curvature operator and a projection, each counted.
//!
//! E(θ) = ½Σe² + ½θᵀDθ, where D is the diagonal ridge weight of the model config (λ·|K_u| per
//! entry, or λ for the Frobenius form).

use crate::backend::{Backend, Curvature, EvalSums, PrecondKind, Shift};
use crate::comm::Comm;
use crate::data::Matrix;
use crate::error::Result;
use crate::model::{Layout, ModelConfig, ModelKind};
use std::cell::Cell;
use std::ops::Range;

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

/// This process's share of a run whose users are sharded across processes: its θ holds its own
/// user rows and every shared row (items, d). Each pass leaves the shared rows' parts and the
/// scalars partial; they are summed here, so every process holds the same shared rows.
pub struct Sharding<'b, V> {
    pub comm: &'b dyn Comm,
    /// 1 on the user coordinates; on the shared ones 1 on rank 0 and 0 elsewhere, so that the
    /// ranks' weighted dots add up to the whole dot.
    own: V,
    /// D ⊙ own: the ridge term's share.
    reg_own: V,
    shared: Vec<Range<usize>>,
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
    /// Present when the users are sharded across several processes.
    shard: Option<Sharding<'b, B::Vector>>,
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
            shard: None,
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
        Self::from_model_counts(
            backend,
            matrix,
            model,
            layout,
            curvature,
            &matrix.by_item.row_counts(),
        )
    }

    /// [`Problem::from_model`] with the items' entry counts given: a process of a sharded run
    /// holds only its users' entries, and the ridge weights of the shared item rows are those of
    /// the whole data.
    pub fn from_model_counts(
        backend: &'b B,
        matrix: &Matrix,
        model: &ModelConfig,
        layout: Layout,
        curvature: Curvature,
        item_counts: &[u32],
    ) -> Result<Self> {
        let reg = model.reg_diag(&layout, &matrix.by_user.row_counts(), item_counts);
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

    /// Shards this problem across the processes of `comm` (a no-op for one process): `self`
    /// holds this process's users and every item.
    pub fn with_comm(mut self, comm: &'b dyn Comm) -> Result<Self> {
        if comm.size() <= 1 {
            return Ok(self);
        }
        let shared = self.layout.shared_ranges();
        let mut own = vec![1f32; self.layout.len()];
        if comm.rank() != 0 {
            for r in &shared {
                own[r.clone()].fill(0.0);
            }
        }
        let reg = self.backend.download(&self.reg)?;
        let reg_own: Vec<f32> = reg.iter().zip(&own).map(|(d, o)| d * o).collect();
        self.shard = Some(Sharding {
            comm,
            own: self.backend.upload_params(&self.layout, &own)?,
            reg_own: self.backend.upload_params(&self.layout, &reg_own)?,
            shared,
        });
        Ok(self)
    }

    /// The communicator of a sharded problem (None in one process).
    pub fn comm(&self) -> Option<&'b dyn Comm> {
        self.shard.as_ref().map(|s| s.comm)
    }

    /// Sums scalars across processes (nothing to do in one).
    fn sum_scalars(&self, x: &mut [f64]) -> Result<()> {
        match &self.shard {
            Some(s) => s.comm.sum_f64(x),
            None => Ok(()),
        }
    }

    /// Sums the shared rows of `v` across processes (nothing to do in one).
    fn sum_shared(&self, v: &mut B::Vector) -> Result<()> {
        let Some(s) = &self.shard else {
            return Ok(());
        };
        let mut host = self.backend.read_ranges(v, &s.shared)?;
        s.comm.sum_f32(&mut host)?;
        self.backend.write_ranges(v, &s.shared, &host)
    }

    /// θᵀDθ: this process's share of the ridge sum (the caller sums the shares).
    fn ridge_share(&self, theta: &B::Vector) -> Result<f64> {
        let reg = self.shard.as_ref().map_or(&self.reg, |s| &s.reg_own);
        self.backend.wdot(reg, theta, theta)
    }

    /// True when `flag` holds on any process (each process's own view of a clock or a signal,
    /// made one decision).
    pub fn any(&self, flag: bool) -> Result<bool> {
        let mut v = [flag as u8 as f64];
        self.sum_scalars(&mut v)?;
        Ok(v[0] > 0.0)
    }

    /// xᵀy over the whole model.
    pub fn dot(&self, x: &B::Vector, y: &B::Vector) -> Result<f64> {
        match &self.shard {
            None => self.backend.dot(x, y),
            Some(s) => {
                let mut v = [self.backend.wdot(&s.own, x, y)?];
                s.comm.sum_f64(&mut v)?;
                Ok(v[0])
            }
        }
    }

    /// Σ d_k x_k y_k over the whole model.
    pub fn wdot(&self, d: &B::Vector, x: &B::Vector, y: &B::Vector) -> Result<f64> {
        match &self.shard {
            None => self.backend.wdot(d, x, y),
            Some(s) => {
                let mut w = self.backend.zeros_like(d)?;
                self.backend.mul_add(d, &s.own, &mut w)?;
                let mut v = [self.backend.wdot(&w, x, y)?];
                s.comm.sum_f64(&mut v)?;
                Ok(v[0])
            }
        }
    }

    /// Error sums of θ's predictions on `entries` (this process's users'), over every process.
    pub fn evaluate(
        &self,
        entries: &B::Entries,
        theta: &B::Vector,
        clip: (f32, f32),
    ) -> Result<EvalSums> {
        let e = self.backend.evaluate(entries, &self.layout, theta, clip)?;
        if self.shard.is_none() {
            return Ok(e);
        }
        let mut v = [e.count as f64, e.sse, e.sae, e.sse_clipped, e.sae_clipped];
        self.sum_scalars(&mut v)?;
        Ok(EvalSums {
            count: v[0] as u64,
            sse: v[1],
            sae: v[2],
            sse_clipped: v[3],
            sae_clipped: v[4],
        })
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
        let mut v = [sq, self.ridge_share(theta)?];
        self.sum_scalars(&mut v)?;
        self.count(|c| {
            c.passes += 1;
            c.losses += 1;
        });
        Ok(0.5 * (v[0] + v[1]))
    }

    /// g ← ∇E(θ); returns E(θ).
    pub fn gradient(&self, theta: &B::Vector, g: &mut B::Vector) -> Result<f64> {
        let sq = self
            .backend
            .gradient(&self.matrix, &self.layout, theta, g)?;
        self.sum_shared(g)?;
        self.backend.mul_add(&self.reg, theta, g)?;
        let mut v = [sq, self.ridge_share(theta)?];
        self.sum_scalars(&mut v)?;
        self.count(|c| {
            c.passes += 2;
            c.gradients += 1;
        });
        Ok(0.5 * (v[0] + v[1]))
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
        self.sum_shared(out)?;
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
        let (m, l, reg) = (&self.matrix, &self.layout, &self.reg);
        match &self.shard {
            None => self.backend.precond_build(m, l, theta, reg, shift, pc),
            Some(s) => {
                let comm = s.comm;
                let mut sum = |blocks: &mut [f32], d: &mut [f64]| -> Result<()> {
                    comm.sum_f32(blocks)?;
                    comm.sum_f64(d)
                };
                self.backend
                    .precond_build_summed(m, l, theta, reg, shift, pc, &mut sum)
            }
        }
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
            let mut sq = [self.backend.norm_sq_range(theta, range.clone())?];
            if range.start == l.p_off() {
                // U holds this process's users only.
                self.sum_scalars(&mut sq)?;
            }
            let norm = sq[0].sqrt();
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
