//! Sparse model kernels on the host, mirroring the WGSL kernels: each side of a pass is a row
//! reduction over the CSR (users) or the CSC (items). A row's sum runs in column order into f32
//! accumulators; global scalars (Σe², the d-block of UDV) add f64 partials per block of rows in
//! block order.

use super::vector::CHUNK;
use super::CpuBackend;
use crate::backend::{Curvature, EvalSums, SparseOps};
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

/// r̂ for one entry from its two factor rows (and biases).
#[inline]
fn predict(layout: &Layout, a: &[f32], b: &[f32], ba: f32, bb: f32, d: &[f32]) -> f32 {
    match layout.kind {
        ModelKind::Lf => {
            let mut s = 0f32;
            for k in 0..a.len() {
                s += a[k] * b[k];
            }
            if layout.biases {
                s + layout.mu + ba + bb
            } else {
                s
            }
        }
        ModelKind::Udv => {
            let mut s = 0f32;
            for k in 0..a.len() {
                s += a[k] * d[k] * b[k];
            }
            s
        }
    }
}

/// One f32 row per own row, plus an optional bias scalar; `dpart` accumulates the UDV d-block.
struct RowOut<'a> {
    row: &'a mut [f32],
    bias: Option<&'a mut f32>,
}

/// What a pass computes for each own row.
enum Pass<'a> {
    /// Σe² only.
    Loss,
    /// −e weights: the gradient.
    Grad,
    /// s = J v weights (and −e second-order terms for the Hessian).
    Curv { v: View<'a>, hessian: bool },
}

/// Runs a pass over one side. `out` has own-rows × f floats (plus own biases) or is absent for a
/// loss pass. Returns (Σe² over the side, d-block partial sum).
#[allow(clippy::too_many_arguments)]
fn side_pass(
    be: &CpuBackend,
    layout: &Layout,
    csr: &Compressed,
    th: &View,
    pass: &Pass,
    out_rows: Option<&mut [f32]>,
    out_bias: Option<&mut [f32]>,
    with_d: bool,
) -> (f64, Vec<f64>) {
    let f = layout.rank;
    let n_rows = csr.n_rows;
    let n_blocks = n_rows.div_ceil(ROWS);
    let dlen = if with_d { f } else { 0 };
    let mut row_chunks: Vec<Option<&mut [f32]>> = match out_rows {
        Some(o) => o.chunks_mut(ROWS * f).map(Some).collect(),
        None => (0..n_blocks).map(|_| None).collect(),
    };
    let mut bias_chunks: Vec<Option<&mut [f32]>> = match out_bias {
        Some(o) => o.chunks_mut(ROWS).map(Some).collect(),
        None => (0..n_blocks).map(|_| None).collect(),
    };
    row_chunks.resize_with(n_blocks, || None);
    bias_chunks.resize_with(n_blocks, || None);
    let partials: Vec<(f64, Vec<f64>)> = be.install(|| {
        row_chunks
            .into_par_iter()
            .zip(bias_chunks.into_par_iter())
            .enumerate()
            .map(|(blk, (mut rows, mut biases))| {
                let mut sq = 0f64;
                let mut dpart = vec![0f64; dlen];
                let mut acc = vec![0f32; f]; // Σ w·other (or Σ s·other)
                let mut acc2 = vec![0f32; f]; // Hessian: Σ w·d_other
                let mut acc3 = vec![0f32; f]; // Hessian: Σ w·other
                for j in 0..ROWS.min(n_rows - blk * ROWS) {
                    let r = blk * ROWS + j;
                    let a = &th.own[r * f..(r + 1) * f];
                    let ba = th.own_bias.get(r).copied().unwrap_or(0.0);
                    acc.fill(0.0);
                    acc2.fill(0.0);
                    acc3.fill(0.0);
                    let mut bias_acc = 0f32;
                    for k in csr.row_range(r) {
                        let c = csr.index[k] as usize;
                        let b = &th.other[c * f..(c + 1) * f];
                        let bb = th.other_bias.get(c).copied().unwrap_or(0.0);
                        let e = csr.values[k] - predict(layout, a, b, ba, bb, th.d);
                        match pass {
                            Pass::Loss => sq += (e as f64) * (e as f64),
                            Pass::Grad => {
                                sq += (e as f64) * (e as f64);
                                for t in 0..f {
                                    acc[t] -= e * b[t];
                                }
                                bias_acc -= e;
                            }
                            Pass::Curv { v, hessian } => {
                                let da = &v.own[r * f..(r + 1) * f];
                                let db = &v.other[c * f..(c + 1) * f];
                                let s = match layout.kind {
                                    ModelKind::Lf => {
                                        let mut s = 0f32;
                                        for t in 0..f {
                                            s += da[t] * b[t] + a[t] * db[t];
                                        }
                                        if layout.biases {
                                            s += v.own_bias[r] + v.other_bias[c];
                                        }
                                        s
                                    }
                                    ModelKind::Udv => {
                                        let mut s = 0f32;
                                        for t in 0..f {
                                            s += th.d[t] * (da[t] * b[t] + a[t] * db[t])
                                                + v.d[t] * a[t] * b[t];
                                        }
                                        s
                                    }
                                };
                                for t in 0..f {
                                    acc[t] += s * b[t];
                                }
                                bias_acc += s;
                                if *hessian {
                                    let w = -e;
                                    for t in 0..f {
                                        acc2[t] += w * db[t];
                                        acc3[t] += w * b[t];
                                    }
                                }
                            }
                        }
                    }
                    let Some(rows) = rows.as_deref_mut() else {
                        continue;
                    };
                    let out = RowOut {
                        row: &mut rows[j * f..(j + 1) * f],
                        bias: biases.as_deref_mut().map(|b| &mut b[j]),
                    };
                    let hess = matches!(pass, Pass::Curv { hessian: true, .. });
                    match layout.kind {
                        ModelKind::Lf => {
                            for t in 0..f {
                                out.row[t] = acc[t] + if hess { acc2[t] } else { 0.0 };
                            }
                            if let Some(bo) = out.bias {
                                *bo = bias_acc;
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
                                out.row[t] = o;
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
                (sq, dpart)
            })
            .collect()
    });
    let mut sq = 0f64;
    let mut d = vec![0f64; dlen];
    for (s, dp) in partials {
        sq += s;
        for t in 0..dlen {
            d[t] += dp[t];
        }
    }
    (sq, d)
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
    if layout.has_biases() {
        let (b, c) = rest.split_at_mut(layout.n_users);
        OutBlocks {
            p,
            q,
            b: Some(b),
            c: Some(c),
            d: None,
        }
    } else if layout.kind == ModelKind::Udv {
        OutBlocks {
            p,
            q,
            b: None,
            c: None,
            d: Some(rest),
        }
    } else {
        OutBlocks {
            p,
            q,
            b: None,
            c: None,
            d: None,
        }
    }
}

impl CpuBackend {
    fn two_sided<'v>(
        &self,
        m: &Matrix,
        layout: &Layout,
        theta: &[f32],
        pass: impl Fn(Side) -> Pass<'v>,
        out: &mut [f32],
    ) -> f64 {
        let o = out_blocks(layout, out);
        let (sq, dsum) = side_pass(
            self,
            layout,
            &m.by_user,
            &view(layout, theta, Side::Users),
            &pass(Side::Users),
            Some(o.p),
            o.b,
            layout.kind == ModelKind::Udv,
        );
        side_pass(
            self,
            layout,
            &m.by_item,
            &view(layout, theta, Side::Items),
            &pass(Side::Items),
            Some(o.q),
            o.c,
            false,
        );
        if let Some(d) = o.d {
            for t in 0..layout.rank {
                d[t] = dsum[t] as f32;
            }
        }
        sq
    }
}

impl SparseOps for CpuBackend {
    type Matrix = Matrix;
    type Entries = Ratings;

    fn upload_matrix(&self, m: &Matrix) -> Result<Matrix> {
        Ok(m.clone())
    }
    fn upload_entries(&self, r: &Ratings) -> Result<Ratings> {
        Ok(r.clone())
    }

    fn sq_error(&self, m: &Matrix, layout: &Layout, theta: &Vec<f32>) -> Result<f64> {
        let th = view(layout, theta, Side::Users);
        Ok(side_pass(
            self,
            layout,
            &m.by_user,
            &th,
            &Pass::Loss,
            None,
            None,
            false,
        )
        .0)
    }

    fn gradient(
        &self,
        m: &Matrix,
        layout: &Layout,
        theta: &Vec<f32>,
        grad: &mut Vec<f32>,
    ) -> Result<f64> {
        Ok(self.two_sided(m, layout, theta, |_| Pass::Grad, grad))
    }

    fn curvature_product(
        &self,
        m: &Matrix,
        layout: &Layout,
        theta: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
        curvature: Curvature,
    ) -> Result<()> {
        let hessian = curvature == Curvature::Hessian;
        self.two_sided(
            m,
            layout,
            theta,
            |side| Pass::Curv {
                v: view(layout, v, side),
                hessian,
            },
            out,
        );
        Ok(())
    }

    fn evaluate(
        &self,
        e: &Ratings,
        layout: &Layout,
        theta: &Vec<f32>,
        clip: (f32, f32),
    ) -> Result<EvalSums> {
        let th = view(layout, theta, Side::Users);
        let f = layout.rank;
        let n = e.nnz();
        let partials: Vec<[f64; 4]> = self.install(|| {
            (0..n.div_ceil(CHUNK))
                .into_par_iter()
                .map(|blk| {
                    let mut s = [0f64; 4];
                    for k in blk * CHUNK..((blk + 1) * CHUNK).min(n) {
                        let (u, i) = (e.users[k] as usize, e.items[k] as usize);
                        let pred = predict(
                            layout,
                            &th.own[u * f..(u + 1) * f],
                            &th.other[i * f..(i + 1) * f],
                            th.own_bias.get(u).copied().unwrap_or(0.0),
                            th.other_bias.get(i).copied().unwrap_or(0.0),
                            th.d,
                        );
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
