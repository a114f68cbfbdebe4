//! Does 2D tiling pay for the CPU Gauss–Newton product at HDI densities? A probe for issue 11,
//! measured before the tiled plan is built into the backend.
//!
//! One kernel, three entry orders, same arithmetic (LF, no biases): for each entry (u, i),
//! s = dp_u·q_i + p_u·dq_i; out_p[u] += s·q_i; out_q[i] += s·p_u (each worker adds the item side
//! into its own buffer, summed afterwards in worker order, as the fused pass does). Orders:
//! `csr` (user by user, items ascending: today's fused pass), and `tiled U×I` (tiles of U users ×
//! I items; a worker walks its user blocks, and in each the item blocks in order), and
//! `U users, item-major` (blocks of U users, each walked item by item, an item's entries in user
//! order: every sum still sees its terms in the untiled order). sslf's own
//! fused product (`CpuBackend::curvature_product`) is timed beside them. Every order runs twice:
//! with the plain kernel, and with sslf's side-by-side [q | dq] table and prefetching.
//!
//! `cargo bench --bench tiling_probe -- [USERS ITEMS NNZ ITEM_EXPONENT]` (default 1000000 20000
//! 20000000 0.5); rank 32, 2 workers, 5 repeats after 1 warm-up; prints min / median / max ms.
//! The block preconditioner's build is timed last; `PROBE_SSLF_ONLY=1` times only sslf's own.

use rayon::prelude::*;
use sslf::backend::cpu::CpuBackend;
use sslf::backend::{Curvature, PrecondKind, Shift, SparseOps, VectorOps};
use sslf::data::synth::{generate, SynthConfig};
use sslf::data::Matrix;
use sslf::model::ModelConfig;
use std::time::Instant;

const F: usize = 32;
const WORKERS: usize = 2;

/// Entries in the order a worker walks them: (user, item), one list per worker. A tile of U × 0
/// is a block of U users walked item by item (each item's entries in user order).
fn orders(m: &Matrix, tile: Option<(usize, usize)>) -> Vec<Vec<(u32, u32)>> {
    let c = &m.by_user;
    let per = c.n_rows.div_ceil(WORKERS);
    (0..WORKERS)
        .map(|w| {
            let rows = w * per..((w + 1) * per).min(c.n_rows);
            let mut out = Vec::new();
            match tile {
                None => {
                    for r in rows {
                        for k in c.ptr[r] as usize..c.ptr[r + 1] as usize {
                            out.push((r as u32, c.index[k]));
                        }
                    }
                }
                Some((tu, 0)) => {
                    let mut r0 = rows.start;
                    while r0 < rows.end {
                        let r1 = (r0 + tu).min(rows.end);
                        let from = out.len();
                        for r in r0..r1 {
                            for k in c.ptr[r] as usize..c.ptr[r + 1] as usize {
                                out.push((r as u32, c.index[k]));
                            }
                        }
                        out[from..].sort_unstable_by_key(|&(u, i)| (i, u));
                        r0 = r1;
                    }
                }
                Some((tu, ti)) => {
                    let mut r0 = rows.start;
                    while r0 < rows.end {
                        let r1 = (r0 + tu).min(rows.end);
                        // Each row's entries are sorted by item: walk item blocks with cursors.
                        let mut cur: Vec<usize> = (r0..r1).map(|r| c.ptr[r] as usize).collect();
                        let mut i0 = 0;
                        while i0 < c.n_cols {
                            let i1 = (i0 + ti) as u32;
                            for (j, r) in (r0..r1).enumerate() {
                                let end = c.ptr[r + 1] as usize;
                                while cur[j] < end && c.index[cur[j]] < i1 {
                                    out.push((r as u32, c.index[cur[j]]));
                                    cur[j] += 1;
                                }
                            }
                            i0 += ti;
                        }
                        r0 = r1;
                    }
                }
            }
            out
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    acc.iter().sum()
}

/// Hints the cache lines of `x[start..start + len]` into L1 (x86_64 only).
#[inline(always)]
fn prefetch(x: &[f32], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if start + len <= x.len() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = x[start..].as_ptr() as *const i8;
        for off in (0..len * 4).step_by(64) {
            // SAFETY: a prefetch reads nothing and cannot fault; the address lies in `x`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, start, len);
}

/// The product in the order given. `fast` adds sslf's two devices: q_i and dq_i side by side in
/// one table built per product, and the item rows of the entry 8 ahead prefetched.
#[allow(clippy::too_many_arguments)]
fn product(
    pool: &rayon::ThreadPool,
    order: &[Vec<(u32, u32)>],
    fast: bool,
    p: &[f32],
    q: &[f32],
    dp: &[f32],
    dq: &[f32],
    out_p: &mut [f32],
    out_q: &mut [f32],
) {
    let n_items = q.len() / F;
    let mut pair = Vec::new();
    if fast {
        pair = vec![0f32; n_items * 2 * F];
        pool.install(|| {
            pair.par_chunks_mut(2 * F).enumerate().for_each(|(i, row)| {
                row[..F].copy_from_slice(&q[i * F..i * F + F]);
                row[F..].copy_from_slice(&dq[i * F..i * F + F]);
            })
        });
    }
    let per = (out_p.len() / F).div_ceil(WORKERS) * F;
    let parts: Vec<Vec<f32>> = pool.install(|| {
        out_p
            .par_chunks_mut(per)
            .zip(order.par_iter())
            .enumerate()
            .map(|(w, (op, entries))| {
                op.fill(0.0);
                let base = w * per / F;
                let mut acc = vec![0f32; n_items * F];
                for (k, &(u, i)) in entries.iter().enumerate() {
                    if fast {
                        if let Some(&(_, ia)) = entries.get(k + 8) {
                            prefetch(&pair, ia as usize * 2 * F, 2 * F);
                            prefetch(&acc, ia as usize * F, F);
                        }
                    }
                    let (u, i) = (u as usize, i as usize);
                    let (qi, dqi) = if fast {
                        pair[i * 2 * F..i * 2 * F + 2 * F].split_at(F)
                    } else {
                        (&q[i * F..i * F + F], &dq[i * F..i * F + F])
                    };
                    let pu = &p[u * F..u * F + F];
                    let s = dot(&dp[u * F..u * F + F], qi) + dot(pu, dqi);
                    let o = &mut op[(u - base) * F..(u - base) * F + F];
                    for t in 0..F {
                        o[t] += s * qi[t];
                    }
                    let a = &mut acc[i * F..i * F + F];
                    for t in 0..F {
                        a[t] += s * pu[t];
                    }
                }
                acc
            })
            .collect()
    });
    out_q.fill(0.0);
    for part in parts {
        for (o, x) in out_q.iter_mut().zip(part) {
            *o += x;
        }
    }
}

fn time(mut f: impl FnMut()) -> (f64, f64, f64) {
    f();
    let mut ms: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[0], ms[2], ms[4])
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num = |k: usize, d: f64| args.get(k).and_then(|s| s.parse().ok()).unwrap_or(d);
    let cfg = SynthConfig {
        n_users: num(0, 1e6) as usize,
        n_items: num(1, 2e4) as usize,
        nnz: num(2, 2e7) as usize,
        item_exponent: num(3, 0.5),
        rank: 10,
        ..SynthConfig::default()
    };
    let ds = generate(&cfg);
    let (m, n) = (ds.users.len(), ds.items.len());
    let mat = Matrix::from_ratings(&ds.ratings, m, n);
    println!(
        "{m} users × {n} items, {} entries, rank {F}, item exponent {}, {WORKERS} workers",
        mat.nnz(),
        cfg.item_exponent
    );
    let rnd = |len: usize, seed: u64| -> Vec<f32> {
        (0..len)
            .map(|k| {
                (((k as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32) / 1.7e7 - 0.5
            })
            .collect()
    };
    let (p, q, dp, dq) = (rnd(m * F, 1), rnd(n * F, 2), rnd(m * F, 3), rnd(n * F, 4));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .unwrap();
    let (mut op, mut oq) = (vec![0f32; m * F], vec![0f32; n * F]);
    let mut reference: Option<(Vec<f32>, Vec<f32>)> = None;
    let shapes: &[Option<(usize, usize)>] = if std::env::var_os("PROBE_SSLF_ONLY").is_some() {
        &[]
    } else {
        &[
            None,
            Some((1024, 1024)),
            Some((2048, 2048)),
            Some((2048, 4096)),
            Some((4096, 2048)),
            Some((4096, 4096)),
            Some((8192, 2048)),
            Some((16384, 4096)),
            Some((65536, 8192)),
            Some((1024, 0)),
            Some((4096, 0)),
            Some((16384, 0)),
        ]
    };
    for &tile in shapes {
        let ord = orders(&mat, tile);
        let (lo, med, hi) =
            time(|| product(&pool, &ord, false, &p, &q, &dp, &dq, &mut op, &mut oq));
        let (flo, fmed, fhi) =
            time(|| product(&pool, &ord, true, &p, &q, &dp, &dq, &mut op, &mut oq));
        // The same sums in another order: equal up to rounding.
        match &reference {
            None => reference = Some((op.clone(), oq.clone())),
            Some((rp, rq)) => {
                let err = |a: &[f32], b: &[f32]| {
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, f32::max)
                };
                assert!(
                    err(&op, rp) < 1e-2 && err(&oq, rq) < 1e-1,
                    "orders disagree"
                );
            }
        }
        let name = match tile {
            None => "csr (untiled)".to_string(),
            Some((u, 0)) => format!("{u} users, item-major"),
            Some((u, i)) => format!("tiled {u} × {i}"),
        };
        println!("{name:<22} {lo:>9.1} {med:>9.1} {hi:>9.1} ms   + table, prefetch: {flo:>9.1} {fmed:>9.1} {fhi:>9.1} ms");
    }
    let be = CpuBackend::new(WORKERS).unwrap();
    let model = ModelConfig {
        rank: F,
        biases: false,
        ..ModelConfig::default()
    };
    let layout = model.layout(m, n, 0.0);
    let dm = be.upload_matrix(&mat, &layout).unwrap();
    let th = be.upload(&[p.clone(), q.clone()].concat()).unwrap();
    let v = be.upload(&[dp.clone(), dq.clone()].concat()).unwrap();
    let mut out = be.zeros(layout.len()).unwrap();
    let (lo, med, hi) = time(|| {
        be.curvature_product(&dm, &layout, &th, &v, &mut out, Curvature::GaussNewton)
            .unwrap()
    });
    println!(
        "{:<22} {lo:>9.1} {med:>9.1} {hi:>9.1} ms",
        "sslf fused product"
    );
    // Preconditioner builds, for scale beside the product: the block one (untiled: per entry
    // it adds a w × w outer product of one gathered row into that row's own packed block), and
    // the diagonal (Jacobi) one (per entry only w products, on the gradient's plan).
    let reg = be.zeros(layout.len()).unwrap();
    let shift = Shift { gamma: 1.0, c: 0.0 };
    let build = |kind: PrecondKind, name: &str| {
        let mut pc = be.precond_new(&dm, &layout, kind, false).unwrap();
        let (lo, med, hi) = time(|| {
            be.precond_build(&dm, &layout, &th, &reg, shift, &mut pc)
                .unwrap()
        });
        println!("{name:<22} {lo:>9.1} {med:>9.1} {hi:>9.1} ms");
        pc
    };
    let pc = build(PrecondKind::BlockJacobi, "sslf block-Jacobi build");
    // Its apply (the two triangular solves per row), once per CG iteration.
    let (lo, med, hi) = time(|| be.precond_apply(&pc, &layout, &v, &mut out).unwrap());
    println!(
        "{:<22} {lo:>9.1} {med:>9.1} {hi:>9.1} ms",
        "sslf block-Jacobi apply"
    );
    build(PrecondKind::Jacobi, "sslf Jacobi build");
}
