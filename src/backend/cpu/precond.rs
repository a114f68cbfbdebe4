//! The preconditioners on the host: per-row Gram blocks built over the CSR (users) and the CSC
//! (items), shifted and factored in place, applied row by row; the Jacobi diagonal summed by the
//! sparse passes (the gradient's plan or passes, as a pass of squares). Mirrors
//! `shaders/precond.wgsl`.

use super::sparse::{prefetch, CpuMatrix, PREFETCH_AHEAD};
use super::CpuBackend;
use crate::backend::precond::{
    add_scaled_chunks, block_width, factor_block, factor_work_len, has_d, max_block_width,
    packed_at, packed_len, row_coords, shifted_diag, solve_packed, solve_packed_lanes, PrecondKind,
    Shift, CHUNK,
};
use crate::data::Compressed;
use crate::model::{Layout, ModelKind};
use rayon::prelude::*;

/// Rows per parallel task (and per f64 partial of the d diagonal).
const ROWS: usize = 64;

/// Rows whose triangular solves run side by side in an apply.
const SOLVE_LANES: usize = 8;

/// A preconditioner on the host.
pub struct CpuPrecond {
    kind: PrecondKind,
    /// Block width w (block_jacobi).
    width: usize,
    /// Packed factors, one per user / per item (block_jacobi).
    users: Vec<f32>,
    items: Vec<f32>,
    /// 1/M for the d coordinates (block_jacobi, UDV), or for every coordinate (jacobi).
    inv: Vec<f32>,
}

impl CpuPrecond {
    pub(super) fn new(layout: &Layout, kind: PrecondKind, sam: bool) -> Self {
        let w = block_width(layout);
        let kind = match kind {
            PrecondKind::BlockJacobi if w > max_block_width(sam) => PrecondKind::Jacobi,
            k => k,
        };
        let t = packed_len(w);
        let (users, items, inv) = match kind {
            PrecondKind::None => (vec![], vec![], vec![]),
            PrecondKind::Jacobi => (vec![], vec![], vec![1.0; layout.len()]),
            PrecondKind::BlockJacobi => (
                vec![0.0; layout.n_users * t],
                vec![0.0; layout.n_items * t],
                vec![1.0; if has_d(layout) { layout.rank } else { 0 }],
            ),
        };
        CpuPrecond {
            kind,
            width: w,
            users,
            items,
            inv,
        }
    }

    pub(super) fn kind(&self) -> PrecondKind {
        self.kind
    }
}

/// The other side's coordinates of entry (r, c) as seen by own row r: x = [other_c; 1] (LF with
/// biases) or other_c (LF, UDV; the d scaling of UDV is applied to the finished block).
#[inline]
fn entry_vector(layout: &Layout, theta: &[f32], users: bool, c: usize, x: &mut [f32]) {
    let f = layout.rank;
    let (oc, _) = row_coords(layout, !users, c);
    x[..f].copy_from_slice(&theta[oc..oc + f]);
    if layout.has_biases() {
        x[f] = 1.0;
    }
}

/// Own row r's block coordinates (factors, then the bias) of the θ-shaped vector `v`.
fn row_block(layout: &Layout, v: &[f32], users: bool, r: usize, out: &mut [f32]) {
    let f = layout.rank;
    let (fo, bo) = row_coords(layout, users, r);
    out[..f].copy_from_slice(&v[fo..fo + f]);
    if let Some(b) = bo {
        out[f] = v[b];
    }
}

/// One side of a block-Jacobi build, as each task of [`CpuBackend::precond_side`] sees it.
struct SideTask<'a> {
    layout: &'a Layout,
    csr: &'a Compressed,
    theta: &'a [f32],
    reg: &'a [f32],
    shift: Shift,
    users: bool,
    factor: bool,
    w: usize,
}

/// [`SideTask::run`] compiled for AVX2: the same operations in the same order on 8-wide
/// registers (no fused multiply-adds), so the same bits as the portable build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn side_task_avx2(task: &SideTask, k: usize, out: &mut [f32]) -> Vec<f64> {
    task.run(k, out)
}

impl SideTask<'_> {
    /// Rows k·ROWS.. of the side: their blocks into `out`, their d partials returned.
    #[inline(always)]
    fn run(&self, k: usize, out: &mut [f32]) -> Vec<f64> {
        let SideTask {
            layout,
            csr,
            theta,
            reg,
            shift,
            users,
            factor,
            w,
        } = *self;
        let f = layout.rank;
        let t = packed_len(w);
        let h = w.next_multiple_of(CHUNK);
        let udv_d = users && has_d(layout);
        let n_rows = csr.n_rows;
        let mut dpart = vec![0f64; if udv_d { f } else { 0 }];
        // The entry's vector, zero past w to a whole number of chunks.
        let mut x = vec![0f32; h];
        let mut dreg = vec![0f32; w];
        let mut work = vec![0f32; factor_work_len(w)];
        let mut gram = vec![0f32; t];
        // Block jacobi sums row j of the block in its first whole chunks covering
        // columns 0..=j (the lanes past j, and the rows past w, are scratch), then packs the
        // triangle.
        let mut rows = vec![0f32; h * h];
        for r in k * ROWS..((k + 1) * ROWS).min(n_rows) {
            gram.fill(0.0);
            rows.fill(0.0);
            for e in csr.row_range(r) {
                // The gathered row of the entry a few ahead (in this row or the next
                // ones): its address depends on the column, which no hardware
                // prefetcher predicts.
                if let Some(&ahead) = csr.index.get(e + PREFETCH_AHEAD) {
                    let (oa, _) = row_coords(layout, !users, ahead as usize);
                    prefetch(theta, oa, f);
                }
                let c = csr.index[e] as usize;
                entry_vector(layout, theta, users, c, &mut x);
                gram_update(&mut rows, &x);
            }
            for (j, row) in rows.chunks_exact(h).take(w).enumerate() {
                gram[packed_at(j, 0)..=packed_at(j, j)].copy_from_slice(&row[..=j]);
            }
            if udv_d {
                // Σ_i (U_uk V_ik)² = U_uk² S_kk, with S the unscaled block.
                let (uo, _) = row_coords(layout, true, r);
                for k in 0..f {
                    let u = theta[uo + k];
                    dpart[k] += (u * u * gram[packed_at(k, k)]) as f64;
                }
            }
            if layout.kind == ModelKind::Udv {
                // UDV: ∂r̂/∂U_u = d ⊙ V_i, so the block is diag(d)·S·diag(d).
                let d = &theta[layout.d_off()..layout.d_off() + f];
                for j in 0..f {
                    for k in 0..=j {
                        gram[packed_at(j, k)] *= d[j] * d[k];
                    }
                }
            }
            row_block(layout, reg, users, r, &mut dreg);
            if factor {
                factor_block(&mut gram, &dreg, shift, &mut work);
            }
            let j = r - k * ROWS;
            out[j * t..(j + 1) * t].copy_from_slice(&gram);
        }
        dpart
    }
}

/// One entry's outer product x·xᵀ added into the rows of a block being summed: `rows` holds h
/// rows of h floats (h = x's length, a multiple of [`CHUNK`]), and row j gets x_j·x over its
/// first whole chunks covering columns 0..=j, each float the one product x_j·x_l added to it (as
/// [`add_scaled_chunks`] does row by row). Blocks of up to 12 chunks a side are unrolled for
/// their width, without the per-row slicing of the general loop.
#[inline(always)]
fn gram_update(rows: &mut [f32], x: &[f32]) {
    let nb = x.len() / CHUNK;
    macro_rules! fixed {
        ($($n:literal)*) => {
            match nb {
                $($n => return gram_update_fixed::<$n>(rows, x),)*
                _ => {}
            }
        };
    }
    fixed!(1 2 3 4 5 6 7 8 9 10 11 12);
    let h = x.len();
    for (j, row) in rows.chunks_exact_mut(h).enumerate() {
        let n = (j + 1).next_multiple_of(CHUNK);
        add_scaled_chunks(&mut row[..n], x[j], &x[..n]);
    }
}

/// [`gram_update`] for blocks of `NB` chunks a side.
#[inline(always)]
fn gram_update_fixed<const NB: usize>(rows: &mut [f32], x: &[f32]) {
    // Rows of NB chunks, in groups of a chunk's worth of rows: group b's rows take chunks 0..=b.
    let (rows, _) = rows.as_chunks_mut::<CHUNK>();
    let (rows, _) = rows.as_chunks_mut::<NB>();
    let (groups, _) = rows.as_chunks_mut::<CHUNK>();
    let (xs, _) = x.as_chunks::<CHUNK>();
    let (xs, _) = xs.as_chunks::<NB>();
    let x: &[[f32; CHUNK]; NB] = &xs[0];
    for (b, group) in groups[..NB].iter_mut().enumerate() {
        for (row, &s) in group.iter_mut().zip(&x[b]) {
            for (y, xc) in row.iter_mut().zip(x).take(b + 1) {
                let mut t = *y;
                for l in 0..CHUNK {
                    t[l] += s * xc[l];
                }
                *y = t;
            }
        }
    }
}

/// One side of a block-Jacobi apply, as each task of [`CpuBackend::precond_apply_host`] sees it.
struct ApplyTask<'a> {
    layout: &'a Layout,
    r: &'a [f32],
    users: bool,
    blocks: &'a [f32],
    w: usize,
}

/// [`ApplyTask::run`] compiled for AVX2 (same operations, same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_task_avx2(task: &ApplyTask, k: usize, zf: &mut [f32], zb: &mut [f32]) {
    task.run(k, zf, zb)
}

impl ApplyTask<'_> {
    /// Rows k·ROWS.. of the side: z ← M⁻¹ r on each, its factors into `zf` and its bias (LF
    /// with biases) into `zb`; [`SOLVE_LANES`] rows side by side, the rest one by one.
    #[inline(always)]
    fn run(&self, k: usize, zf: &mut [f32], zb: &mut [f32]) {
        let ApplyTask {
            layout,
            r,
            users,
            blocks,
            w,
        } = *self;
        let f = layout.rank;
        let t = packed_len(w);
        let rows = k * ROWS..k * ROWS + zf.len() / f.max(1);
        let block = |row: usize| &blocks[row * t..(row + 1) * t];
        let mut put = |row: usize, j: usize, x: f32| {
            let at = row - k * ROWS;
            if j < f {
                zf[at * f + j] = x;
            } else {
                zb[at] = x;
            }
        };
        let (mut rr, mut zz) = (vec![0f32; w], vec![0f32; w]);
        let mut rl = vec![[0f32; SOLVE_LANES]; w];
        let mut zl = vec![[0f32; SOLVE_LANES]; w];
        let mut row = rows.start;
        while row + SOLVE_LANES <= rows.end {
            for n in 0..SOLVE_LANES {
                row_block(layout, r, users, row + n, &mut rr);
                for (x, &v) in rl.iter_mut().zip(&rr) {
                    x[n] = v;
                }
            }
            solve_packed_lanes(std::array::from_fn(|n| block(row + n)), &rl, &mut zl);
            for n in 0..SOLVE_LANES {
                for (j, x) in zl.iter().enumerate() {
                    put(row + n, j, x[n]);
                }
            }
            row += SOLVE_LANES;
        }
        for row in row..rows.end {
            row_block(layout, r, users, row, &mut rr);
            solve_packed(block(row), &rr, &mut zz);
            for (j, &x) in zz.iter().enumerate() {
                put(row, j, x);
            }
        }
    }
}

/// Factors summed item blocks (packed, one after another in `chunk`, the first item's index
/// `first`) in place, with their ridge weights and the shift.
#[inline(always)]
fn factor_items((layout, reg, shift, first): (&Layout, &[f32], Shift, usize), chunk: &mut [f32]) {
    let w = block_width(layout);
    let mut dreg = vec![0f32; w];
    let mut work = vec![0f32; factor_work_len(w)];
    for (j, block) in chunk.chunks_mut(packed_len(w)).enumerate() {
        row_block(layout, reg, false, first + j, &mut dreg);
        factor_block(block, &dreg, shift, &mut work);
    }
}

/// [`factor_items`] compiled for AVX2 (same operations, same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn factor_items_avx2(rows: (&Layout, &[f32], Shift, usize), chunk: &mut [f32]) {
    factor_items(rows, chunk)
}

impl CpuBackend {
    /// Builds one side's blocks (block_jacobi); returns, on the user side of UDV, the d diagonal
    /// Σ_u Σ_{i∈Ω_u} (U_uk V_ik)² (f64 partials added in row-block order).
    #[allow(clippy::too_many_arguments)]
    fn precond_side(
        &self,
        layout: &Layout,
        csr: &Compressed,
        theta: &[f32],
        reg: &[f32],
        shift: Shift,
        users: bool,
        factor: bool,
        pc: &mut CpuPrecond,
    ) -> Vec<f64> {
        let f = layout.rank;
        let w = pc.width;
        let t = packed_len(w);
        let udv_d = users && has_d(layout);
        let blocks: &mut [f32] = if users { &mut pc.users } else { &mut pc.items };
        let task = SideTask {
            layout,
            csr,
            theta,
            reg,
            shift,
            users,
            factor,
            w,
        };
        let results: Vec<Vec<f64>> = self.install(|| {
            blocks
                .par_chunks_mut(ROWS * t)
                .enumerate()
                .map(|(k, out)| {
                    #[cfg(target_arch = "x86_64")]
                    if self.wide() {
                        // SAFETY: `wide` holds only where the CPU has AVX2.
                        return unsafe { side_task_avx2(&task, k, out) };
                    }
                    task.run(k, out)
                })
                .collect()
        });
        let mut dsum = vec![0f64; if udv_d { f } else { 0 }];
        for dpart in results {
            for (a, b) in dsum.iter_mut().zip(dpart) {
                *a += b;
            }
        }
        dsum
    }

    /// The Jacobi preconditioner's sums diag(JᵀJ), by the gradient's plan (or passes), scaled by
    /// d² on UDV's factor rows; 1/M written in `pc.inv` for every coordinate but the d block (and,
    /// with `shared`, the item coordinates, left as sums). Returns the d sums' f64 partials.
    fn jacobi_side(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        theta: &[f32],
        (reg, shift): (&[f32], Shift),
        shared: bool,
        pc: &mut CpuPrecond,
    ) -> Vec<f64> {
        let f = layout.rank;
        let inv = &mut pc.inv;
        let dsum = self.jacobi_sums(m, layout, theta, inv);
        let rows_end = (layout.n_users + layout.n_items) * f;
        let d = has_d(layout).then(|| &theta[layout.d_off()..layout.d_off() + f]);
        // The coordinates whose 1/M is formed here.
        let mut own: Vec<std::ops::Range<usize>> = layout.user_ranges();
        if !shared {
            own.extend(layout.shared_ranges());
        }
        self.install(|| {
            if let Some(d) = d.filter(|_| f > 0) {
                // UDV: ∂r̂/∂U_u = d ⊙ V_i, so each factor sum takes d².
                inv[..rows_end].par_chunks_mut(f).for_each(|row| {
                    for (x, d) in row.iter_mut().zip(d) {
                        *x *= d * d;
                    }
                });
            }
            for range in own {
                // UDV's d block is formed from the f64 sums afterwards.
                let end = if d.is_some() {
                    range.end.min(rows_end)
                } else {
                    range.end
                };
                inv[range.start..end]
                    .par_iter_mut()
                    .zip(&reg[range.start..end])
                    .for_each(|(x, &r)| *x = 1.0 / shifted_diag(*x, r, shift));
            }
        });
        dsum
    }

    /// Builds and factors the preconditioner. With `sum`, the item side is built unfactored, and
    /// `sum` is handed its blocks (block_jacobi) or diagonal (jacobi), with the d diagonal's
    /// partials, before they are factored: a sharded run sums them across processes there.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn precond_build_host(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        theta: &[f32],
        reg: &[f32],
        shift: Shift,
        pc: &mut CpuPrecond,
        sum: Option<crate::backend::SumHook<'_>>,
    ) -> crate::error::Result<()> {
        let factor = sum.is_none();
        let mut dsum = match pc.kind {
            PrecondKind::None => return Ok(()),
            PrecondKind::Jacobi => self.jacobi_side(m, layout, theta, (reg, shift), !factor, pc),
            PrecondKind::BlockJacobi => {
                let dsum = self.precond_side(layout, &m.by_user, theta, reg, shift, true, true, pc);
                self.precond_side(layout, &m.by_item, theta, reg, shift, false, factor, pc);
                dsum
            }
        };
        if let Some(sum) = sum {
            self.sum_item_side(layout, reg, shift, pc, &mut dsum, sum)?;
        }
        if has_d(layout) {
            let off = layout.d_off();
            let at = if pc.kind == PrecondKind::Jacobi {
                off
            } else {
                0
            };
            for k in 0..layout.rank {
                pc.inv[at + k] = 1.0 / shifted_diag(dsum[k] as f32, reg[off + k], shift);
            }
        }
        Ok(())
    }

    /// Hands the unfactored item side and the d partials to `sum`, then factors the item side.
    fn sum_item_side(
        &self,
        layout: &Layout,
        reg: &[f32],
        shift: Shift,
        pc: &mut CpuPrecond,
        dsum: &mut [f64],
        sum: crate::backend::SumHook<'_>,
    ) -> crate::error::Result<()> {
        let f = layout.rank;
        let w = pc.width;
        let t = packed_len(w);
        match pc.kind {
            PrecondKind::None => Ok(()),
            PrecondKind::BlockJacobi => {
                sum(&mut pc.items, dsum)?;
                let items = &mut pc.items;
                self.install(|| {
                    items
                        .par_chunks_mut(ROWS * t)
                        .enumerate()
                        .for_each(|(k, chunk)| {
                            let rows = (layout, reg, shift, k * ROWS);
                            #[cfg(target_arch = "x86_64")]
                            if self.wide() {
                                // SAFETY: `wide` holds only where the CPU has AVX2.
                                return unsafe { factor_items_avx2(rows, chunk) };
                            }
                            factor_items(rows, chunk)
                        })
                });
                Ok(())
            }
            PrecondKind::Jacobi => {
                // The item coordinates, row by row, as one buffer.
                let mut diag = vec![0f32; layout.n_items * w];
                for (i, d) in diag.chunks_mut(w).enumerate() {
                    let (fo, bo) = row_coords(layout, false, i);
                    d[..f].copy_from_slice(&pc.inv[fo..fo + f]);
                    if let Some(b) = bo {
                        d[f] = pc.inv[b];
                    }
                }
                sum(&mut diag, dsum)?;
                let mut dreg = vec![0f32; w];
                for (i, d) in diag.chunks(w).enumerate() {
                    row_block(layout, reg, false, i, &mut dreg);
                    let (fo, bo) = row_coords(layout, false, i);
                    for j in 0..f {
                        pc.inv[fo + j] = 1.0 / shifted_diag(d[j], dreg[j], shift);
                    }
                    if let Some(b) = bo {
                        pc.inv[b] = 1.0 / shifted_diag(d[f], dreg[f], shift);
                    }
                }
                Ok(())
            }
        }
    }

    /// See `SparseOps::row_scale`.
    pub(super) fn row_scale_host(&self, layout: &Layout, g: &[f32], rho: f32, out: &mut [f32]) {
        let f = layout.rank;
        let scale = |s: f32| if s > 0.0 { rho / s.sqrt() } else { 0.0 };
        for (users, n) in [(true, layout.n_users), (false, layout.n_items)] {
            let vals: Vec<f32> = self.install(|| {
                (0..n)
                    .into_par_iter()
                    .map(|r| {
                        let (fo, bo) = row_coords(layout, users, r);
                        let mut s = 0f32;
                        for k in 0..f {
                            s += g[fo + k] * g[fo + k];
                        }
                        if let Some(b) = bo {
                            s += g[b] * g[b];
                        }
                        scale(s)
                    })
                    .collect()
            });
            for (r, c) in vals.into_iter().enumerate() {
                let (fo, bo) = row_coords(layout, users, r);
                out[fo..fo + f].fill(c);
                if let Some(b) = bo {
                    out[b] = c;
                }
            }
        }
        if has_d(layout) {
            let off = layout.d_off();
            let mut s = 0f32;
            for k in 0..f {
                s += g[off + k] * g[off + k];
            }
            out[off..off + f].fill(scale(s));
        }
    }

    pub(super) fn precond_apply_host(
        &self,
        pc: &CpuPrecond,
        layout: &Layout,
        r: &[f32],
        z: &mut [f32],
    ) {
        match pc.kind {
            PrecondKind::None => z.copy_from_slice(r),
            PrecondKind::Jacobi => self.install(|| {
                z.par_iter_mut()
                    .zip(r.par_iter().zip(pc.inv.par_iter()))
                    .for_each(|(z, (r, m))| *z = r * m)
            }),
            PrecondKind::BlockJacobi => {
                let f = layout.rank;
                let (nu, ni) = (layout.n_users, layout.n_items);
                // z's factor rows and biases of each side, each task writing its own rows.
                let (zp, rest) = z.split_at_mut(nu * f);
                let (zq, rest) = rest.split_at_mut(ni * f);
                let (zb, zc) = if layout.has_biases() {
                    let (zb, rest) = rest.split_at_mut(nu);
                    (zb, &mut rest[..ni])
                } else {
                    (&mut [][..], &mut [][..])
                };
                let side = |users: bool, zf: &mut [f32], zb: &mut [f32], blocks: &[f32]| {
                    let task = ApplyTask {
                        layout,
                        r,
                        users,
                        blocks,
                        w: pc.width,
                    };
                    let n_tasks = zf.len().div_ceil((ROWS * f).max(1));
                    let mut bias: Vec<&mut [f32]> = zb.chunks_mut(ROWS).collect();
                    bias.resize_with(n_tasks, Default::default);
                    zf.par_chunks_mut((ROWS * f).max(1))
                        .zip(bias)
                        .enumerate()
                        .for_each(|(k, (zf, zb))| {
                            #[cfg(target_arch = "x86_64")]
                            if self.wide() {
                                // SAFETY: `wide` holds only where the CPU has AVX2.
                                return unsafe { apply_task_avx2(&task, k, zf, zb) };
                            }
                            task.run(k, zf, zb)
                        });
                };
                self.install(|| {
                    rayon::join(
                        || side(true, zp, zb, &pc.users),
                        || side(false, zq, zc, &pc.items),
                    )
                });
                if has_d(layout) {
                    let off = layout.d_off();
                    for k in 0..layout.rank {
                        z[off + k] = r[off + k] * pc.inv[k];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn gram_update_adds_what_the_row_by_row_chunks_add() {
        // Unrolled widths (1–12 chunks) and the general loop past them.
        for nb in 1..=13 {
            let h = nb * CHUNK;
            let mut rng = rand::rngs::StdRng::seed_from_u64(nb as u64);
            let (mut got, mut want) = (vec![0f32; h * h], vec![0f32; h * h]);
            for _ in 0..5 {
                let x: Vec<f32> = (0..h).map(|_| rng.random_range(-2.0f32..2.0)).collect();
                gram_update(&mut got, &x);
                for (j, row) in want.chunks_exact_mut(h).enumerate() {
                    let n = (j + 1).next_multiple_of(CHUNK);
                    add_scaled_chunks(&mut row[..n], x[j], &x[..n]);
                }
            }
            assert!(want.iter().any(|&v| v != 0.0));
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{nb} chunks"
            );
        }
    }
}
