// curv.wgsl: the curvature product G·v (Gauss–Newton, or the true Hessian with FLAG_HESSIAN) as
// row reductions (docs/ALGORITHMS.md, "Gauss–Newton curvature product"). One invocation per own row,
// columns in order: no atomics, deterministic. s = J·v is recomputed on each side instead of being
// stored, so no nnz-long vector exists.
//
// For own row r (θ-rows a, b; direction rows da, db) and each entry (c, r_rc):
//   LF:  s = da·b + a·db (+ dbias_r + dbias_c);  w = −e (Hessian) or 0
//        out_own[r] += s·b + w·db;  out_own_bias[r] += s
//   UDV: s = Σ_k d_k(da_k b_k + a_k db_k) + dd_k a_k b_k
//        out_own[r] += d ⊙ (s·b + w·db) + dd ⊙ (w·b)
//        dscr[r]    += a ⊙ (s·b + w·db) + da ⊙ (w·b)        (FLAG_DBLOCK)
// A dispatch covers one tile (see grad.wgsl); FLAG_FIRST zeroes the rows first.
//
// Bindings (group 0):
//   0  uniform  Params  as grad.wgsl
//   1  read     rowptr: array<u32>
//   2  read     ent: array<vec2<u32>>
//   3  read     theta: array<f32>     own block of θ      8  read  theta_o   other block of θ
//   4  read     dir: array<f32>       own block of v      9  read  dir_o     other block of v
//   10 uniform  glob                  d of θ and of v (model.wgsl)
//   5  rw       out: array<f32>       own block of G·v
//   6  rw       dscr: array<f32>      block rows × f scratch for the UDV d block
// Dispatch: min(ceil(n/256), 4096) workgroups of 256, grid-stride over rows.

@group(0) @binding(1) var<storage, read> rowptr: array<u32>;
@group(0) @binding(2) var<storage, read> ent: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> dir: array<f32>;
@group(0) @binding(9) var<storage, read> dir_o: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> dscr: array<f32>;

@compute @workgroup_size(256)
fn curv_rows(ids: Ids) {
    let f = p.f;
    let udv = has(FLAG_UDV);
    let hess = has(FLAG_HESSIAN);
    let dblock = has(FLAG_DBLOCK);
    let first = has(FLAG_FIRST);
    for (var r = ids.gid.x; r < p.n; r = r + ids.nwg.x * WG) {
        let row = p.start + r;
        let a = p.own + row * f;
        let ba = p.own_bias + row;
        if (first) {
            for (var k = 0u; k < f; k = k + 1u) {
                out[a + k] = 0.0;
                if (dblock) {
                    dscr[row * f + k] = 0.0;
                }
            }
        }
        var bacc = 0.0;
        let end = rowptr[r + 1u];
        for (var t = rowptr[r]; t < end; t = t + 1u) {
            let en = ent[t];
            let b = p.other + en.x * f;
            let bb = p.other_bias + en.x;
            var s = 0.0;
            if (udv) {
                for (var k = 0u; k < f; k = k + 1u) {
                    s = s + dval(k) * (dir[a + k] * theta_o[b + k] + theta[a + k] * dir_o[b + k])
                        + ddir(k) * theta[a + k] * theta_o[b + k];
                }
            } else {
                for (var k = 0u; k < f; k = k + 1u) {
                    s = s + dir[a + k] * theta_o[b + k] + theta[a + k] * dir_o[b + k];
                }
                if (has(FLAG_BIASES)) {
                    s = s + dir[ba] + dir_o[bb];
                }
            }
            var w = 0.0;
            if (hess) {
                w = predict(a, b, ba, bb) - bitcast<f32>(en.y);
            }
            if (udv) {
                for (var k = 0u; k < f; k = k + 1u) {
                    let t1 = s * theta_o[b + k] + w * dir_o[b + k];
                    let t2 = w * theta_o[b + k];
                    out[a + k] = out[a + k] + dval(k) * t1 + ddir(k) * t2;
                    if (dblock) {
                        dscr[row * f + k] = dscr[row * f + k] + theta[a + k] * t1 + dir[a + k] * t2;
                    }
                }
            } else {
                for (var k = 0u; k < f; k = k + 1u) {
                    out[a + k] = out[a + k] + s * theta_o[b + k] + w * dir_o[b + k];
                }
                bacc = bacc + s;
            }
        }
        if (!udv && has(FLAG_BIASES)) {
            out[ba] = select(out[ba] + bacc, bacc, first);
        }
    }
}
