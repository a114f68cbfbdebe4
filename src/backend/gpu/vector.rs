//! The vector ops (`VectorOps`): element-wise kernels and reductions, once per segment of the
//! vectors' blocking, partials concatenated in segment order.

use super::blocking::Blocking;
use super::shaders::{Kernel, Params};
use super::{GpuBackend, GpuVector, MAX_GROUPS, REDUCE_GROUPS};
use crate::backend::{AdamHyper, VectorOps};
use crate::error::{Error, Result};
use crate::model::Layout;
use std::ops::Range;
use std::sync::Arc;

/// Where in which vectors a kernel reads and writes: (binding, vector) for each vector operand.
type Operands<'a> = [(u32, &'a GpuVector)];

impl GpuBackend {
    pub(super) fn compatible(a: &Arc<Blocking>, b: &Arc<Blocking>) -> bool {
        Arc::ptr_eq(a, b) || a.compatible(b)
    }

    /// Fails unless all operands are segmented alike.
    pub(super) fn check_alike(vecs: &Operands) -> Result<()> {
        let first = &vecs[0].1.blocking;
        for (_, v) in &vecs[1..] {
            if !Self::compatible(first, &v.blocking) {
                return Err(Error::Unsupported(format!(
                    "vectors of lengths {} and {} are not laid out alike on the device (create \
                     θ-shaped vectors with upload_params/zeros_params/zeros_like)",
                    first.len, v.blocking.len
                )));
            }
        }
        Ok(())
    }

    pub(super) fn check_vector(&self, blocking: &Arc<Blocking>, v: &GpuVector) -> Result<()> {
        if !Self::compatible(blocking, &v.blocking) {
            return Err(Error::Unsupported(format!(
                "a vector of length {} ({} segments) is not laid out as the model's {} parameters \
                 ({} segments); create it with upload_params or zeros_params",
                v.blocking.len,
                v.segs.len(),
                blocking.len,
                blocking.segs.len()
            )));
        }
        Ok(())
    }

    /// Every segment of `v`, whole.
    pub(super) fn whole(v: &GpuVector) -> Vec<(usize, Range<usize>)> {
        v.blocking
            .segs
            .iter()
            .enumerate()
            .map(|(k, &n)| (k, 0..n))
            .collect()
    }

    pub(super) fn bindings<'a>(vecs: &'a Operands<'a>, seg: usize) -> Vec<(u32, &'a wgpu::Buffer)> {
        vecs.iter().map(|(b, v)| (*b, &v.segs[seg])).collect()
    }

    /// One element-wise dispatch per (segment, range): `n` = range length, `start` = its start.
    pub(super) fn elementwise(
        &self,
        kernel: Kernel,
        params: Params,
        jobs: &[(usize, Range<usize>)],
        vecs: &Operands,
    ) -> Result<()> {
        Self::check_alike(vecs)?;
        let mut st = self.lock();
        for (seg, r) in jobs.iter().filter(|(_, r)| !r.is_empty()) {
            let p = Params {
                n: r.len() as u32,
                start: r.start as u32,
                ..params
            };
            let bind = Self::bindings(vecs, *seg);
            self.dispatch(&mut st, kernel, p, &bind, Self::groups(r.len(), MAX_GROUPS));
        }
        Ok(())
    }

    /// One reduction dispatch per (segment, range), partials read once and added in order.
    pub(super) fn reduction(
        &self,
        kernel: Kernel,
        jobs: &[(usize, Range<usize>)],
        vecs: &Operands,
    ) -> Result<f64> {
        Self::check_alike(vecs)?;
        let jobs: Vec<_> = jobs.iter().filter(|(_, r)| !r.is_empty()).collect();
        if jobs.is_empty() {
            return Ok(0.0);
        }
        let mut st = self.lock();
        let slots: usize = jobs
            .iter()
            .map(|(_, r)| Self::groups(r.len(), REDUCE_GROUPS) as usize)
            .sum();
        self.reserve_partials(&mut st, slots);
        let partials = st.partials.clone();
        let mut part = 0usize;
        for (seg, r) in jobs {
            let g = Self::groups(r.len(), REDUCE_GROUPS);
            let p = Params {
                n: r.len() as u32,
                start: r.start as u32,
                part: part as u32,
                ..Default::default()
            };
            let mut bind = Self::bindings(vecs, *seg);
            bind.push((4, &partials));
            self.dispatch(&mut st, kernel, p, &bind, g);
            part += g as usize;
        }
        let parts = self.read_partials(&mut st, part)?;
        Ok(parts.iter().map(|&x| x as f64).sum())
    }
}

impl VectorOps for GpuBackend {
    type Vector = GpuVector;

    fn upload(&self, data: &[f32]) -> Result<GpuVector> {
        self.new_vector(
            Arc::new(Blocking::flat(data.len(), self.seg_cap())),
            Some(data),
        )
    }

    fn zeros(&self, len: usize) -> Result<GpuVector> {
        self.new_vector(Arc::new(Blocking::flat(len, self.seg_cap())), None)
    }

    fn upload_params(&self, layout: &Layout, data: &[f32]) -> Result<GpuVector> {
        if data.len() != layout.len() {
            return Err(Error::Unsupported(format!(
                "{} values given for a model of {} parameters",
                data.len(),
                layout.len()
            )));
        }
        self.new_vector(self.param_blocking(layout)?, Some(data))
    }

    fn zeros_params(&self, layout: &Layout) -> Result<GpuVector> {
        self.new_vector(self.param_blocking(layout)?, None)
    }

    fn zeros_like(&self, v: &GpuVector) -> Result<GpuVector> {
        self.new_vector(v.blocking.clone(), None)
    }

    fn download(&self, v: &GpuVector) -> Result<Vec<f32>> {
        let b = &v.blocking;
        let mut out = vec![0f32; b.len];
        let mut st = self.lock();
        for (k, &n) in b.segs.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let bytes = self.read_back(&mut st, &v.segs[k], n as u64 * 4)?;
            b.gather(
                k,
                bytemuck::cast_slice::<u8, f32>(&bytes[..n * 4]),
                &mut out,
            );
        }
        Ok(out)
    }

    fn write_ranges(&self, v: &mut GpuVector, ranges: &[Range<usize>], data: &[f32]) -> Result<()> {
        // Through the host, once for all ranges: a sharded run's shared-row sums (no GPU here to
        // tune a partial upload against).
        let mut host = self.download(v)?;
        let mut at = 0;
        for r in ranges {
            host[r.clone()].copy_from_slice(&data[at..at + r.len()]);
            at += r.len();
        }
        *v = self.new_vector(v.blocking.clone(), Some(&host))?;
        Ok(())
    }

    fn vec_len(&self, v: &GpuVector) -> usize {
        v.blocking.len
    }

    fn copy(&self, src: &GpuVector, dst: &mut GpuVector) -> Result<()> {
        self.elementwise(
            Kernel::Copy,
            Params::default(),
            &Self::whole(src),
            &[(1, src), (3, dst)],
        )
    }

    fn fill(&self, v: &mut GpuVector, value: f32) -> Result<()> {
        let p = Params {
            a: value,
            ..Default::default()
        };
        self.elementwise(Kernel::Fill, p, &Self::whole(v), &[(3, v)])
    }

    fn axpy(&self, a: f32, x: &GpuVector, y: &mut GpuVector) -> Result<()> {
        let p = Params {
            a,
            ..Default::default()
        };
        self.elementwise(Kernel::Axpy, p, &Self::whole(x), &[(1, x), (3, y)])
    }

    fn xpby(&self, x: &GpuVector, b: f32, y: &mut GpuVector) -> Result<()> {
        let p = Params {
            b,
            ..Default::default()
        };
        self.elementwise(Kernel::Xpby, p, &Self::whole(x), &[(1, x), (3, y)])
    }

    fn waxpy(&self, a: f32, x: &GpuVector, y: &GpuVector, out: &mut GpuVector) -> Result<()> {
        let p = Params {
            a,
            ..Default::default()
        };
        self.elementwise(
            Kernel::Waxpy,
            p,
            &Self::whole(x),
            &[(1, x), (2, y), (3, out)],
        )
    }

    fn scale(&self, a: f32, x: &mut GpuVector) -> Result<()> {
        let p = Params {
            a,
            ..Default::default()
        };
        self.elementwise(Kernel::Scale, p, &Self::whole(x), &[(3, x)])
    }

    fn abs_shift_sq(&self, x: &GpuVector, a: f32, out: &mut GpuVector) -> Result<()> {
        let p = Params {
            a,
            ..Default::default()
        };
        self.elementwise(Kernel::AbsShiftSq, p, &Self::whole(x), &[(1, x), (3, out)])
    }

    fn mul_add(&self, d: &GpuVector, x: &GpuVector, y: &mut GpuVector) -> Result<()> {
        self.elementwise(
            Kernel::MulAdd,
            Params::default(),
            &Self::whole(x),
            &[(1, d), (2, x), (3, y)],
        )
    }

    fn dot(&self, x: &GpuVector, y: &GpuVector) -> Result<f64> {
        self.reduction(Kernel::Dot, &Self::whole(x), &[(1, x), (2, y)])
    }

    fn wdot(&self, d: &GpuVector, x: &GpuVector, y: &GpuVector) -> Result<f64> {
        self.reduction(Kernel::Wdot, &Self::whole(x), &[(1, x), (2, y), (3, d)])
    }

    fn norm_sq_range(&self, x: &GpuVector, range: Range<usize>) -> Result<f64> {
        self.reduction(Kernel::SumSq, &x.blocking.ranges(range), &[(1, x)])
    }

    fn scale_range(&self, x: &mut GpuVector, range: Range<usize>, a: f32) -> Result<()> {
        let p = Params {
            a,
            ..Default::default()
        };
        let jobs = x.blocking.ranges(range);
        self.elementwise(Kernel::Scale, p, &jobs, &[(3, x)])
    }

    fn clamp_min_range(&self, x: &mut GpuVector, range: Range<usize>, lo: f32) -> Result<()> {
        let p = Params {
            a: lo,
            ..Default::default()
        };
        let jobs = x.blocking.ranges(range);
        self.elementwise(Kernel::ClampMin, p, &jobs, &[(3, x)])
    }

    fn adam_step(
        &self,
        theta: &mut GpuVector,
        g: &GpuVector,
        m: &mut GpuVector,
        v: &mut GpuVector,
        h: AdamHyper,
    ) -> Result<()> {
        let p = Params {
            a: h.lr,
            b: h.beta1,
            c: h.beta2,
            d: h.eps,
            e: h.c1,
            g: h.c2,
            ..Default::default()
        };
        self.elementwise(
            Kernel::Adam,
            p,
            &Self::whole(theta),
            &[(1, g), (3, theta), (4, m), (5, v)],
        )
    }
}
