//! The compute layer. One [`Backend`] trait, two implementations: [`cpu::CpuBackend`] (rayon) and
//! [`gpu::GpuBackend`] (wgpu). A backend owns device-resident vectors and rating matrices and
//! executes operations on them; it never decides anything (tolerances, convergence, damping are the
//! solvers' business). The host sees only the scalars it asks for (dots, norms, losses), returned
//! as f64 from per-partition partials added in a fixed order.

pub mod any;
pub mod cpu;
pub mod gpu;
pub mod precond;

pub use precond::{PrecondKind, Shift};

use crate::data::{Matrix, Ratings};
use crate::error::Result;
use crate::model::Layout;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Which curvature the product computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Curvature {
    /// G = JᵀJ: positive semidefinite.
    #[default]
    GaussNewton,
    /// The true Hessian of ½Σe²: G minus the residual-weighted second derivatives of r̂. Indefinite.
    Hessian,
}

pub use crate::model::EvalSums;

/// What a backend runs on, for logs and summaries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceInfo {
    /// `cpu` or `gpu`.
    pub backend: String,
    /// Human-readable device name (CPU thread count, or the adapter name and API).
    pub name: String,
    /// Device type as wgpu reports it (`Cpu` for lavapipe), or `Host`.
    pub device_type: String,
}

/// Element-wise and reduction operations on device vectors (the BLAS-1 needed by CG, GD and Adam).
///
/// Every reduction returns an f64 computed from per-partition partials summed in a fixed order, so
/// one input gives the same bits on every run.
pub trait VectorOps {
    /// A device-resident f32 vector.
    type Vector: Send + Sync;

    /// A flat vector (any length; the GPU cuts it into bindings as needed).
    fn upload(&self, data: &[f32]) -> Result<Self::Vector>;
    /// A flat zero vector.
    fn zeros(&self, len: usize) -> Result<Self::Vector>;
    /// A vector laid out as θ of `layout`: what the sparse ops take. On the GPU a θ larger than
    /// one storage binding is stored in row blocks; the CPU keeps every vector flat.
    fn upload_params(&self, layout: &Layout, data: &[f32]) -> Result<Self::Vector> {
        debug_assert_eq!(data.len(), layout.len());
        self.upload(data)
    }
    /// A zero vector laid out as θ of `layout`.
    fn zeros_params(&self, layout: &Layout) -> Result<Self::Vector> {
        self.zeros(layout.len())
    }
    /// A zero vector laid out as `v`.
    fn zeros_like(&self, v: &Self::Vector) -> Result<Self::Vector> {
        self.zeros(self.vec_len(v))
    }
    fn download(&self, v: &Self::Vector) -> Result<Vec<f32>>;
    fn vec_len(&self, v: &Self::Vector) -> usize;
    /// v[r] for each of `ranges`, one after another, to the host (what a sharded run sums across
    /// processes). The default downloads the whole vector once.
    fn read_ranges(&self, v: &Self::Vector, ranges: &[Range<usize>]) -> Result<Vec<f32>> {
        let all = self.download(v)?;
        Ok(ranges
            .iter()
            .flat_map(|r| all[r.clone()].iter().copied())
            .collect())
    }
    /// v[r] ← the next r.len() values of `data`, for each of `ranges` in turn.
    fn write_ranges(
        &self,
        v: &mut Self::Vector,
        ranges: &[Range<usize>],
        data: &[f32],
    ) -> Result<()>;

    /// dst ← src.
    fn copy(&self, src: &Self::Vector, dst: &mut Self::Vector) -> Result<()>;
    /// v ← value.
    fn fill(&self, v: &mut Self::Vector, value: f32) -> Result<()>;
    /// y ← y + a·x.
    fn axpy(&self, a: f32, x: &Self::Vector, y: &mut Self::Vector) -> Result<()>;
    /// y ← x + b·y (the CG direction update).
    fn xpby(&self, x: &Self::Vector, b: f32, y: &mut Self::Vector) -> Result<()>;
    /// out ← y + a·x (the SAM ascent point θ̃ = θ + a·g).
    fn waxpy(
        &self,
        a: f32,
        x: &Self::Vector,
        y: &Self::Vector,
        out: &mut Self::Vector,
    ) -> Result<()>;
    /// x ← a·x.
    fn scale(&self, a: f32, x: &mut Self::Vector) -> Result<()>;
    /// y ← y + d⊙x.
    fn mul_add(&self, d: &Self::Vector, x: &Self::Vector, y: &mut Self::Vector) -> Result<()>;
    /// xᵀy.
    fn dot(&self, x: &Self::Vector, y: &Self::Vector) -> Result<f64>;
    /// Σ d_k x_k y_k.
    fn wdot(&self, d: &Self::Vector, x: &Self::Vector, y: &Self::Vector) -> Result<f64>;
    /// Σ_{k∈range} x_k².
    fn norm_sq_range(&self, x: &Self::Vector, range: Range<usize>) -> Result<f64>;
    /// x_k ← a·x_k for k ∈ range.
    fn scale_range(&self, x: &mut Self::Vector, range: Range<usize>, a: f32) -> Result<()>;
    /// x_k ← max(x_k, lo) for k ∈ range.
    fn clamp_min_range(&self, x: &mut Self::Vector, range: Range<usize>, lo: f32) -> Result<()>;
    /// out ← (|x| + a)² element-wise (the ASAM metric).
    fn abs_shift_sq(&self, x: &Self::Vector, a: f32, out: &mut Self::Vector) -> Result<()>;
    /// One fused Adam step: m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    /// θ ← θ − lr·(c₁m)/(√(c₂v) + ε), with the bias corrections c₁ = 1/(1−β₁ᵗ), c₂ = 1/(1−β₂ᵗ).
    #[allow(clippy::too_many_arguments)]
    fn adam_step(
        &self,
        theta: &mut Self::Vector,
        g: &Self::Vector,
        m: &mut Self::Vector,
        v: &mut Self::Vector,
        hyper: AdamHyper,
    ) -> Result<()>;
}

/// Sums a preconditioner's item side (f32) and d partials (f64) across processes.
pub type SumHook<'a> = &'a mut dyn FnMut(&mut [f32], &mut [f64]) -> Result<()>;

/// Scalars of one Adam step (see [`VectorOps::adam_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub c1: f32,
    pub c2: f32,
}

/// Sparse model operations: one pass over the known entries each, as row reductions over the CSR
/// (user side) and the CSC (item side). The ridge term is not included; the problem adds it with
/// vector ops.
pub trait SparseOps: VectorOps {
    /// Training data resident on the device (CSR by user and CSC by item).
    type Matrix: Send + Sync;
    /// Evaluation entries resident on the device.
    type Entries: Send + Sync;
    /// A factored preconditioner resident on the device.
    type Precond: Send + Sync;

    /// Uploads the training matrix for a model of `layout` (the GPU tiles it to match the row
    /// blocks of θ).
    fn upload_matrix(&self, m: &Matrix, layout: &Layout) -> Result<Self::Matrix>;
    /// Uploads evaluation entries for a model of `layout`.
    fn upload_entries(&self, r: &Ratings, layout: &Layout) -> Result<Self::Entries>;

    /// Σ e_ui² over the training entries at θ, with e = r − r̂.
    fn sq_error(&self, m: &Self::Matrix, layout: &Layout, theta: &Self::Vector) -> Result<f64>;
    /// grad ← ∇_θ ½Σe² = Jᵀ(−e); returns Σe² (two passes: users, then items).
    fn gradient(
        &self,
        m: &Self::Matrix,
        layout: &Layout,
        theta: &Self::Vector,
        grad: &mut Self::Vector,
    ) -> Result<f64>;
    /// out ← G·v with G = JᵀJ at θ, or the true Hessian of ½Σe² (two passes).
    fn curvature_product(
        &self,
        m: &Self::Matrix,
        layout: &Layout,
        theta: &Self::Vector,
        v: &Self::Vector,
        out: &mut Self::Vector,
        curvature: Curvature,
    ) -> Result<()>;
    /// A preconditioner's storage for a model of `layout` on `m`, for curvature systems with a
    /// SAM term when `sam`. `block_jacobi` falls back to `jacobi` where the blocks are wider than
    /// the device factors ([`precond::max_block_width`]); [`SparseOps::precond_kind`] says which.
    fn precond_new(
        &self,
        m: &Self::Matrix,
        layout: &Layout,
        kind: PrecondKind,
        sam: bool,
    ) -> Result<Self::Precond>;
    /// The preconditioner in force (after any fallback).
    fn precond_kind(&self, pc: &Self::Precond) -> PrecondKind;
    /// Builds M at θ: the Gauss–Newton blocks (or diagonal) of every user and item row (one pass
    /// per side), plus the ridge diagonal `reg`, shifted by `shift` and factored.
    fn precond_build(
        &self,
        m: &Self::Matrix,
        layout: &Layout,
        theta: &Self::Vector,
        reg: &Self::Vector,
        shift: Shift,
        pc: &mut Self::Precond,
    ) -> Result<()>;
    /// [`SparseOps::precond_build`] for a run sharded by users across processes: the item side
    /// (and UDV's d diagonal) is built from this process's entries only, so `sum` is handed the
    /// unfactored item blocks (block_jacobi, one packed block per item) or diagonal (jacobi, the
    /// item coordinates row by row) and the d partials, to sum them across processes, before
    /// they are factored.
    #[allow(clippy::too_many_arguments)]
    fn precond_build_summed(
        &self,
        m: &Self::Matrix,
        layout: &Layout,
        theta: &Self::Vector,
        reg: &Self::Vector,
        shift: Shift,
        pc: &mut Self::Precond,
        sum: SumHook<'_>,
    ) -> Result<()> {
        let _ = (m, layout, theta, reg, shift, pc, sum);
        Err(crate::error::Error::Unsupported(
            "this backend cannot sum a preconditioner across processes; under mpirun set \
             solver.preconditioner to \"none\", or train on the CPU backend"
                .into(),
        ))
    }
    /// z ← M⁻¹ r, row by row on the device.
    fn precond_apply(
        &self,
        pc: &Self::Precond,
        layout: &Layout,
        r: &Self::Vector,
        z: &mut Self::Vector,
    ) -> Result<()>;

    /// The per-row SAM scale: on every coordinate of each user row (factors and bias), each item
    /// row, and the d block of UDV, out ← ρ/‖g_row‖ (0 where g_row = 0).
    fn row_scale(
        &self,
        layout: &Layout,
        g: &Self::Vector,
        rho: f32,
        out: &mut Self::Vector,
    ) -> Result<()>;

    /// Error sums of r̂ against the given entries; clipped sums clip r̂ to `clip`.
    fn evaluate(
        &self,
        e: &Self::Entries,
        layout: &Layout,
        theta: &Self::Vector,
        clip: (f32, f32),
    ) -> Result<EvalSums>;
}

/// A compute device: vector and sparse ops, plus device facts and synchronisation.
pub trait Backend: SparseOps + Send + Sync {
    fn info(&self) -> DeviceInfo;
    /// Blocks until all submitted work has finished (inside timed regions of benchmarks).
    fn sync(&self) -> Result<()>;
}

/// Splits `0..n` into consecutive ranges of at most `chunk` elements. The partition depends only on
/// `n` and `chunk`, which fixes the order of every reduction built on it.
pub fn partition(n: usize, chunk: usize) -> impl Iterator<Item = Range<usize>> {
    let chunk = chunk.max(1);
    (0..n.div_ceil(chunk)).map(move |k| k * chunk..((k + 1) * chunk).min(n))
}

/// Checks that a matrix and a layout describe the same users and items.
pub fn check_shape(users: usize, items: usize, layout: &Layout) -> Result<()> {
    if users != layout.n_users || items != layout.n_items {
        return Err(crate::error::Error::Unsupported(format!(
            "data of {users} users × {items} items does not match a model of {} users × {} items",
            layout.n_users, layout.n_items
        )));
    }
    Ok(())
}

/// Checks that every evaluation entry names a user and an item of `layout`.
pub fn check_entries(r: &Ratings, layout: &Layout) -> Result<()> {
    let bad = (0..r.nnz())
        .find(|&k| r.users[k] as usize >= layout.n_users || r.items[k] as usize >= layout.n_items);
    match bad {
        Some(k) => Err(crate::error::Error::Unsupported(format!(
            "evaluation entry {k} (user {}, item {}) is outside a model of {} users × {} items",
            r.users[k], r.items[k], layout.n_users, layout.n_items
        ))),
        None => Ok(()),
    }
}
