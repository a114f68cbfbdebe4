//! Preconditioned conjugate gradients for A·x = b with A applied matrix-free. The solver holds no
//! device code: it calls the operator, the preconditioner and the backend's BLAS-1, and reads back
//! only the scalars it needs (rᵀz and pᵀAp per iteration, and two dots at the end for the
//! quadratic model).
//!
//! Stopping (docs/ALGORITHMS.md, "Inexact Newton"): the residual in the preconditioned norm,
//! √(rᵀM⁻¹r) ≤ tol·√(bᵀM⁻¹b) (‖r‖ ≤ tol·‖b‖ without a preconditioner); or the quadratic model
//! φ(x) = ½xᵀAx − bᵀx no longer improving: over the last k = max(10, i/10) iterations it fell by
//! less than k·5·10⁻⁴ of its value; or the iteration limit; or non-positive curvature.

use crate::backend::Backend;
use crate::error::Result;

/// Relative progress per iteration below which the quadratic model counts as stalled.
const STALL_EPS: f64 = 5e-4;

/// Why CG stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgStop {
    /// The residual reached the tolerance.
    Converged,
    /// The quadratic model stopped improving.
    Stalled,
    /// The iteration limit.
    MaxIters,
    /// pᵀAp ≤ 0: the operator is not positive definite along p.
    NegativeCurvature,
}

/// The outcome of one CG solve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgOutcome {
    pub iters: usize,
    pub stop: CgStop,
    /// √(rᵀM⁻¹r) at the end (‖r‖ without a preconditioner).
    pub residual_norm: f64,
    /// xᵀb.
    pub xb: f64,
    /// xᵀr with the final residual r = b − Ax, so xᵀAx = xᵀb − xᵀr.
    pub xr: f64,
}

/// A matrix-free operator: `apply(v, out)` sets out ← A·v (or out ← M⁻¹v for a preconditioner).
pub type Operator<'a, V> = dyn FnMut(&V, &mut V) -> Result<()> + 'a;

/// When a solve stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgLimits {
    pub max_iters: usize,
    /// Relative tolerance on the (preconditioned) residual norm.
    pub rel_tol: f64,
    /// Also stop when the quadratic model stalls.
    pub stall: bool,
}

/// An inner product of two vectors.
pub type Dot<'a, V> = dyn Fn(&V, &V) -> Result<f64> + 'a;

/// Work vectors of CG, kept across solves.
pub struct ConjugateGradient<B: Backend> {
    r: B::Vector,
    z: B::Vector,
    p: B::Vector,
    ap: B::Vector,
}

impl<B: Backend> ConjugateGradient<B> {
    /// Work vectors laid out as `like` (the right-hand sides it will solve for).
    pub fn new(backend: &B, like: &B::Vector) -> Result<Self> {
        Ok(ConjugateGradient {
            r: backend.zeros_like(like)?,
            z: backend.zeros_like(like)?,
            p: backend.zeros_like(like)?,
            ap: backend.zeros_like(like)?,
        })
    }

    /// Solves A·x = b, preconditioned by `precond` (M⁻¹) when given. With `warm`, x holds the
    /// starting point on entry (one extra operator application); otherwise CG starts from 0.
    #[allow(clippy::too_many_arguments)]
    pub fn solve(
        &mut self,
        backend: &B,
        apply: &mut Operator<'_, B::Vector>,
        precond: Option<&mut Operator<'_, B::Vector>>,
        b: &B::Vector,
        x: &mut B::Vector,
        warm: bool,
        lim: CgLimits,
    ) -> Result<CgOutcome> {
        let dot = |x: &B::Vector, y: &B::Vector| backend.dot(x, y);
        self.solve_with(backend, &dot, apply, precond, b, x, warm, lim)
    }

    /// [`ConjugateGradient::solve`] with the inner product given (a sharded problem's
    /// [`crate::problem::Problem::dot`] sums across processes).
    #[allow(clippy::too_many_arguments)]
    pub fn solve_with(
        &mut self,
        backend: &B,
        dot: &Dot<'_, B::Vector>,
        apply: &mut Operator<'_, B::Vector>,
        mut precond: Option<&mut Operator<'_, B::Vector>>,
        b: &B::Vector,
        x: &mut B::Vector,
        warm: bool,
        lim: CgLimits,
    ) -> Result<CgOutcome> {
        let mut precondition = |r: &B::Vector, z: &mut B::Vector| -> Result<()> {
            match precond.as_mut() {
                Some(m) => m(r, z),
                None => backend.copy(r, z),
            }
        };
        // bᵀM⁻¹b fixes the tolerance; from x = 0 it is also the first rᵀz.
        precondition(b, &mut self.z)?;
        let bz = dot(b, &self.z)?;
        let mut phi = 0.0;
        if warm {
            apply(x, &mut self.ap)?;
            backend.waxpy(-1.0, &self.ap, b, &mut self.r)?;
            // φ(x) = ½xᵀ(Ax) − xᵀb = −½xᵀ(b + r).
            phi = -0.5 * (dot(x, b)? + dot(x, &self.r)?);
            if phi >= 0.0 || phi.is_nan() {
                // The old direction is no better than 0 here: start from 0.
                backend.fill(x, 0.0)?;
                backend.copy(b, &mut self.r)?;
                phi = 0.0;
            } else {
                precondition(&self.r, &mut self.z)?;
            }
        } else {
            backend.fill(x, 0.0)?;
            backend.copy(b, &mut self.r)?;
        }
        let mut rz = if phi < 0.0 {
            dot(&self.r, &self.z)?
        } else {
            bz
        };
        backend.copy(&self.z, &mut self.p)?;
        let tol = lim.rel_tol * bz.max(0.0).sqrt();
        let mut history = vec![phi];
        let mut iters = 0;
        let mut stop = CgStop::MaxIters;
        while iters < lim.max_iters {
            if rz.max(0.0).sqrt() <= tol {
                stop = CgStop::Converged;
                break;
            }
            apply(&self.p, &mut self.ap)?;
            let pap = dot(&self.p, &self.ap)?;
            if pap <= 0.0 || pap.is_nan() {
                stop = CgStop::NegativeCurvature;
                if iters == 0 && pap < 0.0 {
                    // Step along p to the magnitude of the quadratic, and let damping judge it.
                    backend.axpy((rz / -pap) as f32, &self.p, x)?;
                    backend.axpy((rz / pap) as f32, &self.ap, &mut self.r)?;
                }
                break;
            }
            let alpha = rz / pap;
            backend.axpy(alpha as f32, &self.p, x)?;
            backend.axpy(-alpha as f32, &self.ap, &mut self.r)?;
            phi -= 0.5 * alpha * rz;
            history.push(phi);
            iters += 1;
            precondition(&self.r, &mut self.z)?;
            let rz_new = dot(&self.r, &self.z)?;
            let beta = rz_new / rz;
            rz = rz_new;
            if lim.stall {
                let k = 10.max(iters / 10);
                if iters > k && phi < 0.0 && (phi - history[iters - k]) / phi < k as f64 * STALL_EPS
                {
                    stop = CgStop::Stalled;
                    break;
                }
            }
            backend.xpby(&self.z, beta as f32, &mut self.p)?;
        }
        if stop == CgStop::MaxIters && rz.max(0.0).sqrt() <= tol {
            stop = CgStop::Converged;
        }
        Ok(CgOutcome {
            iters,
            stop,
            residual_norm: rz.max(0.0).sqrt(),
            xb: dot(x, b)?,
            xr: dot(x, &self.r)?,
        })
    }
}
