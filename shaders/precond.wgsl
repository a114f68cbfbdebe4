// precond.wgsl: the CG preconditioners (docs/ALGORITHMS.md, "Preconditioning"), mirroring
// src/backend/cpu/precond.rs and src/backend/precond.rs.
//
// block_jacobi: per own row r (a user of the CSR, an item of the CSC) the packed lower triangle of
//   S_r = Σ_c x_c x_cᵀ, x_c = [other_c; 1] (LF with biases) or other_c (LF, UDV), width w;
//   then M_r = B + γI + c·B² with B = diag(s)·S_r·diag(s) + D_r (s = d for UDV, else 1),
//   factored in place by a right-looking Cholesky (entry (j,k), j ≥ k, at j(j+1)/2 + k).
// jacobi: the diagonal of the same M, stored as 1/M in a θ-shaped vector.
// UDV, user side: dscr[row·f + k] = U_uk² S_kk, summed over users by dblock.wgsl into the d
//   diagonal Σ (U_uk V_ik)².
//
// Entry points:
//   pc_gram   (per tile) one workgroup per row; invocations over the packed entries; accumulates
//             S into `blocks` (FLAG_FIRST initialises). Params: n rows, start = first row within
//             the own block, part = index of that row in the tile's rowptr, d_off = its index in
//             the bound chunk of blocks, f, flags.
//   pc_factor (per chunk, after every tile) one workgroup per row: scales, adds D (binding 4,
//             own block of the ridge vector), the SAM square (p.c) and γ (p.b), and factors in
//             workgroup memory (3,584 floats: w ≤ 84, or ≤ 59 with the square). Params: n rows,
//             start = first row within the own block, d_off = its index in the chunk, f, flags
//             (FLAG_DBLOCK: write dscr), own/own_bias = offsets in the own block.
//   pc_diag   (per tile) one invocation per row: the diagonal of S, into `out` (own block of the
//             θ-shaped inverse); FLAG_LAST turns it into 1/M (and writes dscr with FLAG_DBLOCK).
//   pc_apply  (per chunk) one invocation per row: z_r ← M_r⁻¹ r_r by two triangular solves.
//             binding 4 = own block of r, 5 = own block of z, 7 = the chunk of factors.
//   pc_dinv   one invocation per k < f: out[d_off + k] ← 1 / (b + γ + c b²), b = out[d_off + k]
//             + reg (binding 4) at start + k. Turns the summed d diagonal into its inverse.
//   pc_dapply one invocation per k < f: z[d_off+k] ← r[d_off+k] · inv[k] (inv at binding 7).
//
// Bindings (group 0): 0 Params; 1 rowptr, 2 ent (as grad.wgsl); 3 theta, 8 theta_o, 10 glob
// (model.wgsl); 4 aux (read: r or the ridge vector); 5 out (rw: z, or the θ-shaped inverse);
// 6 dscr (rw); 7 blocks (rw).
// Determinism: every output is written by one invocation, sums run in entry order; no atomics.

@group(0) @binding(1) var<storage, read> rowptr: array<u32>;
@group(0) @binding(2) var<storage, read> ent: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> aux: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> dscr: array<f32>;
@group(0) @binding(7) var<storage, read_write> blocks: array<f32>;

const BLK: u32 = 3584u;
var<workgroup> blk: array<f32, BLK>;
var<workgroup> wg_scalar: f32;

fn width() -> u32 {
    return select(p.f, p.f + 1u, has(FLAG_BIASES) && !has(FLAG_UDV));
}

fn tri(j: u32, k: u32) -> u32 {
    return j * (j + 1u) / 2u + k;
}

// (j, k) of packed index q.
fn untri(q: u32) -> vec2<u32> {
    var j = u32((sqrt(f32(8u * q + 1u)) - 1.0) * 0.5);
    if (tri(j + 1u, 0u) <= q) {
        j = j + 1u;
    }
    if (tri(j, 0u) > q) {
        j = j - 1u;
    }
    return vec2<u32>(j, q - tri(j, 0u));
}

// Coordinate k of x_c for other row at offset b (bias slot k = f is 1).
fn xval(b: u32, k: u32) -> f32 {
    if (k == p.f) {
        return 1.0;
    }
    return theta_o[b + k];
}

@compute @workgroup_size(256)
fn pc_gram(ids: Ids) {
    let w = width();
    let t_len = w * (w + 1u) / 2u;
    let first = has(FLAG_FIRST);
    for (var r = ids.wid.x; r < p.n; r = r + ids.nwg.x) {
        let tr = p.part + r;
        let dst = (p.d_off + r) * t_len;
        let beg = rowptr[tr];
        let end = rowptr[tr + 1u];
        for (var q = ids.lid; q < t_len; q = q + WG) {
            let jk = untri(q);
            var s = 0.0;
            for (var t = beg; t < end; t = t + 1u) {
                let b = p.other + ent[t].x * p.f;
                s = s + xval(b, jk.x) * xval(b, jk.y);
            }
            let at = dst + q;
            blocks[at] = select(blocks[at] + s, s, first);
        }
    }
}

@compute @workgroup_size(256)
fn pc_factor(ids: Ids) {
    let w = width();
    let f = p.f;
    let t_len = w * (w + 1u) / 2u;
    let udv = has(FLAG_UDV);
    let sam = p.c != 0.0;
    for (var r = ids.wid.x; r < p.n; r = r + ids.nwg.x) {
        let row = p.start + r;
        let src = (p.d_off + r) * t_len;
        let a = p.own + row * f;
        // Load S, scaled by d for UDV; the d diagonal's per-user part first.
        for (var t = ids.lid; t < t_len; t = t + WG) {
            blk[t] = blocks[src + t];
        }
        workgroupBarrier();
        if (has(FLAG_DBLOCK)) {
            for (var k = ids.lid; k < f; k = k + WG) {
                let u = theta[a + k];
                dscr[row * f + k] = u * u * blk[tri(k, k)];
            }
        }
        workgroupBarrier();
        for (var j = 0u; j < w; j = j + 1u) {
            for (var k = ids.lid; k <= j; k = k + WG) {
                var x = blk[tri(j, k)];
                if (udv) {
                    x = x * dval(j) * dval(k);
                }
                if (j == k) {
                    if (j < f) {
                        x = x + aux[a + j];
                    } else {
                        x = x + aux[p.own_bias + row];
                    }
                }
                blk[tri(j, k)] = x;
            }
        }
        workgroupBarrier();
        if (sam) {
            // B + c·B² into the upper half of the scratch, then back.
            for (var j = 0u; j < w; j = j + 1u) {
                for (var k = ids.lid; k <= j; k = k + WG) {
                    var sq = 0.0;
                    for (var l = 0u; l < w; l = l + 1u) {
                        let bjl = blk[select(tri(l, j), tri(j, l), j >= l)];
                        let blk_ = blk[select(tri(k, l), tri(l, k), l >= k)];
                        sq = sq + bjl * blk_;
                    }
                    blk[t_len + tri(j, k)] = blk[tri(j, k)] + p.c * sq;
                }
            }
            workgroupBarrier();
            for (var t = ids.lid; t < t_len; t = t + WG) {
                blk[t] = blk[t_len + t];
            }
            workgroupBarrier();
        }
        for (var j = ids.lid; j < w; j = j + WG) {
            blk[tri(j, j)] = blk[tri(j, j)] + p.b;
        }
        workgroupBarrier();
        if (ids.lid == 0u) {
            var tr = 0.0;
            for (var j = 0u; j < w; j = j + 1u) {
                tr = tr + blk[tri(j, j)];
            }
            wg_scalar = max(1e-7 * tr / f32(max(w, 1u)), 1e-30);
        }
        workgroupBarrier();
        let floor_ = wg_scalar;
        for (var k = 0u; k < w; k = k + 1u) {
            if (ids.lid == 0u) {
                let piv = blk[tri(k, k)];
                blk[tri(k, k)] = sqrt(select(floor_, piv, piv > floor_));
            }
            workgroupBarrier();
            let lkk = blk[tri(k, k)];
            for (var j = k + 1u + ids.lid; j < w; j = j + WG) {
                blk[tri(j, k)] = blk[tri(j, k)] / lkk;
            }
            workgroupBarrier();
            for (var j = k + 1u; j < w; j = j + 1u) {
                let i = k + 1u + ids.lid;
                if (i <= j) {
                    blk[tri(j, i)] = blk[tri(j, i)] - blk[tri(j, k)] * blk[tri(i, k)];
                }
            }
            workgroupBarrier();
        }
        for (var t = ids.lid; t < t_len; t = t + WG) {
            blocks[src + t] = blk[t];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn pc_diag(ids: Ids) {
    let f = p.f;
    let w = width();
    let first = has(FLAG_FIRST);
    for (var r = ids.gid.x; r < p.n; r = r + ids.nwg.x * WG) {
        let row = p.start + r;
        let a = p.own + row * f;
        let ba = p.own_bias + row;
        let beg = rowptr[r];
        let end = rowptr[r + 1u];
        for (var k = 0u; k < w; k = k + 1u) {
            var s = 0.0;
            for (var t = beg; t < end; t = t + 1u) {
                let x = xval(p.other + ent[t].x * f, k);
                s = s + x * x;
            }
            let at = select(ba, a + k, k < f);
            out[at] = select(out[at] + s, s, first);
        }
        if (has(FLAG_LAST)) {
            for (var k = 0u; k < w; k = k + 1u) {
                let at = select(ba, a + k, k < f);
                var g = out[at];
                if (has(FLAG_DBLOCK)) {
                    let u = theta[a + k];
                    dscr[row * f + k] = u * u * g;
                }
                if (has(FLAG_UDV)) {
                    g = g * dval(k) * dval(k);
                }
                let b = g + aux[at];
                out[at] = 1.0 / (b + p.b + p.c * b * b);
            }
        }
    }
}

@compute @workgroup_size(256)
fn pc_apply(ids: Ids) {
    let f = p.f;
    let w = width();
    let t_len = w * (w + 1u) / 2u;
    for (var r = ids.gid.x; r < p.n; r = r + ids.nwg.x * WG) {
        let row = p.start + r;
        let a = p.own + row * f;
        let ba = p.own_bias + row;
        let l = (p.d_off + r) * t_len;
        // Forward: L y = r, y kept in z.
        for (var j = 0u; j < w; j = j + 1u) {
            let at = select(ba, a + j, j < f);
            var s = aux[at];
            for (var k = 0u; k < j; k = k + 1u) {
                s = s - blocks[l + tri(j, k)] * out[select(ba, a + k, k < f)];
            }
            out[at] = s / blocks[l + tri(j, j)];
        }
        // Backward: Lᵀ z = y.
        for (var jj = 0u; jj < w; jj = jj + 1u) {
            let j = w - 1u - jj;
            let at = select(ba, a + j, j < f);
            var s = out[at];
            for (var k = j + 1u; k < w; k = k + 1u) {
                s = s - blocks[l + tri(k, j)] * out[select(ba, a + k, k < f)];
            }
            out[at] = s / blocks[l + tri(j, j)];
        }
    }
}

@compute @workgroup_size(256)
fn pc_dinv(ids: Ids) {
    let k = ids.gid.x;
    if (k < p.f) {
        let b = out[p.d_off + k] + aux[p.start + k];
        out[p.d_off + k] = 1.0 / (b + p.b + p.c * b * b);
    }
}

@compute @workgroup_size(256)
fn pc_dapply(ids: Ids) {
    let k = ids.gid.x;
    if (k < p.f) {
        out[p.d_off + k] = aux[p.d_off + k] * blocks[k];
    }
}
