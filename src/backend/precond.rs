//! Preconditioners of the curvature systems solved by CG (docs/ALGORITHMS.md, "Preconditioning"),
//! and the host maths both backends share: the per-row block layout, the shifted block
//! M_r = B_r + γI + c·B_r² with B_r = G_r + D_r, its Cholesky factor and the triangular solves.
//!
//! Blocks are stored packed, lower triangle by rows: entry (j, k), j ≥ k, at j(j+1)/2 + k. The
//! factorisation is right-looking in the same order as the WGSL kernel (`shaders/precond.wgsl`), so
//! every entry sees the same subtractions in the same order on both backends.

use crate::model::{Layout, ModelKind};
use serde::{Deserialize, Serialize};

/// Which preconditioner CG uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrecondKind {
    /// Plain CG.
    None,
    /// The diagonal of the curvature operator.
    Jacobi,
    /// Per user and per item, the dense block of the Gauss–Newton matrix over that row's factors
    /// (and bias), factored by Cholesky; the UDV d coordinates use their diagonal.
    #[default]
    BlockJacobi,
}

/// The shift applied to every block before it is factored: M = B + γI + c·B² with B = G + D.
/// `c` is SSLF's curvature-form weight ρ/‖g‖ (0 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Shift {
    pub gamma: f32,
    pub c: f32,
}

/// Most block width (factor coordinates, plus the bias) factored as one block; wider models use
/// the Jacobi preconditioner. The GPU kernel keeps a block and, for SSLF, its square in 3,584
/// floats of workgroup memory, which bounds it there.
pub fn max_block_width(sam: bool) -> usize {
    if sam {
        59
    } else {
        84
    }
}

/// Coordinates of one row's block: the factor row, then the bias (LF with biases).
pub fn block_width(layout: &Layout) -> usize {
    layout.rank + usize::from(layout.has_biases())
}

/// Floats of one packed block of width `w`.
pub fn packed_len(w: usize) -> usize {
    w * (w + 1) / 2
}

/// Index of (j, k), j ≥ k, in a packed block.
#[inline(always)]
pub fn packed_at(j: usize, k: usize) -> usize {
    j * (j + 1) / 2 + k
}

/// The scalar M = b + γ + c·b² of a diagonal entry with curvature `g` and ridge weight `d`.
#[inline]
pub fn shifted_diag(g: f32, d: f32, s: Shift) -> f32 {
    let b = g + d;
    b + s.gamma + s.c * b * b
}

/// Turns the packed Gram block `a` (G_r) into the Cholesky factor L of
/// M_r = B + γI + c·B², B = G_r + diag(`dreg`). `work` holds at least [`factor_work_len`] floats.
/// A pivot that is not positive (only possible through rounding, as M is positive definite) is
/// replaced by a small positive value, so the factor always exists.
#[inline(always)]
pub fn factor_block(a: &mut [f32], dreg: &[f32], s: Shift, work: &mut [f32]) {
    let w = dreg.len();
    for (j, &d) in dreg.iter().enumerate() {
        a[packed_at(j, j)] += d;
    }
    if s.c != 0.0 {
        // a ← B + c·B², each entry of B² summed over l in ascending order. B is laid out whole,
        // by rows padded to whole chunks, so that row j of B² is Σ_l B_jl · (row l of B): one
        // run of whole chunks per l (the lanes past the diagonal are scratch).
        let h = w.next_multiple_of(CHUNK);
        let (full, acc) = work[..w * h + h].split_at_mut(w * h);
        full.fill(0.0);
        for j in 0..w {
            for k in 0..=j {
                full[j * h + k] = a[packed_at(j, k)];
                full[k * h + j] = a[packed_at(j, k)];
            }
        }
        for j in 0..w {
            let n = (j + 1).next_multiple_of(CHUNK);
            let acc = &mut acc[..n];
            acc.fill(0.0);
            for l in 0..w {
                add_scaled_chunks(acc, full[j * h + l], &full[l * h..l * h + n]);
            }
            for k in 0..=j {
                a[packed_at(j, k)] += s.c * acc[k];
            }
        }
    }
    for j in 0..w {
        a[packed_at(j, j)] += s.gamma;
    }
    cholesky_packed(a, w, work);
}

/// Floats of scratch [`factor_block`] and [`cholesky_packed`] need for blocks of width `w`.
pub fn factor_work_len(w: usize) -> usize {
    (w + 1) * w.next_multiple_of(CHUNK)
}

/// Floats per chunk of the host's block updates: one 256-bit register.
pub(crate) const CHUNK: usize = 8;

/// y ← y + s·x over whole chunks (y and x of the same length, a multiple of [`CHUNK`]): each
/// entry gets the one product s·x, as an entry-by-entry loop adds it, with each chunk loaded,
/// updated and stored whole (one register's work).
#[inline(always)]
pub(crate) fn add_scaled_chunks(y: &mut [f32], s: f32, x: &[f32]) {
    let (ys, _) = y.as_chunks_mut::<CHUNK>();
    let (xs, _) = x.as_chunks::<CHUNK>();
    for (y, x) in ys.iter_mut().zip(xs) {
        let mut t = *y;
        for l in 0..CHUNK {
            t[l] += s * x[l];
        }
        *y = t;
    }
}

/// In-place right-looking Cholesky of a packed SPD block of width `w`, with `scratch` of at least
/// [`factor_work_len`] floats. Entry (j, i) gets −L_jk·L_ik for k = 0, 1, … in turn, as in the
/// WGSL kernel; the host works on the lower triangle by columns (each column padded to a whole
/// number of chunks), where an update is one contiguous run of whole chunks. The rows a chunk
/// covers above the diagonal or past `w` are scratch the factor never reads.
#[inline(always)]
pub fn cholesky_packed(a: &mut [f32], w: usize, scratch: &mut [f32]) {
    let floor = pivot_floor(a, w);
    let h = w.next_multiple_of(CHUNK);
    let s = &mut scratch[..w * h];
    s.fill(0.0);
    for j in 0..w {
        for k in 0..=j {
            s[k * h + j] = a[packed_at(j, k)];
        }
    }
    for k in 0..w {
        let (done, rest) = s.split_at_mut((k + 1) * h);
        let col_k = &mut done[k * h..];
        let piv = col_k[k];
        let lkk = if piv > floor {
            piv.sqrt()
        } else {
            floor.sqrt()
        };
        for x in &mut col_k[k + 1..] {
            *x /= lkk;
        }
        col_k[k] = lkk;
        for (n, col_i) in rest.chunks_exact_mut(h).enumerate() {
            let i = k + 1 + n;
            // y − L_ik·x, as y + (−L_ik)·x: negation is exact, so the same bits.
            let a0 = i / CHUNK * CHUNK;
            add_scaled_chunks(&mut col_i[a0..], -col_k[i], &col_k[a0..]);
        }
    }
    for j in 0..w {
        for k in 0..=j {
            a[packed_at(j, k)] = s[k * h + j];
        }
    }
}

/// The smallest pivot accepted: 1e-7 of the mean diagonal (and a tiny absolute floor).
pub fn pivot_floor(a: &[f32], w: usize) -> f32 {
    let mut tr = 0f32;
    for j in 0..w {
        tr += a[packed_at(j, j)];
    }
    (1e-7 * tr / w.max(1) as f32).max(1e-30)
}

/// z ← (L Lᵀ)⁻¹ r for a packed factor L of width w.
pub fn solve_packed(l: &[f32], r: &[f32], z: &mut [f32]) {
    let w = r.len();
    for j in 0..w {
        let mut s = r[j];
        for k in 0..j {
            s -= l[packed_at(j, k)] * z[k];
        }
        z[j] = s / l[packed_at(j, j)];
    }
    for j in (0..w).rev() {
        let mut s = z[j];
        for k in j + 1..w {
            s -= l[packed_at(k, j)] * z[k];
        }
        z[j] = s / l[packed_at(j, j)];
    }
}

/// [`solve_packed`] for `N` rows side by side: lane n of `r` and `z` (coordinate j at `r[j][n]`)
/// with the factor `l[n]`. Each lane gets exactly the operations of [`solve_packed`], in the same
/// order (so the same bits); the lanes' chains are independent, so they overlap in the pipeline
/// where one row's chain would wait on each subtraction.
#[inline(always)]
pub fn solve_packed_lanes<const N: usize>(l: [&[f32]; N], r: &[[f32; N]], z: &mut [[f32; N]]) {
    let w = r.len();
    let t = packed_len(w);
    let l: [&[f32]; N] = std::array::from_fn(|n| &l[n][..t]);
    for j in 0..w {
        let mut s = r[j];
        for (k, zk) in z[..j].iter().enumerate() {
            let at = packed_at(j, k);
            for n in 0..N {
                s[n] -= l[n][at] * zk[n];
            }
        }
        let at = packed_at(j, j);
        z[j] = std::array::from_fn(|n| s[n] / l[n][at]);
    }
    for j in (0..w).rev() {
        let mut s = z[j];
        for (k, zk) in z.iter().enumerate().skip(j + 1) {
            let at = packed_at(k, j);
            for n in 0..N {
                s[n] -= l[n][at] * zk[n];
            }
        }
        let at = packed_at(j, j);
        z[j] = std::array::from_fn(|n| s[n] / l[n][at]);
    }
}

/// The coordinates of θ that form own row `r`'s block on one side: factor row start, and the
/// bias coordinate (LF with biases).
pub fn row_coords(layout: &Layout, users: bool, r: usize) -> (usize, Option<usize>) {
    let f = layout.rank;
    let (fo, bo) = if users {
        (layout.p_off(), layout.b_off())
    } else {
        (layout.q_off(), layout.c_off())
    };
    (fo + r * f, layout.has_biases().then_some(bo + r))
}

/// True when the model has a d block (UDV), preconditioned by its diagonal.
pub fn has_d(layout: &Layout) -> bool {
    layout.kind == ModelKind::Udv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_cholesky_solves_a_spd_block() {
        // A = LLᵀ for a known L; the solve recovers x from Ax.
        let w = 4;
        let mut a = vec![0f32; packed_len(w)];
        let full = [
            [4.0f32, 1.0, 0.5, 0.2],
            [1.0, 3.0, 0.3, 0.1],
            [0.5, 0.3, 2.0, 0.4],
            [0.2, 0.1, 0.4, 1.5],
        ];
        for j in 0..w {
            for k in 0..=j {
                a[packed_at(j, k)] = full[j][k];
            }
        }
        cholesky_packed(&mut a, w, &mut vec![0.0; factor_work_len(w)]);
        let x = [1.0f32, -2.0, 0.5, 3.0];
        let b: Vec<f32> = (0..w)
            .map(|j| (0..w).map(|k| full[j][k] * x[k]).sum())
            .collect();
        let mut z = vec![0f32; w];
        solve_packed(&a, &b, &mut z);
        for j in 0..w {
            assert!((z[j] - x[j]).abs() < 1e-5, "{z:?}");
        }
    }

    /// The right-looking factorisation on the packed rows, as the WGSL kernel does it.
    fn cholesky_plain(a: &mut [f32], w: usize) {
        let floor = pivot_floor(a, w);
        for k in 0..w {
            let piv = a[packed_at(k, k)];
            let lkk = if piv > floor {
                piv.sqrt()
            } else {
                floor.sqrt()
            };
            a[packed_at(k, k)] = lkk;
            for j in k + 1..w {
                a[packed_at(j, k)] /= lkk;
            }
            for j in k + 1..w {
                let ljk = a[packed_at(j, k)];
                for i in k + 1..=j {
                    a[packed_at(j, i)] -= ljk * a[packed_at(i, k)];
                }
            }
        }
    }

    #[test]
    fn the_column_chunked_cholesky_gives_the_plain_factor_bit_for_bit() {
        use rand::prelude::*;
        let mut rng = StdRng::seed_from_u64(5);
        for w in [1, 2, 7, 8, 9, 16, 17, 33, 59, 84] {
            for rank in [1, w / 2 + 1, w + 3] {
                // G = XᵀX over `rank` random rows (singular when rank < w), plus a small ridge.
                let x: Vec<Vec<f32>> = (0..rank)
                    .map(|_| (0..w).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                    .collect();
                let mut a = vec![0f32; packed_len(w)];
                for j in 0..w {
                    for k in 0..=j {
                        for r in &x {
                            a[packed_at(j, k)] += r[j] * r[k];
                        }
                    }
                    a[packed_at(j, j)] += 1e-3;
                }
                let mut want = a.clone();
                cholesky_plain(&mut want, w);
                let mut scratch = vec![f32::NAN; factor_work_len(w)];
                cholesky_packed(&mut a, w, &mut scratch);
                let differ = a
                    .iter()
                    .zip(&want)
                    .filter(|(p, q)| p.to_bits() != q.to_bits());
                assert_eq!(differ.count(), 0, "w {w}, rank {rank}");
            }
        }
    }

    #[test]
    fn solving_rows_side_by_side_gives_each_rows_own_bits() {
        use rand::prelude::*;
        let mut rng = StdRng::seed_from_u64(8);
        for w in [1, 5, 33] {
            let t = packed_len(w);
            let mut blocks = vec![0f32; 8 * t];
            for b in blocks.chunks_mut(t) {
                for j in 0..w {
                    for k in 0..j {
                        b[packed_at(j, k)] = rng.random_range(-1.0f32..1.0);
                    }
                    b[packed_at(j, j)] = rng.random_range(0.5f32..2.0);
                }
            }
            let r: Vec<[f32; 8]> = (0..w)
                .map(|_| std::array::from_fn(|_| rng.random_range(-1.0f32..1.0)))
                .collect();
            let mut z = vec![[0f32; 8]; w];
            let l: [&[f32]; 8] = std::array::from_fn(|n| &blocks[n * t..(n + 1) * t]);
            solve_packed_lanes(l, &r, &mut z);
            for n in 0..8 {
                let rn: Vec<f32> = r.iter().map(|x| x[n]).collect();
                let mut want = vec![0f32; w];
                solve_packed(l[n], &rn, &mut want);
                for j in 0..w {
                    assert_eq!(z[j][n].to_bits(), want[j].to_bits(), "w {w}, lane {n}, {j}");
                }
            }
        }
    }

    #[test]
    fn the_chunked_sharpness_term_gives_the_plain_bits() {
        use rand::prelude::*;
        let mut rng = StdRng::seed_from_u64(6);
        for w in [1, 3, 8, 9, 33, 59] {
            let mut a = vec![0f32; packed_len(w)];
            for j in 0..w {
                for k in 0..j {
                    a[packed_at(j, k)] = rng.random_range(-0.3f32..0.3);
                }
                a[packed_at(j, j)] = rng.random_range(1.0f32..3.0);
            }
            let dreg: Vec<f32> = (0..w).map(|_| rng.random_range(0.0f32..0.5)).collect();
            let s = Shift {
                gamma: 0.25,
                c: 0.07,
            };
            // The plain form: B = A + diag(dreg); B + c·B² entry by entry, l ascending; + γI.
            let mut want = a.clone();
            for (j, &d) in dreg.iter().enumerate() {
                want[packed_at(j, j)] += d;
            }
            let b0 = want.clone();
            let b = |j: usize, k: usize| b0[packed_at(j.max(k), j.min(k))];
            for j in 0..w {
                for k in 0..=j {
                    let mut sq = 0f32;
                    for l in 0..w {
                        sq += b(j, l) * b(l, k);
                    }
                    want[packed_at(j, k)] += s.c * sq;
                }
                want[packed_at(j, j)] += s.gamma;
            }
            cholesky_plain(&mut want, w);
            let mut work = vec![f32::NAN; factor_work_len(w)];
            factor_block(&mut a, &dreg, s, &mut work);
            let differ = a
                .iter()
                .zip(&want)
                .filter(|(p, q)| p.to_bits() != q.to_bits());
            assert_eq!(differ.count(), 0, "w {w}");
        }
    }
}
