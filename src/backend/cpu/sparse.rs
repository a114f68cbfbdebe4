//! Sparse model kernels on the host, mirroring the WGSL kernels: each side of a pass is a row
//! reduction over the CSR (users) or the CSC (items). A row's sum runs in column order into f32
//! accumulators; global scalars (Σe², the d-block of UDV) add f64 partials per block of rows in
//! block order.

#[cfg(target_arch = "x86_64")]
use super::lanes::Avx;
use super::lanes::{lane_sum, Lanes, Portable};
use super::vector::CHUNK;
use super::{plan_pays_for_loss, CpuBackend, Fusion};
use crate::backend::{
    check_entries, check_shape, Curvature, EvalSums, PrecondKind, Shift, SparseOps,
};
use crate::data::{Compressed, Matrix, Ratings};
use crate::error::Result;
use crate::model::{Layout, ModelKind};
use rayon::prelude::*;

/// Rows per parallel task and per partial.
const ROWS: usize = 64;

/// Which side of the matrix a pass reduces over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Users,
    Items,
}

/// The blocks of θ (or of a direction v) seen from one side: `own` rows are reduced into, `other`
/// rows are gathered.
struct View<'a> {
    own: &'a [f32],
    other: &'a [f32],
    own_bias: &'a [f32],
    other_bias: &'a [f32],
    d: &'a [f32],
}

fn view<'a>(layout: &Layout, x: &'a [f32], side: Side) -> View<'a> {
    let (p, q) = (
        &x[layout.p_off()..layout.q_off()],
        &x[layout.q_off()..layout.q_off() + layout.n_items * layout.rank],
    );
    let (b, c): (&[f32], &[f32]) = if layout.has_biases() {
        (
            &x[layout.b_off()..layout.c_off()],
            &x[layout.c_off()..layout.c_off() + layout.n_items],
        )
    } else {
        (&[], &[])
    };
    let d: &[f32] = if layout.kind == ModelKind::Udv {
        &x[layout.d_off()..layout.d_off() + layout.rank]
    } else {
        &[]
    };
    match side {
        Side::Users => View {
            own: p,
            other: q,
            own_bias: b,
            other_bias: c,
            d,
        },
        Side::Items => View {
            own: q,
            other: p,
            own_bias: c,
            other_bias: b,
            d,
        },
    }
}

/// y ← y + s·x over a row.
#[inline(always)]
fn add_scaled(y: &mut [f32], s: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += s * x;
    }
}

/// r̂ for one entry from its two factor rows (and biases).
#[inline(always)]
fn predict<S: Lanes>(
    s: S,
    layout: &Layout,
    a: &[f32],
    b: &[f32],
    biases: (f32, f32),
    d: &[f32],
) -> f32 {
    with_biases(layout, factor_dot(s, layout, a, b, d), biases)
}

/// r̂'s factor part from the two factor rows: a·b (LF) or Σ a d b (UDV).
#[inline(always)]
fn factor_dot<S: Lanes>(s: S, layout: &Layout, a: &[f32], b: &[f32], d: &[f32]) -> f32 {
    let n = a.len();
    match layout.kind {
        ModelKind::Lf => lane_sum(s, [a, &b[..n]], |[a, b]| a * b),
        ModelKind::Udv => lane_sum(s, [a, &b[..n], &d[..n]], |[a, b, d]| a * d * b),
    }
}

/// r̂ from its factor part: μ + b + c added for a biased LF model.
#[inline(always)]
fn with_biases(layout: &Layout, dot: f32, (ba, bb): (f32, f32)) -> f32 {
    if layout.has_biases() {
        dot + layout.mu + ba + bb
    } else {
        dot
    }
}

/// A pass's kind as a constant: each kind's walk is compiled apart, its loop holding only that
/// kind's work.
const LOSS: u8 = 0;
const GRAD: u8 = 1;
const CURV: u8 = 2;
const DIAG: u8 = 3;

/// What a pass computes for each own row.
enum Pass<'a> {
    /// Σe² only.
    Loss,
    /// −e weights: the gradient.
    Grad,
    /// s = J v weights (and −e second-order terms for the Hessian).
    Curv { v: View<'a>, hessian: bool },
    /// diag(JᵀJ) before UDV's d scaling: each coordinate's Σ (∂r̂/∂x)² with ∂r̂/∂(row) the
    /// other side's row (the Jacobi preconditioner's build).
    Diag,
}

impl Pass<'_> {
    /// Its kind ([`LOSS`], [`GRAD`], [`CURV`], [`DIAG`]).
    fn kind(&self) -> u8 {
        match self {
            Pass::Loss => LOSS,
            Pass::Grad => GRAD,
            Pass::Curv { .. } => CURV,
            Pass::Diag => DIAG,
        }
    }
}

/// What a two-sided pass computes: the gradient, a curvature product along a direction (with the
/// Hessian's second-order terms or not), or the Jacobi preconditioner's sums.
#[derive(Clone, Copy)]
enum Mode<'a> {
    Grad,
    Curv(&'a [f32], bool),
    Diag,
}

/// Item-side accumulation inside the user pass ("fused"): each block of users adds the item rows'
/// contributions into its own buffer of `width` = f + 1 floats per item (row, then bias); the
/// buffers are added in block order afterwards.
struct ItemSink<'a> {
    /// θ seen from the items (own = Q or V).
    th: View<'a>,
    /// The direction seen from the items (curvature passes).
    v: Option<View<'a>>,
    width: usize,
}

/// Entries ahead of the current one whose other-side rows are asked into cache: their addresses
/// depend on the column index, which no hardware prefetcher predicts.
pub(super) const PREFETCH_AHEAD: usize = 8;

/// Tiled passes walk a few entries of each row per visit: the rows this many rows on are hinted.
const ROWS_AHEAD: usize = 3;

/// Asks the cache lines of `x[start..start + len]` into L1 (a hint only; no effect on results).
#[inline(always)]
pub(super) fn prefetch(x: &[f32], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if start < x.len() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = x[start..].as_ptr() as *const i8;
        let bytes = len.min(x.len() - start) * 4;
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch reads nothing and cannot fault; the address lies in `x`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, start, len);
}

/// What every entry of a pass reads besides its own row and column.
struct EntryCtx<'a> {
    layout: &'a Layout,
    th: &'a View<'a>,
    pass: &'a Pass<'a>,
    /// The curvature passes' side-by-side table (empty: read θ and the direction apart).
    pair: &'a [f32],
    sink: Option<&'a ItemSink<'a>>,
    /// The rank, and whether `pair` is in use.
    f: usize,
    paired: bool,
}

/// One row's state in a pass: its θ row and bias, and where its sums go.
struct RowAcc<'a> {
    r: usize,
    a: &'a [f32],
    ba: f32,
    acc: &'a mut [f32],
    acc2: &'a mut [f32],
    acc3: &'a mut [f32],
    bias_acc: &'a mut f32,
    sq: &'a mut f64,
}

impl<'a> RowAcc<'a> {
    /// Row r, the jj-th of its group: its θ row and bias, and its slots in the group's per-row
    /// sums (`f` floats each in `acc` and, when kept, the Hessian's `acc2s`, `acc3s`).
    #[inline(always)]
    fn new(
        th: &View<'a>,
        f: usize,
        (r, jj): (usize, usize),
        acc: &'a mut [f32],
        (acc2s, acc3s): (&'a mut [f32], &'a mut [f32]),
        bias_accs: &'a mut [f32],
        row_sq: &'a mut [f64],
    ) -> Self {
        // Row jj's f floats of a per-row sum (none when the pass keeps none).
        #[inline(always)]
        fn row_of(v: &mut [f32], jj: usize, f: usize) -> &mut [f32] {
            if v.is_empty() {
                v
            } else {
                &mut v[jj * f..(jj + 1) * f]
            }
        }
        RowAcc {
            r,
            a: &th.own[r * f..(r + 1) * f],
            ba: th.own_bias.get(r).copied().unwrap_or(0.0),
            acc: &mut acc[jj * f..(jj + 1) * f],
            acc2: row_of(acc2s, jj, f),
            acc3: row_of(acc3s, jj, f),
            bias_acc: &mut bias_accs[jj],
            sq: &mut row_sq[jj],
        }
    }
}

impl EntryCtx<'_> {
    /// Column c's θ row (from the side-by-side table, where in use).
    #[inline(always)]
    fn b_row(&self, c: usize) -> &[f32] {
        let f = self.f;
        if self.paired {
            &self.pair[c * 2 * f..c * 2 * f + f]
        } else {
            &self.th.other[c * f..(c + 1) * f]
        }
    }

    /// Column c's direction row.
    #[inline(always)]
    fn db_row<'v>(&'v self, v: &'v View, c: usize) -> &'v [f32] {
        let f = self.f;
        if self.paired {
            &self.pair[c * 2 * f + f..(c + 1) * 2 * f]
        } else {
            &v.other[c * f..(c + 1) * f]
        }
    }

    /// The lane sum entry (row r, column c) needs before its updates: r̂'s factor part (loss
    /// and gradient), J v's (curvature).
    #[inline(always)]
    fn dot<S: Lanes, const K: u8>(&self, ln: S, r: usize, c: usize) -> f32 {
        let (th, f) = (self.th, self.f);
        let (a, b) = (&th.own[r * f..(r + 1) * f], self.b_row(c));
        match (K, self.pass, self.layout.kind) {
            (DIAG, ..) => 0.0,
            (CURV, Pass::Curv { v, .. }, kind) => {
                let (da, db) = (&v.own[r * f..(r + 1) * f], self.db_row(v, c));
                match kind {
                    ModelKind::Lf => lane_sum(ln, [da, b, a, db], |[da, b, a, db]| da * b + a * db),
                    ModelKind::Udv => lane_sum(
                        ln,
                        [da, b, a, db, &th.d[..f], &v.d[..f]],
                        |[da, b, a, db, d, dd]| d * (da * b + a * db) + dd * a * b,
                    ),
                }
            }
            (CURV, ..) => unreachable!("a curvature kind without a direction"),
            _ => factor_dot(ln, self.layout, a, b, th.d),
        }
    }
}

/// One entry (the row in `row`, column c, its value at `vals[k]`): its terms go into the row's
/// accumulators and, fused, into item c's row of the block's item buffer.
#[inline(always)]
fn visit<S: Lanes, const K: u8>(
    ln: S,
    cx: &EntryCtx,
    row: &mut RowAcc,
    (c, dot): (usize, f32),
    (vals, k): (&[f32], usize),
    items: &mut [f32],
) {
    let (r, a, ba) = (row.r, row.a, row.ba);
    let (acc, acc2, acc3) = (&mut *row.acc, &mut *row.acc2, &mut *row.acc3);
    let (bias_acc, sq) = (&mut *row.bias_acc, &mut *row.sq);
    let EntryCtx {
        layout,
        th,
        pass,
        sink,
        f,
        ..
    } = *cx;
    let b = cx.b_row(c);
    let bb = th.other_bias.get(c).copied().unwrap_or(0.0);
    // (w1, w2): the weight of ∂r̂ and, for the Hessian, of −e.
    let (w1, w2) = match (K, pass) {
        (LOSS, _) => {
            let e = vals[k] - with_biases(layout, dot, (ba, bb));
            *sq += (e as f64).powi(2);
            return;
        }
        (DIAG, _) => {
            for (y, x) in acc.iter_mut().zip(b) {
                *y += x * x;
            }
            *bias_acc += 1.0;
            if let Some(sk) = sink {
                // Seen from item c: its own row's squares.
                let dst = &mut items[c * sk.width..(c + 1) * sk.width];
                for (y, x) in dst[..f].iter_mut().zip(a) {
                    *y += x * x;
                }
                dst[f] += 1.0;
            }
            return;
        }
        (GRAD, _) => {
            let e = vals[k] - with_biases(layout, dot, (ba, bb));
            *sq += (e as f64) * (e as f64);
            add_scaled(acc, -e, b);
            *bias_acc -= e;
            (-e, 0.0)
        }
        (_, Pass::Curv { v, hessian }) => {
            let s = if layout.has_biases() {
                dot + v.own_bias[r] + v.other_bias[c]
            } else {
                dot
            };
            add_scaled(acc, s, b);
            *bias_acc += s;
            let mut w = 0.0;
            if *hessian {
                w = -(vals[k] - predict(ln, layout, a, b, (ba, bb), th.d));
                add_scaled(acc2, w, cx.db_row(v, c));
                add_scaled(acc3, w, b);
            }
            (s, w)
        }
        _ => unreachable!("pass and kind disagree"),
    };
    if let Some(sk) = sink {
        // Entry (r, c) seen from item c: its own row gets
        // w1·∂r̂/∂(row c).
        let dst = &mut items[c * sk.width..(c + 1) * sk.width];
        let da: &[f32] =
            sk.v.as_ref()
                .map(|v| &v.other[r * f..(r + 1) * f])
                .unwrap_or(&[]);
        match layout.kind {
            ModelKind::Lf => {
                add_scaled(&mut dst[..f], w1, a);
                if w2 != 0.0 {
                    add_scaled(&mut dst[..f], w2, da);
                }
            }
            ModelKind::Udv => {
                let dd: &[f32] = sk.v.as_ref().map(|v| v.d).unwrap_or(&[]);
                for t in 0..f {
                    let mut x = th.d[t] * w1 * a[t];
                    if w2 != 0.0 {
                        x += th.d[t] * w2 * da[t] + dd[t] * w2 * a[t];
                    }
                    dst[t] += x;
                }
            }
        }
        dst[f] += w1;
    }
}

/// What every block of a pass shares (see [`side_pass`]).
struct BlockCtx<'a> {
    cx: EntryCtx<'a>,
    csr: &'a Compressed,
    plan: Option<&'a TilePlan>,
    /// Rows walked together, and the columns per window of a cursor walk.
    sub_rows: usize,
    window: usize,
    /// Whether the cursors walk tiles (no plan).
    tiled: bool,
    hess: bool,
    sq_group: usize,
    dlen: usize,
    with_d: bool,
}

/// [`BlockCtx::block`] compiled for AVX2: the same operations in the same order on 8-wide
/// registers (no fused multiply-adds), so the same bits as the portable build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_avx2<const K: u8>(
    avx: Avx,
    bc: &BlockCtx,
    rows: Option<&mut [f32]>,
    biases: Option<&mut [f32]>,
    bi: usize,
    blk: &std::ops::Range<usize>,
) -> (Vec<f64>, Vec<f64>, Vec<f32>) {
    bc.block::<_, K>(avx, rows, biases, bi, blk)
}

impl BlockCtx<'_> {
    /// Asks the other side's rows of column `c` (and its fused item row) into cache.
    #[inline(always)]
    fn hint(&self, items: &[f32], c: usize) {
        let EntryCtx {
            th,
            pass,
            pair,
            sink,
            f,
            paired,
            ..
        } = self.cx;
        if paired {
            prefetch(pair, c * 2 * f, 2 * f);
        } else {
            prefetch(th.other, c * f, f);
            if let Pass::Curv { v, .. } = pass {
                prefetch(v.other, c * f, f);
            }
        }
        if let Some(sk) = sink {
            prefetch(items, c * sk.width, sk.width);
        }
    }

    /// Block `bi` (rows `blk`) of a pass: (Σe² partials, d-block partial, item buffer).
    #[inline(always)]
    fn block<S: Lanes, const K: u8>(
        &self,
        ln: S,
        mut rows: Option<&mut [f32]>,
        mut biases: Option<&mut [f32]>,
        bi: usize,
        blk: &std::ops::Range<usize>,
    ) -> (Vec<f64>, Vec<f64>, Vec<f32>) {
        let BlockCtx {
            ref cx,
            csr,
            plan,
            sub_rows,
            window,
            tiled,
            hess,
            sq_group,
            dlen,
            with_d,
        } = *self;
        let EntryCtx {
            layout,
            th,
            pass,
            sink,
            f,
            ..
        } = *cx;
        let n_cols = csr.n_cols;
        // Σe² per group of `sq_group` rows from the block's start, each the rows' sums
        // added in row order.
        let mut sq = vec![0f64; blk.len().div_ceil(sq_group.max(1)).max(1)];
        let mut dpart = vec![0f64; dlen];
        let mut items = sink
            .map(|s| vec![0f32; s.th.own.len() / f.max(1) * s.width])
            .unwrap_or_default();
        let sub = sub_rows.min(blk.len().max(1));
        let hlen = if hess { sub * f } else { 0 };
        // LF outputs without Hessian terms are the row sums themselves: summed in place.
        let direct = layout.kind == ModelKind::Lf && !hess && rows.is_some();
        // Σ w·other (or Σ s·other), per row.
        let mut accs = vec![0f32; if direct { 0 } else { sub * f }];
        let mut acc2s = vec![0f32; hlen]; // Hessian: Σ w·d_other
        let mut acc3s = vec![0f32; hlen]; // Hessian: Σ w·other
        let mut bias_accs = vec![0f32; sub];
        // Σe² per row, added in row order: the f64 loss does not depend on the tiles.
        let mut row_sq = vec![0f64; sub];
        // Per row of the sub-block: where its walk stands, and the column there (u32::MAX
        // once done), so a tile that holds none of a row's entries costs one load.
        let mut cursor = vec![0usize; if plan.is_some() { 0 } else { sub }];
        let mut next = vec![u32::MAX; cursor.len()];
        let mut s0 = blk.start;
        while s0 < blk.end {
            let s1 = (s0 + sub).min(blk.end);
            let acc_buf: &mut [f32] = match rows.as_deref_mut() {
                Some(o) if direct => &mut o[(s0 - blk.start) * f..(s1 - blk.start) * f],
                _ => &mut accs,
            };
            acc_buf.fill(0.0);
            acc2s.fill(0.0);
            acc3s.fill(0.0);
            bias_accs.fill(0.0);
            row_sq.fill(0.0);
            if let Some(pl) = plan {
                // The plan's group of rows s0..s1: its tiles in column order.
                let g = pl.group_base[bi] + (s0 - blk.start) / pl.rows;
                for t in 0..pl.n_tiles {
                    let c0 = t * pl.cols;
                    let (e0, e1) = (pl.ptr[g * pl.n_tiles + t], pl.ptr[g * pl.n_tiles + t + 1]);
                    for e in e0..e1 {
                        if e + PREFETCH_AHEAD < e1 {
                            let x = pl.packed[e + PREFETCH_AHEAD];
                            self.hint(&items, c0 + (x & 0xffff) as usize);
                        }
                        let x = pl.packed[e];
                        let (jj, c) = ((x >> 16) as usize, c0 + (x & 0xffff) as usize);
                        let mut row = RowAcc::new(
                            th,
                            f,
                            (s0 + jj, jj),
                            acc_buf,
                            (&mut acc2s, &mut acc3s),
                            &mut bias_accs,
                            &mut row_sq,
                        );
                        let dot = cx.dot::<_, K>(ln, s0 + jj, c);
                        visit::<_, K>(ln, cx, &mut row, (c, dot), (&pl.values[..], e), &mut items);
                    }
                }
            } else {
                for (jj, r) in (s0..s1).enumerate() {
                    let k = csr.ptr[r] as usize;
                    cursor[jj] = k;
                    next[jj] = if k < csr.ptr[r + 1] as usize {
                        csr.index[k]
                    } else {
                        u32::MAX
                    };
                }
                let mut c0 = 0usize;
                loop {
                    let c1 = c0.saturating_add(window).min(n_cols);
                    for (jj, r) in (s0..s1).enumerate() {
                        if next[jj] as usize >= c1 {
                            continue;
                        }
                        let row_end = csr.ptr[r + 1] as usize;
                        let from = cursor[jj];
                        let to = if c1 >= n_cols {
                            row_end
                        } else {
                            let mut k = from + 1;
                            while k < row_end && (csr.index[k] as usize) < c1 {
                                k += 1;
                            }
                            k
                        };
                        cursor[jj] = to;
                        next[jj] = if to < row_end {
                            csr.index[to]
                        } else {
                            u32::MAX
                        };
                        // Tiled, the entries walked next are the next rows' in this
                        // window, not this row's: hint the first two of the row
                        // `ROWS_AHEAD` on.
                        if tiled {
                            let ja = jj + ROWS_AHEAD;
                            if ja < s1 - s0 {
                                let end = csr.ptr[s0 + ja + 1] as usize;
                                for k in cursor[ja]..(cursor[ja] + 2).min(end) {
                                    let ca = csr.index[k] as usize;
                                    if ca >= c1 {
                                        break;
                                    }
                                    self.hint(&items, ca);
                                }
                            }
                        }
                        let mut row = RowAcc::new(
                            th,
                            f,
                            (r, jj),
                            acc_buf,
                            (&mut acc2s, &mut acc3s),
                            &mut bias_accs,
                            &mut row_sq,
                        );
                        for k in from..to {
                            if !tiled || k + PREFETCH_AHEAD < to {
                                if let Some(&ahead) = csr.index.get(k + PREFETCH_AHEAD) {
                                    self.hint(&items, ahead as usize);
                                }
                            }
                            let c = csr.index[k] as usize;
                            let dot = cx.dot::<_, K>(ln, r, c);
                            visit::<_, K>(
                                ln,
                                cx,
                                &mut row,
                                (c, dot),
                                (&csr.values[..], k),
                                &mut items,
                            );
                        }
                    }
                    if c1 >= n_cols {
                        break;
                    }
                    c0 = c1;
                }
            }
            for (jj, x) in row_sq[..s1 - s0].iter().enumerate() {
                sq[(s0 + jj - blk.start) / sq_group.max(1)] += x;
            }
            let Some(rows) = rows.as_deref_mut() else {
                s0 = s1;
                continue;
            };
            for (jj, r) in (s0..s1).enumerate() {
                let j = r - blk.start;
                let a = &th.own[r * f..(r + 1) * f];
                let acc: &[f32] = if direct {
                    &[]
                } else {
                    &accs[jj * f..(jj + 1) * f]
                };
                let (acc2, acc3): (&[f32], &[f32]) = if hess {
                    (&acc2s[jj * f..(jj + 1) * f], &acc3s[jj * f..(jj + 1) * f])
                } else {
                    (&[], &[])
                };
                let row = &mut rows[j * f..(j + 1) * f];
                match layout.kind {
                    ModelKind::Lf => {
                        if !direct {
                            for t in 0..f {
                                row[t] = acc[t] + if hess { acc2[t] } else { 0.0 };
                            }
                        }
                        if let Some(bo) = biases.as_deref_mut() {
                            bo[j] = bias_accs[jj];
                        }
                    }
                    ModelKind::Udv if K == DIAG => {
                        // The unscaled sums, and Σ_i (U_uk V_ik)² = U_uk² S_kk for d.
                        row.copy_from_slice(acc);
                        if with_d {
                            for t in 0..f {
                                dpart[t] += (a[t] * a[t] * acc[t]) as f64;
                            }
                        }
                    }
                    ModelKind::Udv => {
                        let dv: &[f32] = match pass {
                            Pass::Curv { v, .. } => v.d,
                            _ => &[],
                        };
                        for t in 0..f {
                            let mut o = th.d[t] * acc[t];
                            if hess {
                                o += th.d[t] * acc2[t] + dv[t] * acc3[t];
                            }
                            row[t] = o;
                        }
                        if with_d {
                            let da: &[f32] = match pass {
                                Pass::Curv { v, .. } => &v.own[r * f..(r + 1) * f],
                                _ => &[],
                            };
                            for t in 0..f {
                                let mut x = a[t] * acc[t];
                                if hess {
                                    x += da[t] * acc3[t] + a[t] * acc2[t];
                                }
                                dpart[t] += x as f64;
                            }
                        }
                    }
                }
            }
            s0 = s1;
        }
        (sq, dpart, items)
    }
}

/// Reduces over rows in `blocks` (consecutive ranges covering all rows in order). `out_rows` has
/// own-rows × f floats (plus own biases) or is absent for a loss pass; `sink` turns on the fused
/// item side. Returns (Σe², d-block partial sum, item buffers per block).
#[allow(clippy::too_many_arguments)]
fn side_pass(
    be: &CpuBackend,
    layout: &Layout,
    csr: &Compressed,
    th: &View,
    pass: &Pass,
    blocks: &[std::ops::Range<usize>],
    out_rows: Option<&mut [f32]>,
    out_bias: Option<&mut [f32]>,
    with_d: bool,
    sink: Option<&ItemSink>,
    tile: Option<usize>,
    plan: Option<&TilePlan>,
    sq_sum: SqSum,
) -> (f64, Vec<f64>, Vec<Vec<f32>>) {
    let f = layout.rank;
    let dlen = if with_d { f } else { 0 };
    // Cut the outputs at the block boundaries.
    let mut row_chunks: Vec<Option<&mut [f32]>> = Vec::with_capacity(blocks.len());
    let mut bias_chunks: Vec<Option<&mut [f32]>> = Vec::with_capacity(blocks.len());
    let (mut rest_rows, mut rest_bias) = (out_rows, out_bias);
    for blk in blocks {
        let n = blk.len();
        row_chunks.push(rest_rows.take().map(|o| {
            let (a, b) = o.split_at_mut(n * f);
            rest_rows = Some(b);
            a
        }));
        bias_chunks.push(rest_bias.take().map(|o| {
            let (a, b) = o.split_at_mut(n);
            rest_bias = Some(b);
            a
        }));
    }
    let hess = matches!(pass, Pass::Curv { hessian: true, .. });
    // Untiled: one row at a time over all its columns. Tiled: `n` rows at a time, and across
    // them the columns in windows of `n`, so each row's entries still come in column order and
    // each column's in row order (every f32 sum is added in the untiled order).
    // With a tile plan, the rows go `plan.rows` at a time and their entries come from the plan.
    let (sub_rows, window) = match (plan, tile) {
        (Some(pl), _) => (pl.rows, usize::MAX),
        (None, Some(n)) => (n.max(1), n.max(1)),
        (None, None) => (1, usize::MAX),
    };
    let n_cols = csr.n_cols;
    let tiled = tile.is_some() && plan.is_none();
    // Curvature passes read the other side's θ row and direction row of every entry: side by
    // side in one table, the two are one region of 2f floats (`CpuBackend::pairs`).
    let pair: Vec<f32> = match pass {
        Pass::Curv { v, .. } if be.pairs(f, n_cols) => {
            let mut t = vec![0f32; n_cols * 2 * f];
            be.install(|| {
                t.par_chunks_mut(2 * f).enumerate().for_each(|(c, row)| {
                    row[..f].copy_from_slice(&th.other[c * f..(c + 1) * f]);
                    row[f..].copy_from_slice(&v.other[c * f..(c + 1) * f]);
                })
            });
            t
        }
        _ => Vec::new(),
    };
    let paired = !pair.is_empty();
    let cx = EntryCtx {
        layout,
        th,
        pass,
        pair: &pair,
        sink,
        f,
        paired,
    };
    let sq_group = match sq_sum {
        SqSum::PerBlock(n) => n,
        SqSum::Rows(_) => 1,
    };
    let bc = BlockCtx {
        cx,
        csr,
        plan,
        sub_rows,
        window,
        tiled,
        hess,
        sq_group,
        dlen,
        with_d,
    };
    let partials: Vec<(Vec<f64>, Vec<f64>, Vec<f32>)> = be.install(|| {
        row_chunks
            .into_par_iter()
            .zip(bias_chunks.into_par_iter())
            .zip(blocks.par_iter().enumerate())
            .map(|((rows, biases), (bi, blk))| {
                // One walk per kind of pass, in the AVX2 build where the CPU has it.
                macro_rules! walk {
                    ($k:expr) => {{
                        #[cfg(target_arch = "x86_64")]
                        if let Some(avx) = be.avx() {
                            // SAFETY: the token exists only where the CPU has AVX2.
                            return unsafe {
                                block_avx2::<{ $k }>(avx, &bc, rows, biases, bi, blk)
                            };
                        }
                        bc.block::<_, { $k }>(Portable, rows, biases, bi, blk)
                    }};
                }
                match pass.kind() {
                    LOSS => walk!(LOSS),
                    GRAD => walk!(GRAD),
                    CURV => walk!(CURV),
                    _ => walk!(DIAG),
                }
            })
            .collect()
    });
    let mut sq = 0f64;
    let mut d = vec![0f64; dlen];
    let mut item_bufs = Vec::new();
    // With per-row sums, the partial of the group of `n` rows being added, and its rows so far.
    let (mut group, mut in_group) = (0f64, 0usize);
    for (s, dp, items) in partials {
        match sq_sum {
            SqSum::PerBlock(_) => {
                for x in s {
                    sq += x;
                }
            }
            SqSum::Rows(n) => {
                for x in s {
                    group += x;
                    in_group += 1;
                    if in_group == n {
                        sq += group;
                        (group, in_group) = (0.0, 0);
                    }
                }
            }
        }
        for t in 0..dlen {
            d[t] += dp[t];
        }
        item_bufs.push(items);
    }
    if in_group > 0 {
        sq += group;
    }
    (sq, d, item_bufs)
}

/// How a pass adds its rows' Σe² (each row's own sum is added in column order either way).
#[derive(Clone, Copy)]
enum SqSum {
    /// Partials of `n` rows from each block's start, added in order.
    PerBlock(usize),
    /// Partials of `n` rows from row 0, added in order: the same bits for any blocks.
    Rows(usize),
}

/// Blocks of `ROWS` rows (when tiled, of one tile's rows rounded up to a multiple of `ROWS`):
/// the unfused partition. Their Σe² partials are taken per `ROWS` rows either way.
fn row_blocks(n_rows: usize, tile: Option<usize>) -> Vec<std::ops::Range<usize>> {
    crate::backend::partition(n_rows, tile.unwrap_or(0).next_multiple_of(ROWS).max(ROWS)).collect()
}

/// About `n` blocks of consecutive rows with balanced entry counts (depends on the data only).
fn balanced_blocks(c: &Compressed, n: usize) -> Vec<std::ops::Range<usize>> {
    let nnz = c.nnz() as u64;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..=n {
        let target = nnz * k as u64 / n as u64;
        let end = if k == n {
            c.n_rows
        } else {
            c.ptr
                .partition_point(|&p| p < target)
                .min(c.n_rows)
                .max(start)
        };
        if end > start {
            out.push(start..end);
        }
        start = end;
    }
    out
}

/// Blocks of the fused pass: a fixed count, so results do not depend on the thread count.
const FUSE_BLOCKS: usize = 16;

/// Blocks for the fused pass, or None for the two-pass path. `Auto` fuses when the items are few
/// next to the entries (average item degree ≥ 64), so each block's item buffer is used densely.
fn fused_blocks(fusion: Fusion, m: &Matrix) -> Option<Vec<std::ops::Range<usize>>> {
    let fuse = match fusion {
        Fusion::Always => true,
        Fusion::Never => false,
        Fusion::Auto => m.nnz() >= 64 * m.n_items() && m.nnz() >= FUSE_BLOCKS * ROWS,
    };
    fuse.then(|| balanced_blocks(&m.by_user, FUSE_BLOCKS))
}

/// The fused pass's entries in tile order, computed once per matrix (`CpuBackend::plan_tile`
/// says when): each fused block's rows in groups of `rows`, each group's entries in tiles of
/// `cols` columns, tiles in column order, (row, column) order inside a tile. So every row still
/// sees its entries in column order and every column its rows in row order: the sums are the
/// untiled pass's, to the bit. An entry is packed as (row in its group) << 16 | (column in its
/// tile), with its value beside it: 8 bytes per entry on top of the CSR and CSC.
pub(crate) struct TilePlan {
    /// Rows per group (≤ 65,536).
    rows: usize,
    /// Columns per tile (≤ 65,536).
    cols: usize,
    /// Column tiles per group.
    n_tiles: usize,
    /// The blocks the groups were cut in.
    blocks: Vec<std::ops::Range<usize>>,
    /// Per block, the index of its first group.
    group_base: Vec<usize>,
    /// Per (group, tile), where its entries start in `packed`; one more at the end.
    ptr: Vec<usize>,
    packed: Vec<u32>,
    values: Vec<f32>,
}

/// Users per group of the fused pass's tile plan. A group's rows are walked in order once per
/// column tile, so their arrays stream and need not fit L2; more rows per group means more
/// entries per item row brought into L2 (at 1M × 20k × 20M, 8 per tile of 2,624 items).
pub const PLAN_ROWS: usize = 8192;

impl TilePlan {
    fn new(
        be: &CpuBackend,
        c: &Compressed,
        blocks: Vec<std::ops::Range<usize>>,
        rows: usize,
        cols: usize,
    ) -> Self {
        assert!((1..=1 << 16).contains(&rows) && (1..=1 << 16).contains(&cols));
        let n_tiles = c.n_cols.div_ceil(cols).max(1);
        let mut groups = Vec::new();
        let mut group_base = Vec::with_capacity(blocks.len());
        for blk in &blocks {
            group_base.push(groups.len());
            groups.extend(
                crate::backend::partition(blk.len(), rows)
                    .map(|g| blk.start + g.start..blk.start + g.end),
            );
        }
        // Each group's entries, tile by tile, walking its rows' cursors.
        let parts: Vec<(Vec<usize>, Vec<u32>, Vec<f32>)> = be.install(|| {
            groups
                .par_iter()
                .map(|g| {
                    let lo = c.ptr[g.start] as usize;
                    let n = c.ptr[g.end] as usize - lo;
                    let (mut counts, mut packed, mut values) = (
                        Vec::with_capacity(n_tiles),
                        Vec::with_capacity(n),
                        Vec::with_capacity(n),
                    );
                    let mut cursor: Vec<usize> = g.clone().map(|r| c.ptr[r] as usize).collect();
                    for t in 0..n_tiles {
                        let c0 = t * cols;
                        let c1 = (c0 + cols).min(c.n_cols);
                        let from = packed.len();
                        for (j, r) in g.clone().enumerate() {
                            let end = c.ptr[r + 1] as usize;
                            while cursor[j] < end && (c.index[cursor[j]] as usize) < c1 {
                                let k = cursor[j];
                                packed.push(((j as u32) << 16) | (c.index[k] - c0 as u32));
                                values.push(c.values[k]);
                                cursor[j] += 1;
                            }
                        }
                        counts.push(packed.len() - from);
                    }
                    (counts, packed, values)
                })
                .collect()
        });
        let mut ptr = Vec::with_capacity(groups.len() * n_tiles + 1);
        let (mut packed, mut values) = (Vec::with_capacity(c.nnz()), Vec::with_capacity(c.nnz()));
        ptr.push(0);
        for (counts, pk, vs) in parts {
            for n in counts {
                ptr.push(ptr.last().unwrap() + n);
            }
            packed.extend_from_slice(&pk);
            values.extend_from_slice(&vs);
        }
        TilePlan {
            rows,
            cols,
            n_tiles,
            blocks,
            group_base,
            ptr,
            packed,
            values,
        }
    }
}

/// A matrix on the CPU backend: the host CSR and CSC, and the fused pass's tile plan where tiles
/// are in force for it.
pub struct CpuMatrix {
    matrix: Matrix,
    plan: Option<TilePlan>,
}

impl std::ops::Deref for CpuMatrix {
    type Target = Matrix;
    fn deref(&self) -> &Matrix {
        &self.matrix
    }
}

impl CpuMatrix {
    /// Whether the fused passes walk a precomputed tile plan (and its tile: rows × columns).
    pub fn tile_plan(&self) -> Option<(usize, usize)> {
        self.plan.as_ref().map(|p| (p.rows, p.cols))
    }
}

/// Entries on the CPU backend: the ratings as given and, when tiled, their users and items in
/// the order a tiled pass walks them (the fused passes' plan's tiles of [`PLAN_ROWS`] users × its
/// columns where a plan pays, else the cursor walk's t × t where tiles pay; user tiles in order,
/// item tiles in order inside each, (user, item, place) order inside a tile) with each entry's
/// place in that order. Evaluation predicts in tile order and sums in the given order, so its
/// sums do not depend on the tiles.
pub struct CpuEntries {
    ratings: Ratings,
    tiled: Option<TileOrder>,
}

/// Entries in tile order: users and items, and where each entry of the given order went.
struct TileOrder {
    users: Vec<u32>,
    items: Vec<u32>,
    place: Vec<u32>,
}

impl CpuEntries {
    /// `tile`: (users, items) per tile, or None for the given order.
    fn new(r: &Ratings, tile: Option<(usize, usize)>) -> Self {
        let tiled = tile.map(|(tu, ti)| {
            let (tu, ti) = (tu.max(1) as u32, ti.max(1) as u32);
            let mut order: Vec<u32> = (0..r.nnz() as u32).collect();
            order.par_sort_unstable_by_key(|&k| {
                let (u, i) = (r.users[k as usize], r.items[k as usize]);
                (u / tu, i / ti, u, i, k)
            });
            let mut place = vec![0u32; order.len()];
            for (j, &k) in order.iter().enumerate() {
                place[k as usize] = j as u32;
            }
            TileOrder {
                users: order.par_iter().map(|&k| r.users[k as usize]).collect(),
                items: order.par_iter().map(|&k| r.items[k as usize]).collect(),
                place,
            }
        });
        CpuEntries {
            ratings: r.clone(),
            tiled,
        }
    }
}

/// Splits an output vector into its user-side and item-side blocks (rows and biases) and the d
/// block.
struct OutBlocks<'a> {
    p: &'a mut [f32],
    q: &'a mut [f32],
    b: Option<&'a mut [f32]>,
    c: Option<&'a mut [f32]>,
    d: Option<&'a mut [f32]>,
}

fn out_blocks<'a>(layout: &Layout, out: &'a mut [f32]) -> OutBlocks<'a> {
    let (p, rest) = out.split_at_mut(layout.q_off());
    let (q, rest) = rest.split_at_mut(layout.n_items * layout.rank);
    let (b, c, d) = if layout.has_biases() {
        let (b, c) = rest.split_at_mut(layout.n_users);
        (Some(b), Some(c), None)
    } else if layout.kind == ModelKind::Udv {
        (None, None, Some(rest))
    } else {
        (None, None, None)
    };
    OutBlocks { p, q, b, c, d }
}

impl CpuBackend {
    /// A gradient (`dir` None) or curvature product (`dir` = (v, hessian)) over both sides. When the
    /// item rows fit the fused budget, one pass over the CSR does both sides (per-block item
    /// buffers added in block order); otherwise the item side is a second pass over the CSC.
    fn two_sided(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        theta: &[f32],
        mode: Mode,
        out: &mut [f32],
    ) -> (f64, Vec<f64>) {
        let f = layout.rank;
        let pass = |side| match mode {
            Mode::Grad => Pass::Grad,
            Mode::Diag => Pass::Diag,
            Mode::Curv(v, hessian) => Pass::Curv {
                v: view(layout, v, side),
                hessian,
            },
        };
        let dir = match mode {
            Mode::Curv(v, _) => Some(v),
            _ => None,
        };
        let o = out_blocks(layout, out);
        let udv = layout.kind == ModelKind::Udv;
        let th_users = view(layout, theta, Side::Users);
        let tile_of = |c: &Compressed| self.tile(f, c.n_rows, c.n_cols, c.nnz());
        let (sq, dsum) = match fused_blocks(self.fusion, m) {
            Some(blocks) => {
                let plan = m.plan.as_ref().filter(|p| p.blocks == blocks);
                let sink = ItemSink {
                    th: view(layout, theta, Side::Items),
                    v: dir.map(|v| view(layout, v, Side::Items)),
                    width: f + 1,
                };
                let (sq, dsum, bufs) = side_pass(
                    self,
                    layout,
                    &m.by_user,
                    &th_users,
                    &pass(Side::Users),
                    &blocks,
                    Some(o.p),
                    o.b,
                    udv,
                    Some(&sink),
                    tile_of(&m.by_user),
                    plan,
                    SqSum::PerBlock(usize::MAX),
                );
                // Item rows: the blocks' buffers added in block order.
                let width = sink.width;
                let mut cb = o.c;
                self.install(|| {
                    o.q.par_chunks_mut(f).enumerate().for_each(|(i, row)| {
                        row.fill(0.0);
                        for buf in &bufs {
                            add_scaled(row, 1.0, &buf[i * width..i * width + f]);
                        }
                    });
                    if let Some(c) = cb.as_mut() {
                        c.par_iter_mut().enumerate().for_each(|(i, x)| {
                            *x = 0.0;
                            for buf in &bufs {
                                *x += buf[i * width + f];
                            }
                        });
                    }
                });
                (sq, dsum)
            }
            None => {
                let (user_tile, item_tile) = (tile_of(&m.by_user), tile_of(&m.by_item));
                let (sq, dsum, _) = side_pass(
                    self,
                    layout,
                    &m.by_user,
                    &th_users,
                    &pass(Side::Users),
                    &row_blocks(m.n_users(), user_tile),
                    Some(o.p),
                    o.b,
                    udv,
                    None,
                    user_tile,
                    None,
                    SqSum::PerBlock(ROWS),
                );
                side_pass(
                    self,
                    layout,
                    &m.by_item,
                    &view(layout, theta, Side::Items),
                    &pass(Side::Items),
                    &row_blocks(m.n_items(), item_tile),
                    Some(o.q),
                    o.c,
                    false,
                    None,
                    item_tile,
                    None,
                    SqSum::PerBlock(ROWS),
                );
                (sq, dsum)
            }
        };
        if let Some(d) = o.d {
            for t in 0..layout.rank {
                d[t] = dsum[t] as f32;
            }
        }
        (sq, dsum)
    }

    /// diag(JᵀJ) before UDV's d scaling, in `out` (θ-shaped; the d coordinates hold their sums
    /// as f32), by the gradient's plan or passes; returns the d sums' f64 partials.
    pub(super) fn jacobi_sums(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        theta: &[f32],
        out: &mut [f32],
    ) -> Vec<f64> {
        self.two_sided(m, layout, theta, Mode::Diag, out).1
    }
}

/// θ's predictions of the entries (`users[j]`, `items[j]`) into `out[j]`, asking the rows of
/// the entry `PREFETCH_AHEAD` on into cache.
#[inline(always)]
fn predictions<S: Lanes>(
    ln: S,
    layout: &Layout,
    th: &View,
    users: &[u32],
    items: &[u32],
    out: &mut [f32],
) {
    let f = layout.rank;
    for (j, slot) in out.iter_mut().enumerate() {
        if let (Some(&u), Some(&i)) = (users.get(j + PREFETCH_AHEAD), items.get(j + PREFETCH_AHEAD))
        {
            prefetch(th.own, u as usize * f, f);
            prefetch(th.other, i as usize * f, f);
        }
        let (u, i) = (users[j] as usize, items[j] as usize);
        *slot = predict(
            ln,
            layout,
            &th.own[u * f..(u + 1) * f],
            &th.other[i * f..(i + 1) * f],
            (
                th.own_bias.get(u).copied().unwrap_or(0.0),
                th.other_bias.get(i).copied().unwrap_or(0.0),
            ),
            th.d,
        );
    }
}

/// [`predictions`] compiled for AVX2 (the same bits; see [`block_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn predictions_avx2(
    avx: Avx,
    layout: &Layout,
    th: &View,
    users: &[u32],
    items: &[u32],
    out: &mut [f32],
) {
    predictions(avx, layout, th, users, items, out)
}

impl CpuBackend {
    /// [`predictions`], in the AVX2 build where the CPU has it.
    fn predictions(
        &self,
        layout: &Layout,
        th: &View,
        users: &[u32],
        items: &[u32],
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx) = self.avx() {
            // SAFETY: the token exists only where the CPU has AVX2.
            return unsafe { predictions_avx2(avx, layout, th, users, items, out) };
        }
        predictions(Portable, layout, th, users, items, out)
    }
}

impl SparseOps for CpuBackend {
    type Matrix = CpuMatrix;
    type Entries = CpuEntries;
    type Precond = super::CpuPrecond;

    fn precond_new(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        kind: PrecondKind,
        sam: bool,
    ) -> Result<super::CpuPrecond> {
        check_shape(m.n_users(), m.n_items(), layout)?;
        Ok(super::CpuPrecond::new(layout, kind, sam))
    }

    fn row_scale(&self, layout: &Layout, g: &Vec<f32>, rho: f32, out: &mut Vec<f32>) -> Result<()> {
        self.row_scale_host(layout, g, rho, out);
        Ok(())
    }

    fn precond_kind(&self, pc: &super::CpuPrecond) -> PrecondKind {
        pc.kind()
    }

    fn precond_build(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        theta: &Vec<f32>,
        reg: &Vec<f32>,
        shift: Shift,
        pc: &mut super::CpuPrecond,
    ) -> Result<()> {
        self.precond_build_host(m, layout, theta, reg, shift, pc, None)
    }

    fn precond_build_summed(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        theta: &Vec<f32>,
        reg: &Vec<f32>,
        shift: Shift,
        pc: &mut super::CpuPrecond,
        sum: crate::backend::SumHook<'_>,
    ) -> Result<()> {
        self.precond_build_host(m, layout, theta, reg, shift, pc, Some(sum))
    }

    fn precond_apply(
        &self,
        pc: &super::CpuPrecond,
        layout: &Layout,
        r: &Vec<f32>,
        z: &mut Vec<f32>,
    ) -> Result<()> {
        self.precond_apply_host(pc, layout, r, z);
        Ok(())
    }

    fn upload_matrix(&self, m: &Matrix, layout: &Layout) -> Result<CpuMatrix> {
        check_shape(m.n_users(), m.n_items(), layout)?;
        let plan = fused_blocks(self.fusion, m).and_then(|blocks| {
            let c = &m.by_user;
            let cols = self.plan_tile(layout.rank, c.n_cols)?;
            Some(TilePlan::new(self, c, blocks, self.plan_rows, cols))
        });
        Ok(CpuMatrix {
            matrix: m.clone(),
            plan,
        })
    }
    fn upload_entries(&self, r: &Ratings, layout: &Layout) -> Result<CpuEntries> {
        check_entries(r, layout)?;
        // The fused passes' plan's tiles where a plan pays, else the cursor walk's where they do.
        let tile = match self.plan_tile(layout.rank, layout.n_items) {
            Some(cols) => Some((self.plan_rows, cols)),
            None => self
                .tile(layout.rank, layout.n_users, layout.n_items, r.nnz())
                .map(|t| (t, t)),
        };
        Ok(self.install(|| CpuEntries::new(r, tile)))
    }

    fn sq_error(&self, m: &CpuMatrix, layout: &Layout, theta: &Vec<f32>) -> Result<f64> {
        let th = view(layout, theta, Side::Users);
        let c = &m.by_user;
        // On the fused passes' plan where there is one and it pays for the loss (its blocks,
        // per-row sums); else the cursor walk. Partials of `ROWS` rows from row 0 either way:
        // the same bits.
        let plan = m.plan.as_ref().filter(|pl| {
            self.tile_items.is_some() || plan_pays_for_loss(pl.rows, c.n_rows, c.n_cols, c.nnz())
        });
        let (blocks, tile, plan, sq_sum) = match plan {
            Some(pl) => (pl.blocks.clone(), None, Some(pl), SqSum::Rows(ROWS)),
            None => {
                let tile = self.tile(layout.rank, c.n_rows, c.n_cols, c.nnz());
                (
                    row_blocks(m.n_users(), tile),
                    tile,
                    None,
                    SqSum::PerBlock(ROWS),
                )
            }
        };
        Ok(side_pass(
            self,
            layout,
            c,
            &th,
            &Pass::Loss,
            &blocks,
            None,
            None,
            false,
            None,
            tile,
            plan,
            sq_sum,
        )
        .0)
    }

    fn gradient(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        theta: &Vec<f32>,
        grad: &mut Vec<f32>,
    ) -> Result<f64> {
        Ok(self.two_sided(m, layout, theta, Mode::Grad, grad).0)
    }

    fn curvature_product(
        &self,
        m: &CpuMatrix,
        layout: &Layout,
        theta: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
        curvature: Curvature,
    ) -> Result<()> {
        let hessian = curvature == Curvature::Hessian;
        self.two_sided(m, layout, theta, Mode::Curv(v, hessian), out);
        Ok(())
    }

    fn evaluate(
        &self,
        entries: &CpuEntries,
        layout: &Layout,
        theta: &Vec<f32>,
        clip: (f32, f32),
    ) -> Result<EvalSums> {
        let th = view(layout, theta, Side::Users);
        let e = &entries.ratings;
        let n = e.nnz();
        let partials: Vec<[f64; 4]> = self.install(|| {
            // Tiled: the predictions in tile order first, then the sums in the given order.
            let preds: Option<(Vec<f32>, &[u32])> = entries.tiled.as_ref().map(|t| {
                let mut p = vec![0f32; n];
                p.par_chunks_mut(CHUNK)
                    .zip(t.users.par_chunks(CHUNK).zip(t.items.par_chunks(CHUNK)))
                    .for_each(|(p, (us, is))| self.predictions(layout, &th, us, is, p));
                (p, t.place.as_slice())
            });
            (0..n.div_ceil(CHUNK))
                .into_par_iter()
                .map(|blk| {
                    let ks = blk * CHUNK..((blk + 1) * CHUNK).min(n);
                    let mut own = [0f32; CHUNK];
                    if preds.is_none() {
                        let (us, is) = (&e.users[ks.clone()], &e.items[ks.clone()]);
                        self.predictions(layout, &th, us, is, &mut own[..ks.len()]);
                    }
                    let mut s = [0f64; 4];
                    for k in ks.clone() {
                        let pred = match &preds {
                            Some((p, place)) => p[place[k] as usize],
                            None => own[k - ks.start],
                        };
                        let err = (e.values[k] - pred) as f64;
                        let errc = (e.values[k] - pred.clamp(clip.0, clip.1)) as f64;
                        s[0] += err * err;
                        s[1] += err.abs();
                        s[2] += errc * errc;
                        s[3] += errc.abs();
                    }
                    s
                })
                .collect()
        });
        let mut out = EvalSums {
            count: n as u64,
            ..Default::default()
        };
        for s in partials {
            out.sse += s[0];
            out.sae += s[1];
            out.sse_clipped += s[2];
            out.sae_clipped += s[3];
        }
        Ok(out)
    }
}
