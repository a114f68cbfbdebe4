//! The sparse ops (`SparseOps`): the rating matrix in tiles (own rows of one row block × the
//! columns of one block of the other side, cut by entry count), row passes over them, and
//! evaluation entries grouped by block pair. Mirrors `backend/cpu/sparse.rs`.

use super::blocking::{plan_tiles, Blocking, RowBlock};
use super::shaders::{
    Kernel, Params, FLAG_BIASES, FLAG_DBLOCK, FLAG_FIRST, FLAG_HESSIAN, FLAG_LAST, FLAG_UDV,
    FLAG_WRITE,
};
use super::{GpuBackend, GpuVector, State, Stored, REDUCE_GROUPS, ROW_GROUPS};
use crate::backend::{
    check_entries, check_shape, Curvature, EvalSums, PrecondKind, Shift, SparseOps,
};
use crate::data::{Compressed, Matrix, Ratings};
use crate::error::Result;
use crate::model::{Layout, ModelKind};
use std::sync::Arc;

/// A run of rows of one own row block, restricted to the columns of one row block of the other
/// side, with column indices local to that block.
pub(super) struct Tile {
    pub(super) own: usize,
    pub(super) other: usize,
    /// First row, relative to the own block.
    pub(super) row_start: u32,
    pub(super) n_rows: u32,
    /// The tiles over the same rows with `other == 0` initialise them; those with the last
    /// `other` finish them.
    pub(super) first: bool,
    pub(super) last: bool,
    /// Row offsets and (column, rating) pairs.
    pub(super) data: Stored,
}

/// One side (CSR by user or CSC by item) on the device, in tiles ordered by own block, then other
/// block, then row.
pub struct GpuSide {
    pub(super) tiles: Vec<Tile>,
}

/// The training matrix on the device, tiled for one model shape.
pub struct GpuMatrix {
    pub(super) users: GpuSide,
    pub(super) items: GpuSide,
    pub(super) blocking: Arc<Blocking>,
}

impl GpuMatrix {
    /// Tiles per side (users, items): more than one means the chunked path runs.
    pub fn chunk_counts(&self) -> (usize, usize) {
        (self.users.tiles.len(), self.items.tiles.len())
    }

    /// Row blocks of θ per side (users, items): more than one means θ is split.
    pub fn block_counts(&self) -> (usize, usize) {
        let pb = self
            .blocking
            .params
            .as_ref()
            .expect("a matrix has a parameter blocking");
        (pb.users.len(), pb.items.len())
    }
}

/// Evaluation entries on the device: (user, item, rating) triplets grouped by (user block, item
/// block), with local indices.
pub struct GpuEntries {
    tiles: Vec<EntryTile>,
    blocking: Arc<Blocking>,
}

struct EntryTile {
    user_block: usize,
    item_block: usize,
    n: u32,
    /// (user, item, rating) triplets.
    coo: Stored,
}

impl GpuBackend {
    /// Uploads one compressed side in the tiles [`plan_tiles`] cuts, each stored as it is planned.
    pub(super) fn upload_side(
        &self,
        what: &str,
        c: &Compressed,
        own: &[RowBlock],
        other: &[RowBlock],
    ) -> Result<GpuSide> {
        let mut tiles = Vec::new();
        plan_tiles(what, c, own, other, self.tile_cap, |t| {
            tiles.push(Tile {
                own: t.own,
                other: t.other,
                row_start: t.row_start,
                n_rows: t.n_rows,
                first: t.first,
                last: t.last,
                data: self.store_arrays(what, vec![t.rowptr, t.entries])?,
            });
            Ok(())
        })?;
        Ok(GpuSide { tiles })
    }

    /// Params shared by every sparse kernel of a model: f, flags and μ.
    pub(super) fn model_params(layout: &Layout) -> Params {
        let mut flags = 0;
        if layout.has_biases() {
            flags |= FLAG_BIASES;
        }
        if layout.kind == ModelKind::Udv {
            flags |= FLAG_UDV;
        }
        Params {
            f: layout.rank as u32,
            flags,
            a: layout.mu,
            ..Default::default()
        }
    }

    /// Copies d of θ (and of the direction) into the `glob` uniform ahead of the next passes.
    pub(super) fn load_glob(
        &self,
        st: &mut State,
        layout: &Layout,
        b: &Blocking,
        theta: &GpuVector,
        dir: Option<&GpuVector>,
    ) {
        let Some((seg, off)) = b.params.as_ref().and_then(|pb| pb.d) else {
            return;
        };
        let bytes = layout.rank as u64 * 4;
        let glob = st.glob.clone();
        let enc = self.encoder(st);
        enc.copy_buffer_to_buffer(&theta.segs[seg], off as u64 * 4, &glob, 0, bytes);
        if let Some(v) = dir {
            enc.copy_buffer_to_buffer(&v.segs[seg], off as u64 * 4, &glob, 4096, bytes);
        }
    }

    /// Records a row pass over one side; returns the partial slots it used (gradient kernel).
    /// With FLAG_DBLOCK, the d block of `out` is summed after each own block.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn row_pass(
        &self,
        st: &mut State,
        kernel: Kernel,
        side: &GpuSide,
        users: bool,
        blocking: &Blocking,
        base: Params,
        theta: &GpuVector,
        dir: Option<&GpuVector>,
        out: Option<&GpuVector>,
        part0: usize,
    ) -> Result<usize> {
        let pb = blocking.params.as_ref().expect("parameter blocking");
        let (own_blocks, other_blocks) = if users {
            (&pb.users, &pb.items)
        } else {
            (&pb.items, &pb.users)
        };
        let kernel = self.row_kernel(kernel);
        let mut part = part0;
        let scratch = st.scratch.clone();
        let partials = st.partials.clone();
        let glob = st.glob.clone();
        let dummy = st.dummy[0].clone();
        for (k, t) in side.tiles.iter().enumerate() {
            let (own, oth) = (&own_blocks[t.own], &other_blocks[t.other]);
            if t.n_rows > 0 {
                let g = self.row_groups(t.n_rows);
                let mut flags = base.flags;
                if t.first {
                    flags |= FLAG_FIRST;
                }
                if t.last {
                    flags |= FLAG_LAST;
                }
                let params = Params {
                    n: t.n_rows,
                    start: t.row_start,
                    flags,
                    own: own.factor_off as u32,
                    own_bias: own.bias_off as u32,
                    other: oth.factor_off as u32,
                    other_bias: oth.bias_off as u32,
                    part: part as u32,
                    ..base
                };
                let data = self.bind_stored(st, &t.data)?;
                let mut bind: Vec<(u32, &wgpu::Buffer)> = vec![
                    (1, &data[0]),
                    (2, &data[1]),
                    (3, &theta.segs[own.seg]),
                    (8, &theta.segs[oth.seg]),
                    (5, out.map(|o| &o.segs[own.seg]).unwrap_or(&dummy)),
                    (6, &scratch),
                    (10, &glob),
                ];
                match dir {
                    None => bind.push((7, &partials)),
                    Some(v) => {
                        bind.push((4, &v.segs[own.seg]));
                        bind.push((9, &v.segs[oth.seg]));
                    }
                }
                self.dispatch(st, kernel, params, &bind, g);
                if dir.is_none() {
                    part += g as usize;
                }
            }
            let block_done = side.tiles.get(k + 1).is_none_or(|n| n.own != t.own);
            if block_done && base.flags & FLAG_DBLOCK != 0 {
                let (dseg, doff) = pb.d.expect("UDV has d");
                let out = out.expect("the d block is written to an output");
                let params = Params {
                    n: own.rows.len() as u32,
                    f: base.f,
                    d_off: doff as u32,
                    flags: if t.own == 0 { FLAG_FIRST } else { 0 },
                    ..Default::default()
                };
                self.dispatch(
                    st,
                    Kernel::DColsum,
                    params,
                    &[(5, &out.segs[dseg]), (6, &scratch)],
                    base.f,
                );
            }
        }
        Ok(part - part0)
    }

    /// The row-pass kernel: one subgroup per row where the adapter has subgroups, else one
    /// invocation per row.
    pub(super) fn row_kernel(&self, kernel: Kernel) -> Kernel {
        match kernel {
            Kernel::GradRows if self.subgroups => Kernel::GradRowsSg,
            Kernel::CurvRows if self.subgroups => Kernel::CurvRowsSg,
            k => k,
        }
    }

    pub(super) fn row_slots(&self, side: &GpuSide) -> usize {
        side.tiles
            .iter()
            .filter(|t| t.n_rows > 0)
            .map(|t| self.row_groups(t.n_rows) as usize)
            .sum()
    }

    /// Workgroups of a row pass over `n` rows: one row per invocation, or per subgroup (at least
    /// 256 / the largest subgroup size rows per workgroup).
    pub(super) fn row_groups(&self, n: u32) -> u32 {
        let per_row = if self.subgroups {
            self.info.subgroup_max_size.clamp(1, 256) as usize
        } else {
            1
        };
        Self::groups(n as usize * per_row, ROW_GROUPS)
    }

    /// Gradient (with `out`) or loss (without) over both or one side.
    pub(super) fn grad_or_loss(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        theta: &GpuVector,
        out: Option<&GpuVector>,
    ) -> Result<f64> {
        let mut st = self.lock();
        let udv = layout.kind == ModelKind::Udv;
        let user_slots = self.row_slots(&m.users);
        self.reserve_partials(&mut st, user_slots + self.row_slots(&m.items));
        if udv && out.is_some() {
            self.reserve_dblock(&mut st, &m.blocking, layout)?;
        }
        self.load_glob(&mut st, layout, &m.blocking, theta, None);
        let write = if out.is_some() { FLAG_WRITE } else { 0 };
        let mut pu = Self::model_params(layout);
        pu.flags |= write | if udv && out.is_some() { FLAG_DBLOCK } else { 0 };
        let used = self.row_pass(
            &mut st,
            Kernel::GradRows,
            &m.users,
            true,
            &m.blocking,
            pu,
            theta,
            None,
            out,
            0,
        )?;
        if out.is_some() {
            let mut pi = Self::model_params(layout);
            pi.flags |= write;
            // The item side's Σe² repeats the user side's; its partials are not read.
            self.row_pass(
                &mut st,
                Kernel::GradRows,
                &m.items,
                false,
                &m.blocking,
                pi,
                theta,
                None,
                out,
                used,
            )?;
        }
        if used == 0 {
            return Ok(0.0);
        }
        let parts = self.read_partials(&mut st, used)?;
        Ok(parts.iter().map(|&x| x as f64).sum())
    }

    /// Scratch for the UDV d block: the largest user block × f.
    pub(super) fn reserve_dblock(
        &self,
        st: &mut State,
        b: &Blocking,
        layout: &Layout,
    ) -> Result<()> {
        let pb = b.params.as_ref().expect("parameter blocking");
        let rows = pb.users.iter().map(|u| u.rows.len()).max().unwrap_or(0);
        self.reserve_scratch(st, rows * layout.rank)
    }
}

impl SparseOps for GpuBackend {
    type Precond = super::precond::GpuPrecond;

    fn precond_new(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        kind: PrecondKind,
        sam: bool,
    ) -> Result<super::precond::GpuPrecond> {
        self.precond_alloc(m, layout, kind, sam)
    }

    fn row_scale(
        &self,
        layout: &Layout,
        g: &GpuVector,
        rho: f32,
        out: &mut GpuVector,
    ) -> Result<()> {
        self.row_scale_dev(layout, g, rho, out)
    }

    fn precond_kind(&self, pc: &super::precond::GpuPrecond) -> PrecondKind {
        pc.kind
    }

    fn precond_build(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        theta: &GpuVector,
        reg: &GpuVector,
        shift: Shift,
        pc: &mut super::precond::GpuPrecond,
    ) -> Result<()> {
        self.precond_factor(m, layout, theta, reg, shift, pc, None)
    }

    fn precond_build_summed(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        theta: &GpuVector,
        reg: &GpuVector,
        shift: Shift,
        pc: &mut super::precond::GpuPrecond,
        sum: crate::backend::SumHook<'_>,
    ) -> Result<()> {
        self.precond_factor(m, layout, theta, reg, shift, pc, Some(sum))
    }

    fn precond_apply(
        &self,
        pc: &super::precond::GpuPrecond,
        layout: &Layout,
        r: &GpuVector,
        z: &mut GpuVector,
    ) -> Result<()> {
        self.precond_solve(pc, layout, r, z)
    }
    type Matrix = GpuMatrix;
    type Entries = GpuEntries;

    fn upload_matrix(&self, m: &Matrix, layout: &Layout) -> Result<GpuMatrix> {
        check_shape(m.n_users(), m.n_items(), layout)?;
        let blocking = self.param_blocking(layout)?;
        let pb = blocking.params.as_ref().expect("parameter blocking");
        Ok(GpuMatrix {
            users: self.upload_side("ratings by user", &m.by_user, &pb.users, &pb.items)?,
            items: self.upload_side("ratings by item", &m.by_item, &pb.items, &pb.users)?,
            blocking,
        })
    }

    fn upload_entries(&self, r: &Ratings, layout: &Layout) -> Result<GpuEntries> {
        check_entries(r, layout)?;
        let blocking = self.param_blocking(layout)?;
        let pb = blocking.params.as_ref().expect("parameter blocking");
        let find = |blocks: &[RowBlock], x: u32| -> usize {
            blocks.partition_point(|b| b.rows.end <= x as usize)
        };
        let n_items = pb.items.len();
        let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); pb.users.len() * n_items];
        for k in 0..r.nnz() {
            let (ub, ib) = (find(&pb.users, r.users[k]), find(&pb.items, r.items[k]));
            buckets[ub * n_items + ib].extend_from_slice(&[
                r.users[k] - pb.users[ub].rows.start as u32,
                r.items[k] - pb.items[ib].rows.start as u32,
                r.values[k].to_bits(),
            ]);
        }
        let per = 3 * (self.tile_cap / 12).max(1) as usize;
        let mut tiles = Vec::new();
        for (k, b) in buckets.iter().enumerate() {
            for coo in b.chunks(per) {
                tiles.push(EntryTile {
                    user_block: k / n_items,
                    item_block: k % n_items,
                    n: (coo.len() / 3) as u32,
                    coo: self.store_arrays("evaluation entries", vec![coo.to_vec()])?,
                });
            }
        }
        Ok(GpuEntries { tiles, blocking })
    }

    fn sq_error(&self, m: &GpuMatrix, layout: &Layout, theta: &GpuVector) -> Result<f64> {
        self.check_vector(&m.blocking, theta)?;
        self.grad_or_loss(m, layout, theta, None)
    }

    fn gradient(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        theta: &GpuVector,
        grad: &mut GpuVector,
    ) -> Result<f64> {
        self.check_vector(&m.blocking, theta)?;
        self.check_vector(&m.blocking, grad)?;
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
        self.check_vector(&m.blocking, theta)?;
        self.check_vector(&m.blocking, v)?;
        self.check_vector(&m.blocking, out)?;
        let mut st = self.lock();
        let udv = layout.kind == ModelKind::Udv;
        if udv {
            self.reserve_dblock(&mut st, &m.blocking, layout)?;
        }
        self.load_glob(&mut st, layout, &m.blocking, theta, Some(v));
        let hess = if curvature == Curvature::Hessian {
            FLAG_HESSIAN
        } else {
            0
        };
        let mut pu = Self::model_params(layout);
        pu.flags |= hess | if udv { FLAG_DBLOCK } else { 0 };
        self.row_pass(
            &mut st,
            Kernel::CurvRows,
            &m.users,
            true,
            &m.blocking,
            pu,
            theta,
            Some(v),
            Some(out),
            0,
        )?;
        let mut pi = Self::model_params(layout);
        pi.flags |= hess;
        self.row_pass(
            &mut st,
            Kernel::CurvRows,
            &m.items,
            false,
            &m.blocking,
            pi,
            theta,
            Some(v),
            Some(out),
            0,
        )?;
        Ok(())
    }

    fn evaluate(
        &self,
        e: &GpuEntries,
        layout: &Layout,
        theta: &GpuVector,
        clip: (f32, f32),
    ) -> Result<EvalSums> {
        self.check_vector(&e.blocking, theta)?;
        let pb = e.blocking.params.as_ref().expect("parameter blocking");
        let mut st = self.lock();
        let slots: usize = e
            .tiles
            .iter()
            .map(|t| 4 * Self::groups(t.n as usize, REDUCE_GROUPS) as usize)
            .sum();
        self.reserve_partials(&mut st, slots);
        self.load_glob(&mut st, layout, &e.blocking, theta, None);
        let partials = st.partials.clone();
        let glob = st.glob.clone();
        let mut part = 0usize;
        let mut count = 0u64;
        for t in &e.tiles {
            let (ub, ib) = (&pb.users[t.user_block], &pb.items[t.item_block]);
            let g = Self::groups(t.n as usize, REDUCE_GROUPS);
            let params = Params {
                n: t.n,
                part: part as u32,
                own: ub.factor_off as u32,
                own_bias: ub.bias_off as u32,
                other: ib.factor_off as u32,
                other_bias: ib.bias_off as u32,
                b: clip.0,
                c: clip.1,
                ..Self::model_params(layout)
            };
            let coo = self.bind_stored(&mut st, &t.coo)?;
            self.dispatch(
                &mut st,
                Kernel::EvalEntries,
                params,
                &[
                    (1, &coo[0]),
                    (3, &theta.segs[ub.seg]),
                    (8, &theta.segs[ib.seg]),
                    (7, &partials),
                    (10, &glob),
                ],
                g,
            );
            part += 4 * g as usize;
            count += t.n as u64;
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
