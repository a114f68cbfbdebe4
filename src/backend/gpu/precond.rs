//! The preconditioners on the device (`shaders/precond.wgsl`): per-row Gram blocks accumulated
//! over the rating tiles, factored one workgroup per row in workgroup memory, applied one
//! invocation per row. Blocks of an own row block are cut into chunks of rows that each fit one
//! storage binding; a tile's dispatch is split where it crosses a chunk boundary.

use super::blocking::{Blocking, RowBlock};
use super::shaders::{Kernel, Params, FLAG_DBLOCK, FLAG_FIRST, FLAG_LAST};
use super::{GpuBackend, GpuVector};
use super::{GpuMatrix, GpuSide, ROW_GROUPS};
use crate::backend::precond::{block_width, has_d, max_block_width, packed_len};
use crate::backend::{PrecondKind, Shift, VectorOps};
use crate::error::{Error, Result};
use crate::model::Layout;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Rows of one own row block whose factors share one buffer.
pub(super) struct PcChunk {
    /// Rows relative to the own block.
    rows: Range<usize>,
    buf: wgpu::Buffer,
}

/// A preconditioner on the device.
pub struct GpuPrecond {
    pub(super) kind: PrecondKind,
    /// block_jacobi: per own row block of each side, its chunks.
    users: Vec<Vec<PcChunk>>,
    items: Vec<Vec<PcChunk>>,
    /// block_jacobi, UDV: 1/M of the d coordinates.
    dinv: Option<wgpu::Buffer>,
    /// jacobi: 1/M of every coordinate, laid out as θ.
    inv: Option<GpuVector>,
    blocking: Arc<Blocking>,
}

impl GpuPrecond {
    /// Where the d diagonal (then its inverse) lives: the block_jacobi buffer at 0, or the jacobi
    /// vector's d segment at d's offset; `d` is θ's (segment, offset) of d.
    fn d_target(&self, d: Option<(usize, usize)>) -> (&wgpu::Buffer, usize) {
        let (dseg, doff) = d.expect("UDV has d");
        match (&self.dinv, &self.inv) {
            (Some(buf), _) => (buf, 0),
            (None, Some(inv)) => (&inv.segs[dseg], doff),
            _ => unreachable!("a preconditioner of UDV stores its d diagonal"),
        }
    }

    /// Bytes of factor storage (block_jacobi).
    pub fn block_bytes(&self) -> u64 {
        self.users
            .iter()
            .chain(&self.items)
            .flatten()
            .map(|c| c.buf.size())
            .sum()
    }
}

/// Says a fallback once per process.
fn say_once(flag: &AtomicBool, msg: String) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("note: {msg}");
    }
}

static WIDE: AtomicBool = AtomicBool::new(false);
static NO_ROOM: AtomicBool = AtomicBool::new(false);

/// `base` for one chunk of an own row block's preconditioner blocks (its rows, and where the
/// block's factors and biases sit in θ's segment).
fn chunk_params(base: Params, c: &PcChunk, own: &RowBlock) -> Params {
    Params {
        n: c.rows.len() as u32,
        start: c.rows.start as u32,
        d_off: 0,
        own: own.factor_off as u32,
        own_bias: own.bias_off as u32,
        ..base
    }
}

impl GpuBackend {
    fn pc_chunks(&self, blocks: &[RowBlock], t: usize) -> Result<Vec<Vec<PcChunk>>> {
        let per = ((self.chunk_cap / 4) as usize / t).max(1);
        blocks
            .iter()
            .map(|b| {
                crate::backend::partition(b.rows.len(), per)
                    .map(|rows| {
                        let buf = self.storage_buffer(
                            "preconditioner blocks",
                            (rows.len() * t * 4) as u64,
                            None,
                        )?;
                        Ok(PcChunk { rows, buf })
                    })
                    .collect()
            })
            .collect()
    }

    pub(super) fn precond_alloc(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        kind: PrecondKind,
        sam: bool,
    ) -> Result<GpuPrecond> {
        let w = block_width(layout);
        let mut kind = kind;
        if kind == PrecondKind::BlockJacobi && w > max_block_width(sam) {
            say_once(
                &WIDE,
                format!(
                    "block_jacobi: blocks of width {w} are wider than the {} the GPU factors in \
                     workgroup memory; using jacobi",
                    max_block_width(sam)
                ),
            );
            kind = PrecondKind::Jacobi;
        }
        let mut pc = GpuPrecond {
            kind,
            users: vec![],
            items: vec![],
            dinv: None,
            inv: None,
            blocking: m.blocking.clone(),
        };
        if kind == PrecondKind::BlockJacobi {
            let pb = m.blocking.params.as_ref().expect("parameter blocking");
            let t = packed_len(w);
            let built = self.pc_chunks(&pb.users, t).and_then(|u| {
                let i = self.pc_chunks(&pb.items, t)?;
                let d = has_d(layout)
                    .then(|| self.storage_buffer("preconditioner d", layout.rank as u64 * 4, None))
                    .transpose()?;
                Ok((u, i, d))
            });
            match built {
                Ok((u, i, d)) => {
                    pc.users = u;
                    pc.items = i;
                    pc.dinv = d;
                }
                Err(Error::DeviceMemory {
                    needed, available, ..
                }) => {
                    let total = (layout.n_users + layout.n_items) as u64 * t as u64 * 4;
                    say_once(
                        &NO_ROOM,
                        format!(
                            "block_jacobi needs {total} bytes of factor storage ((m+n)·w(w+1)/2 \
                             floats) and the device has no room (a buffer of {needed} bytes: \
                             {available}); using jacobi"
                        ),
                    );
                    pc.kind = PrecondKind::Jacobi;
                }
                Err(e) => return Err(e),
            }
        }
        if pc.kind == PrecondKind::Jacobi {
            pc.inv = Some(self.new_vector(m.blocking.clone(), None)?);
        }
        Ok(pc)
    }

    /// Builds and factors the preconditioner. With `sum` (block_jacobi only), the item blocks
    /// are built unfactored, brought to the host with the d diagonal's partials for `sum` to add
    /// up across processes, written back, and factored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn precond_factor(
        &self,
        m: &GpuMatrix,
        layout: &Layout,
        theta: &GpuVector,
        reg: &GpuVector,
        shift: Shift,
        pc: &mut GpuPrecond,
        mut sum: Option<crate::backend::SumHook<'_>>,
    ) -> Result<()> {
        if pc.kind == PrecondKind::None {
            return Ok(());
        }
        if sum.is_some() && pc.kind == PrecondKind::Jacobi {
            return Err(Error::Unsupported(
                "the GPU's jacobi preconditioner cannot be summed across processes; under \
                 mpirun use block_jacobi or none"
                    .into(),
            ));
        }
        self.check_vector(&m.blocking, theta)?;
        self.check_vector(&m.blocking, reg)?;
        let pb = m.blocking.params.as_ref().expect("parameter blocking");
        let mut st = self.lock();
        let udv = has_d(layout);
        if udv {
            self.reserve_dblock(&mut st, &m.blocking, layout)?;
        }
        self.load_glob(&mut st, layout, &m.blocking, theta, None);
        let scratch = st.scratch.clone();
        let glob = st.glob.clone();
        let base = Params {
            b: shift.gamma,
            c: shift.c,
            ..Self::model_params(layout)
        };
        let w = block_width(layout);
        let t_len = packed_len(w);
        if sum.is_some() {
            // Item rows without an entry here are summed too: start them at zero.
            for c in pc.items.iter().flatten() {
                self.encoder(&mut st).clear_buffer(&c.buf, 0, None);
            }
        }
        // Factors the chunks of one own row block (after its Gram blocks are complete).
        let factor = |st: &mut super::State, chunks: &[PcChunk], own: &RowBlock, dblock: u32| {
            for c in chunks {
                let params = Params {
                    flags: base.flags | dblock,
                    ..chunk_params(base, c, own)
                };
                self.dispatch(
                    st,
                    Kernel::PcFactor,
                    params,
                    &[
                        (3, &theta.segs[own.seg]),
                        (4, &reg.segs[own.seg]),
                        (6, &scratch),
                        (7, &c.buf),
                        (10, &glob),
                    ],
                    c.rows.len().clamp(1, 65_535) as u32,
                );
            }
        };
        for users in [true, false] {
            let (side, own_blocks, other_blocks): (&GpuSide, _, _) = if users {
                (&m.users, &pb.users, &pb.items)
            } else {
                (&m.items, &pb.items, &pb.users)
            };
            let dblock = if users && udv { FLAG_DBLOCK } else { 0 };
            let chunks = if users { &pc.users } else { &pc.items };
            for (k, t) in side.tiles.iter().enumerate() {
                let (own, oth) = (&own_blocks[t.own], &other_blocks[t.other]);
                if t.n_rows > 0 {
                    let data = self.bind_stored(&mut st, &t.data)?;
                    let first = if t.first { FLAG_FIRST } else { 0 };
                    let last = if t.last { FLAG_LAST } else { 0 };
                    let tile = t.row_start as usize..(t.row_start + t.n_rows) as usize;
                    match pc.kind {
                        PrecondKind::BlockJacobi => {
                            for c in &chunks[t.own] {
                                let a = tile.start.max(c.rows.start);
                                let b = tile.end.min(c.rows.end);
                                if a >= b {
                                    continue;
                                }
                                let params = Params {
                                    n: (b - a) as u32,
                                    start: a as u32,
                                    part: (a - tile.start) as u32,
                                    d_off: (a - c.rows.start) as u32,
                                    other: oth.factor_off as u32,
                                    flags: base.flags | first,
                                    ..base
                                };
                                self.dispatch(
                                    &mut st,
                                    Kernel::PcGram,
                                    params,
                                    &[
                                        (1, &data[0]),
                                        (2, &data[1]),
                                        (8, &theta.segs[oth.seg]),
                                        (7, &c.buf),
                                    ],
                                    (b - a).min(65_535) as u32,
                                );
                            }
                        }
                        _ => {
                            let inv = pc.inv.as_ref().expect("jacobi keeps a diagonal");
                            let params = Params {
                                n: t.n_rows,
                                start: t.row_start,
                                own: own.factor_off as u32,
                                own_bias: own.bias_off as u32,
                                other: oth.factor_off as u32,
                                other_bias: oth.bias_off as u32,
                                flags: base.flags | first | last | dblock,
                                ..base
                            };
                            self.dispatch(
                                &mut st,
                                Kernel::PcDiag,
                                params,
                                &[
                                    (1, &data[0]),
                                    (2, &data[1]),
                                    (3, &theta.segs[own.seg]),
                                    (8, &theta.segs[oth.seg]),
                                    (4, &reg.segs[own.seg]),
                                    (5, &inv.segs[own.seg]),
                                    (6, &scratch),
                                    (10, &glob),
                                ],
                                Self::groups(t.n_rows as usize, ROW_GROUPS),
                            );
                        }
                    }
                }
                let block_done = side.tiles.get(k + 1).is_none_or(|n| n.own != t.own);
                if !block_done {
                    continue;
                }
                if pc.kind == PrecondKind::BlockJacobi && (users || sum.is_none()) {
                    factor(&mut st, &chunks[t.own], own, dblock);
                }
                if dblock != 0 {
                    // Σ over this block's users of U_uk² S_kk into the d diagonal.
                    let (target, at) = pc.d_target(pb.d);
                    let params = Params {
                        n: own.rows.len() as u32,
                        f: base.f,
                        d_off: at as u32,
                        flags: if t.own == 0 { FLAG_FIRST } else { 0 },
                        ..Default::default()
                    };
                    self.dispatch(
                        &mut st,
                        Kernel::DColsum,
                        params,
                        &[(5, target), (6, &scratch)],
                        base.f,
                    );
                }
            }
        }
        if let Some(sum) = sum.as_mut() {
            // The item blocks in row order, and the d partials, to the host and summed.
            // Each item chunk with its floats' place in the row-ordered array.
            let spans = || {
                pb.items.iter().zip(&pc.items).flat_map(move |(b, chunks)| {
                    chunks.iter().map(move |c| {
                        let at = (b.rows.start + c.rows.start) * t_len;
                        (c, at..at + c.rows.len() * t_len)
                    })
                })
            };
            let mut blocks = vec![0f32; layout.n_items * t_len];
            for (c, span) in spans() {
                let bytes = self.read_back(&mut st, &c.buf, span.len() as u64 * 4)?;
                blocks[span.clone()]
                    .copy_from_slice(bytemuck::cast_slice(&bytes[..span.len() * 4]));
            }
            let mut d: Vec<f64> = if udv {
                let (target, at) = pc.d_target(pb.d);
                let f = layout.rank;
                let bytes = self.read_back(&mut st, target, ((at + f) * 4) as u64)?;
                let v: &[f32] = bytemuck::cast_slice(&bytes[at * 4..(at + f) * 4]);
                v.iter().map(|&x| x as f64).collect()
            } else {
                Vec::new()
            };
            // The device is free while the sum waits on other processes (ranks that share this
            // device, as threads, need it to get here).
            drop(st);
            sum(&mut blocks, &mut d)?;
            st = self.lock();
            // Another user of the device may have loaded its own globals meanwhile.
            self.load_glob(&mut st, layout, &m.blocking, theta, None);
            for (c, span) in spans() {
                self.queue
                    .write_buffer(&c.buf, 0, bytemuck::cast_slice(&blocks[span]));
            }
            if udv {
                let (target, at) = pc.d_target(pb.d);
                let dv: Vec<f32> = d.iter().map(|&x| x as f32).collect();
                self.queue
                    .write_buffer(target, (at * 4) as u64, bytemuck::cast_slice(&dv));
            }
            for (own, chunks) in pb.items.iter().zip(&pc.items) {
                factor(&mut st, chunks, own, 0);
            }
        }
        if udv {
            let (dseg, doff) = pb.d.expect("UDV has d");
            let (target, at) = pc.d_target(pb.d);
            let params = Params {
                start: doff as u32,
                d_off: at as u32,
                ..base
            };
            self.dispatch(
                &mut st,
                Kernel::PcDinv,
                params,
                &[(4, &reg.segs[dseg]), (5, target)],
                1,
            );
        }
        Ok(())
    }

    /// See `SparseOps::row_scale`: one invocation per row of each θ row block.
    pub(super) fn row_scale_dev(
        &self,
        layout: &Layout,
        g: &GpuVector,
        rho: f32,
        out: &mut GpuVector,
    ) -> Result<()> {
        let blocking = self.param_blocking(layout)?;
        self.check_vector(&blocking, g)?;
        self.check_vector(&blocking, out)?;
        let pb = blocking.params.as_ref().expect("parameter blocking");
        let base = Params {
            a: rho,
            ..Self::model_params(layout)
        };
        let mut st = self.lock();
        for own in pb.users.iter().chain(&pb.items) {
            let params = Params {
                n: own.rows.len() as u32,
                start: 0,
                own: own.factor_off as u32,
                own_bias: own.bias_off as u32,
                ..base
            };
            self.dispatch(
                &mut st,
                Kernel::RowScale,
                params,
                &[(4, &g.segs[own.seg]), (5, &out.segs[own.seg])],
                Self::groups(own.rows.len(), ROW_GROUPS),
            );
        }
        if let Some((dseg, doff)) = pb.d {
            let params = Params {
                d_off: doff as u32,
                ..base
            };
            self.dispatch(
                &mut st,
                Kernel::RowScaleD,
                params,
                &[(4, &g.segs[dseg]), (5, &out.segs[dseg])],
                1,
            );
        }
        Ok(())
    }

    pub(super) fn precond_solve(
        &self,
        pc: &GpuPrecond,
        layout: &Layout,
        r: &GpuVector,
        z: &mut GpuVector,
    ) -> Result<()> {
        match pc.kind {
            PrecondKind::None => return self.copy(r, z),
            PrecondKind::Jacobi => {
                let inv = pc.inv.as_ref().expect("jacobi keeps a diagonal");
                self.fill(z, 0.0)?;
                return self.mul_add(inv, r, z);
            }
            PrecondKind::BlockJacobi => {}
        }
        self.check_vector(&pc.blocking, r)?;
        self.check_vector(&pc.blocking, z)?;
        let pb = pc.blocking.params.as_ref().expect("parameter blocking");
        let base = Self::model_params(layout);
        let mut st = self.lock();
        for (blocks, chunks) in [(&pb.users, &pc.users), (&pb.items, &pc.items)] {
            for (own, cs) in blocks.iter().zip(chunks) {
                for c in cs {
                    let params = chunk_params(base, c, own);
                    self.dispatch(
                        &mut st,
                        Kernel::PcApply,
                        params,
                        &[(4, &r.segs[own.seg]), (5, &z.segs[own.seg]), (7, &c.buf)],
                        Self::groups(c.rows.len(), ROW_GROUPS),
                    );
                }
            }
        }
        if let (Some(dinv), Some((dseg, doff))) = (&pc.dinv, pb.d) {
            let params = Params {
                d_off: doff as u32,
                ..base
            };
            self.dispatch(
                &mut st,
                Kernel::PcDapply,
                params,
                &[(4, &r.segs[dseg]), (5, &z.segs[dseg]), (7, dinv)],
                1,
            );
        }
        Ok(())
    }
}
