//! Dispatch code for every backend op, mirroring `backend/cpu`: one function per kernel call, with
//! the grid, the bindings and the partial slots it needs.

use super::shaders::{
    Kernel, Params, FLAG_BIASES, FLAG_DBLOCK, FLAG_HESSIAN, FLAG_UDV, FLAG_WRITE,
};
use super::{GpuBackend, GpuVector, State};
use crate::backend::{AdamHyper, Curvature, EvalSums, SparseOps, VectorOps};
use crate::data::{Compressed, Matrix, Ratings};
use crate::error::{Error, Result};
use crate::model::{Layout, ModelKind};
use std::ops::Range;

/// Most workgroups of an element-wise grid (the per-dimension limit).
const MAX_GROUPS: u32 = 65_535;
/// Workgroups of a reduction (so at most this many partials per reduction).
const REDUCE_GROUPS: u32 = 1024;
/// Workgroups of a row pass per chunk.
const ROW_GROUPS: u32 = 4096;

/// One chunk of a compressed side: a run of rows and their entries.
struct Chunk {
    row_start: u32,
    n_rows: u32,
    rowptr: wgpu::Buffer,
    ent: wgpu::Buffer,
}

/// One side (CSR by user or CSC by item) on the device, in chunks.
pub struct GpuSide {
    chunks: Vec<Chunk>,
}

/// The training matrix on the device.
pub struct GpuMatrix {
    users: GpuSide,
    items: GpuSide,
}

impl GpuMatrix {
    /// Chunks per side (users, items): more than one means the chunked path runs.
    pub fn chunk_counts(&self) -> (usize, usize) {
        (self.users.chunks.len(), self.items.chunks.len())
    }
}

/// Evaluation entries on the device, in chunks of (user, item, rating) triplets.
pub struct GpuEntries {
    chunks: Vec<(u32, wgpu::Buffer)>,
}

impl GpuBackend {
    fn upload_side(&self, what: &str, c: &Compressed) -> Result<GpuSide> {
        let max_entries = (self.chunk_cap / 8) as usize;
        let max_rows = (self.chunk_cap / 4) as usize - 1;
        let mut chunks = Vec::new();
        let mut r0 = 0usize;
        while r0 < c.n_rows {
            let base = c.ptr[r0] as usize;
            let mut r1 = r0;
            while r1 < c.n_rows
                && r1 - r0 < max_rows
                && (c.ptr[r1 + 1] as usize - base) <= max_entries
            {
                r1 += 1;
            }
            if r1 == r0 {
                return Err(Error::DeviceMemory {
                    what: format!("{what} row {r0} ({} entries)", c.row_len(r0)),
                    needed: c.row_len(r0) as u64 * 8,
                    available: format!("one rating chunk holds at most {} bytes", self.chunk_cap),
                });
            }
            let end = c.ptr[r1] as usize;
            let rowptr: Vec<u32> = c.ptr[r0..=r1]
                .iter()
                .map(|&p| (p as usize - base) as u32)
                .collect();
            let mut ent = Vec::with_capacity(2 * (end - base));
            for k in base..end {
                ent.push(c.index[k]);
                ent.push(c.values[k].to_bits());
            }
            chunks.push(Chunk {
                row_start: r0 as u32,
                n_rows: (r1 - r0) as u32,
                rowptr: self.storage_buffer(
                    &format!("{what} row offsets"),
                    rowptr.len() as u64 * 4,
                    Some(bytemuck::cast_slice(&rowptr)),
                )?,
                ent: self.storage_buffer(
                    &format!("{what} entries"),
                    ent.len() as u64 * 4,
                    Some(bytemuck::cast_slice(&ent)),
                )?,
            });
            r0 = r1;
        }
        Ok(GpuSide { chunks })
    }

    fn vec_params(n: usize) -> Params {
        Params {
            n: n as u32,
            ..Default::default()
        }
    }

    fn elementwise(
        &self,
        kernel: Kernel,
        params: Params,
        bind: &[(u32, &wgpu::Buffer)],
    ) -> Result<()> {
        if params.n == 0 {
            return Ok(());
        }
        let mut st = self.lock();
        self.dispatch(
            &mut st,
            kernel,
            params,
            bind,
            Self::groups(params.n as usize, MAX_GROUPS),
        );
        Ok(())
    }

    fn reduction(
        &self,
        kernel: Kernel,
        params: Params,
        bind: &[(u32, &wgpu::Buffer)],
    ) -> Result<f64> {
        if params.n == 0 {
            return Ok(0.0);
        }
        let mut st = self.lock();
        let g = Self::groups(params.n as usize, REDUCE_GROUPS);
        self.reserve_partials(&mut st, g as usize);
        let partials = st.partials.clone();
        let mut b = bind.to_vec();
        b.push((4, &partials));
        self.dispatch(&mut st, kernel, params, &b, g);
        let parts = self.read_partials(&mut st, g as usize)?;
        Ok(parts.iter().map(|&x| x as f64).sum())
    }

    fn model_params(layout: &Layout, side_users: bool) -> Params {
        let mut flags = 0;
        if layout.has_biases() {
            flags |= FLAG_BIASES;
        }
        if layout.kind == ModelKind::Udv {
            flags |= FLAG_UDV;
        }
        let (own, other, ob, tb) = if side_users {
            (
                layout.p_off(),
                layout.q_off(),
                layout.b_off(),
                layout.c_off(),
            )
        } else {
            (
                layout.q_off(),
                layout.p_off(),
                layout.c_off(),
                layout.b_off(),
            )
        };
        Params {
            f: layout.rank as u32,
            flags,
            own: own as u32,
            other: other as u32,
            own_bias: ob as u32,
            other_bias: tb as u32,
            d_off: layout.d_off() as u32,
            a: layout.mu,
            ..Default::default()
        }
    }

    /// Records a row pass over one side; returns the partial slots it used.
    #[allow(clippy::too_many_arguments)]
    fn row_pass(
        &self,
        st: &mut State,
        kernel: Kernel,
        side: &GpuSide,
        base: Params,
        theta: &wgpu::Buffer,
        dir: Option<&wgpu::Buffer>,
        out: &wgpu::Buffer,
        part0: usize,
    ) -> usize {
        let mut part = part0;
        let scratch = st.scratch.clone();
        let partials = st.partials.clone();
        for ch in &side.chunks {
            if ch.n_rows == 0 {
                continue;
            }
            let g = Self::groups(ch.n_rows as usize, ROW_GROUPS);
            let params = Params {
                n: ch.n_rows,
                start: ch.row_start,
                part: part as u32,
                ..base
            };
            let mut bind: Vec<(u32, &wgpu::Buffer)> = vec![
                (1, &ch.rowptr),
                (2, &ch.ent),
                (3, theta),
                (5, out),
                (6, &scratch),
            ];
            match kernel {
                Kernel::GradRows => bind.push((7, &partials)),
                _ => bind.push((4, dir.expect("curvature passes take a direction"))),
            }
            self.dispatch(st, kernel, params, &bind, g);
            if kernel == Kernel::GradRows {
                part += g as usize;
            }
        }
        part - part0
    }

    fn row_slots(side: &GpuSide) -> usize {
        side.chunks
            .iter()
            .map(|c| Self::groups(c.n_rows as usize, ROW_GROUPS) as usize)
            .sum()
    }

    /// Gradient (with `out`) or loss (without) over both or one side.
    fn grad_or_loss(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        theta: &GpuVector,
        out: Option<&GpuVector>,
    ) -> Result<f64> {
        let mut st = self.lock();
        let udv = layout.kind == ModelKind::Udv;
        let user_slots = Self::row_slots(&m.users);
        self.reserve_partials(&mut st, user_slots + Self::row_slots(&m.items));
        if udv && out.is_some() {
            self.reserve_scratch(&mut st, layout.n_users * layout.rank)?;
        }
        let dummy = st.dummy[0].clone();
        let target = out.map(|o| &o.buf).unwrap_or(&dummy);
        let write = if out.is_some() { FLAG_WRITE } else { 0 };
        let mut pu = Self::model_params(layout, true);
        pu.flags |= write | if udv { FLAG_DBLOCK } else { 0 };
        let used = self.row_pass(
            &mut st,
            Kernel::GradRows,
            &m.users,
            pu,
            &theta.buf,
            None,
            target,
            0,
        );
        if out.is_some() {
            let mut pi = Self::model_params(layout, false);
            pi.flags |= write;
            self.row_pass(
                &mut st,
                Kernel::GradRows,
                &m.items,
                pi,
                &theta.buf,
                None,
                target,
                used,
            );
            if udv {
                self.d_colsum(&mut st, layout, target);
            }
        }
        let parts = self.read_partials(&mut st, used)?;
        Ok(parts.iter().map(|&x| x as f64).sum())
    }

    fn d_colsum(&self, st: &mut State, layout: &Layout, out: &wgpu::Buffer) {
        let scratch = st.scratch.clone();
        let params = Params {
            n: layout.n_users as u32,
            f: layout.rank as u32,
            d_off: layout.d_off() as u32,
            ..Default::default()
        };
        self.dispatch(
            st,
            Kernel::DColsum,
            params,
            &[(5, out), (6, &scratch)],
            layout.rank as u32,
        );
    }

    fn check_vector(&self, layout: &Layout, v: &GpuVector) -> Result<()> {
        if v.len != layout.len() {
            return Err(Error::Unsupported(format!(
                "vector of length {} does not match the model's {} parameters",
                v.len,
                layout.len()
            )));
        }
        Ok(())
    }
}

impl VectorOps for GpuBackend {
    type Vector = GpuVector;

    fn upload(&self, data: &[f32]) -> Result<GpuVector> {
        let buf = self.storage_buffer(
            "vector",
            data.len() as u64 * 4,
            Some(bytemuck::cast_slice(data)),
        )?;
        Ok(GpuVector {
            buf,
            len: data.len(),
        })
    }

    fn zeros(&self, len: usize) -> Result<GpuVector> {
        // New wgpu buffers are zero-initialised.
        let buf = self.storage_buffer("vector", len as u64 * 4, None)?;
        Ok(GpuVector { buf, len })
    }

    fn download(&self, v: &GpuVector) -> Result<Vec<f32>> {
        if v.len == 0 {
            return Ok(Vec::new());
        }
        let mut st = self.lock();
        let bytes = self.read_back(&mut st, &v.buf, v.len as u64 * 4)?;
        Ok(bytemuck::cast_slice::<u8, f32>(&bytes[..v.len * 4]).to_vec())
    }

    fn vec_len(&self, v: &GpuVector) -> usize {
        v.len
    }

    fn copy(&self, src: &GpuVector, dst: &mut GpuVector) -> Result<()> {
        self.elementwise(
            Kernel::Copy,
            Self::vec_params(src.len),
            &[(1, &src.buf), (3, &dst.buf)],
        )
    }

    fn fill(&self, v: &mut GpuVector, value: f32) -> Result<()> {
        let p = Params {
            a: value,
            ..Self::vec_params(v.len)
        };
        self.elementwise(Kernel::Fill, p, &[(3, &v.buf)])
    }

    fn axpy(&self, a: f32, x: &GpuVector, y: &mut GpuVector) -> Result<()> {
        let p = Params {
            a,
            ..Self::vec_params(x.len)
        };
        self.elementwise(Kernel::Axpy, p, &[(1, &x.buf), (3, &y.buf)])
    }

    fn xpby(&self, x: &GpuVector, b: f32, y: &mut GpuVector) -> Result<()> {
        let p = Params {
            b,
            ..Self::vec_params(x.len)
        };
        self.elementwise(Kernel::Xpby, p, &[(1, &x.buf), (3, &y.buf)])
    }

    fn waxpy(&self, a: f32, x: &GpuVector, y: &GpuVector, out: &mut GpuVector) -> Result<()> {
        let p = Params {
            a,
            ..Self::vec_params(x.len)
        };
        self.elementwise(Kernel::Waxpy, p, &[(1, &x.buf), (2, &y.buf), (3, &out.buf)])
    }

    fn scale(&self, a: f32, x: &mut GpuVector) -> Result<()> {
        let n = x.len;
        self.scale_range(x, 0..n, a)
    }

    fn mul_add(&self, d: &GpuVector, x: &GpuVector, y: &mut GpuVector) -> Result<()> {
        self.elementwise(
            Kernel::MulAdd,
            Self::vec_params(x.len),
            &[(1, &d.buf), (2, &x.buf), (3, &y.buf)],
        )
    }

    fn dot(&self, x: &GpuVector, y: &GpuVector) -> Result<f64> {
        self.reduction(
            Kernel::Dot,
            Self::vec_params(x.len),
            &[(1, &x.buf), (2, &y.buf)],
        )
    }

    fn wdot(&self, d: &GpuVector, x: &GpuVector, y: &GpuVector) -> Result<f64> {
        self.reduction(
            Kernel::Wdot,
            Self::vec_params(x.len),
            &[(1, &x.buf), (2, &y.buf), (3, &d.buf)],
        )
    }

    fn norm_sq_range(&self, x: &GpuVector, range: Range<usize>) -> Result<f64> {
        let p = Params {
            n: range.len() as u32,
            start: range.start as u32,
            ..Default::default()
        };
        self.reduction(Kernel::SumSq, p, &[(1, &x.buf)])
    }

    fn scale_range(&self, x: &mut GpuVector, range: Range<usize>, a: f32) -> Result<()> {
        let p = Params {
            n: range.len() as u32,
            start: range.start as u32,
            a,
            ..Default::default()
        };
        self.elementwise(Kernel::Scale, p, &[(3, &x.buf)])
    }

    fn clamp_min_range(&self, x: &mut GpuVector, range: Range<usize>, lo: f32) -> Result<()> {
        let p = Params {
            n: range.len() as u32,
            start: range.start as u32,
            a: lo,
            ..Default::default()
        };
        self.elementwise(Kernel::ClampMin, p, &[(3, &x.buf)])
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
            ..Self::vec_params(theta.len)
        };
        self.elementwise(
            Kernel::Adam,
            p,
            &[(1, &g.buf), (3, &theta.buf), (4, &m.buf), (5, &v.buf)],
        )
    }
}

impl SparseOps for GpuBackend {
    type Matrix = GpuMatrix;
    type Entries = GpuEntries;

    fn upload_matrix(&self, m: &Matrix) -> Result<GpuMatrix> {
        Ok(GpuMatrix {
            users: self.upload_side("ratings by user", &m.by_user)?,
            items: self.upload_side("ratings by item", &m.by_item)?,
        })
    }

    fn upload_entries(&self, r: &Ratings) -> Result<GpuEntries> {
        let per = (self.chunk_cap / 12) as usize;
        let mut chunks = Vec::new();
        for start in (0..r.nnz()).step_by(per.max(1)) {
            let end = (start + per).min(r.nnz());
            let mut coo = Vec::with_capacity(3 * (end - start));
            for k in start..end {
                coo.extend_from_slice(&[r.users[k], r.items[k], r.values[k].to_bits()]);
            }
            let buf = self.storage_buffer(
                "evaluation entries",
                coo.len() as u64 * 4,
                Some(bytemuck::cast_slice(&coo)),
            )?;
            chunks.push(((end - start) as u32, buf));
        }
        Ok(GpuEntries { chunks })
    }

    fn sq_error(&self, m: &GpuMatrix, layout: &Layout, theta: &GpuVector) -> Result<f64> {
        self.check_vector(layout, theta)?;
        self.grad_or_loss(m, layout, theta, None)
    }

    fn gradient(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        theta: &GpuVector,
        grad: &mut GpuVector,
    ) -> Result<f64> {
        self.check_vector(layout, theta)?;
        self.check_vector(layout, grad)?;
        self.grad_or_loss(m, layout, theta, Some(grad))
    }

    fn curvature_product(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        theta: &GpuVector,
        v: &GpuVector,
        out: &mut GpuVector,
        curvature: Curvature,
    ) -> Result<()> {
        self.check_vector(layout, theta)?;
        self.check_vector(layout, v)?;
        self.check_vector(layout, out)?;
        let mut st = self.lock();
        let udv = layout.kind == ModelKind::Udv;
        if udv {
            self.reserve_scratch(&mut st, layout.n_users * layout.rank)?;
        }
        let hess = if curvature == Curvature::Hessian {
            FLAG_HESSIAN
        } else {
            0
        };
        let mut pu = Self::model_params(layout, true);
        pu.flags |= hess | if udv { FLAG_DBLOCK } else { 0 };
        self.row_pass(
            &mut st,
            Kernel::CurvRows,
            &m.users,
            pu,
            &theta.buf,
            Some(&v.buf),
            &out.buf,
            0,
        );
        let mut pi = Self::model_params(layout, false);
        pi.flags |= hess;
        self.row_pass(
            &mut st,
            Kernel::CurvRows,
            &m.items,
            pi,
            &theta.buf,
            Some(&v.buf),
            &out.buf,
            0,
        );
        if udv {
            self.d_colsum(&mut st, layout, &out.buf);
        }
        Ok(())
    }

    fn evaluate(
        &self,
        e: &GpuEntries,
        layout: &Layout,
        theta: &GpuVector,
        clip: (f32, f32),
    ) -> Result<EvalSums> {
        self.check_vector(layout, theta)?;
        let mut st = self.lock();
        let slots: usize = e
            .chunks
            .iter()
            .map(|(n, _)| 4 * Self::groups(*n as usize, REDUCE_GROUPS) as usize)
            .sum();
        self.reserve_partials(&mut st, slots);
        let partials = st.partials.clone();
        let mut part = 0usize;
        let mut count = 0u64;
        for (n, buf) in &e.chunks {
            let g = Self::groups(*n as usize, REDUCE_GROUPS);
            let params = Params {
                n: *n,
                part: part as u32,
                b: clip.0,
                c: clip.1,
                ..Self::model_params(layout, true)
            };
            self.dispatch(
                &mut st,
                Kernel::EvalEntries,
                params,
                &[(1, buf), (3, &theta.buf), (7, &partials)],
                g,
            );
            part += 4 * g as usize;
            count += *n as u64;
        }
        if part == 0 {
            return Ok(EvalSums::default());
        }
        let parts = self.read_partials(&mut st, part)?;
        let mut s = EvalSums {
            count,
            ..Default::default()
        };
        for q in parts.chunks_exact(4) {
            s.sse += q[0] as f64;
            s.sae += q[1] as f64;
            s.sse_clipped += q[2] as f64;
            s.sae_clipped += q[3] as f64;
        }
        Ok(s)
    }
}
