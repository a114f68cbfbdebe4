// grad.wgsl: Σe² and the gradient of ½Σe² as row reductions (docs/ALGORITHMS.md, "Gradient").
// One invocation per own row (a user of the CSR, or an item of the CSC), so every output row is
// written by one invocation, in column order: no atomics, deterministic.
//
// For own row r and its entries (c, r_rc): e = r_rc − r̂,
//   LF:  out_own[r] = Σ −e·other_c,      out_own_bias[r] = Σ −e
//   UDV: out_own[r] = d ⊙ Σ −e·other_c,  dscr[r] = own_r ⊙ Σ −e·other_c (FLAG_DBLOCK; summed over
//        rows by dblock.wgsl into the d gradient)
//
// A dispatch covers one tile: rows of one own row block × the columns of one other row block
// (ops.rs). The tiles over the same rows run in order; FLAG_FIRST zeroes the rows, later tiles
// add, and FLAG_LAST applies the UDV d scaling to the finished sums. When θ fits one binding there
// is one tile per row chunk, with both flags.
//
// Bindings (group 0):
//   0  uniform  Params  n = rows in this tile, start = its first row within the own block, f,
//                       flags, own/other/own_bias/other_bias = offsets in the bound blocks, a = μ,
//                       part
//   1  read     rowptr: array<u32>        n + 1 offsets into ent, rebased to this tile
//   2  read     ent: array<vec2<u32>>     (column within the other block, bitcast<u32>(rating)),
//                                         columns ascending
//   3  read     theta: array<f32>         own block of θ (model.wgsl)
//   8  read     theta_o: array<f32>       other block of θ (model.wgsl)
//   10 uniform  glob                      d of θ (model.wgsl)
//   5  rw       out: array<f32>           own block of the gradient (FLAG_WRITE)
//   6  rw       dscr: array<f32>          block rows × f scratch for the UDV d block
//   7  rw       partials: array<f32>      Σe² per workgroup at part + workgroup index
// Dispatch: min(ceil(n/256), 4096) workgroups of 256, grid-stride over rows.

@group(0) @binding(1) var<storage, read> rowptr: array<u32>;
@group(0) @binding(2) var<storage, read> ent: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> dscr: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

@compute @workgroup_size(256)
fn grad_rows(ids: Ids) {
    var sq = 0.0;
    let f = p.f;
    let write = has(FLAG_WRITE);
    let first = has(FLAG_FIRST);
    for (var r = ids.gid.x; r < p.n; r = r + ids.nwg.x * WG) {
        let row = p.start + r;
        let a = p.own + row * f;
        let ba = p.own_bias + row;
        if (write && first) {
            for (var k = 0u; k < f; k = k + 1u) {
                out[a + k] = 0.0;
            }
        }
        var bacc = 0.0;
        let end = rowptr[r + 1u];
        for (var t = rowptr[r]; t < end; t = t + 1u) {
            let en = ent[t];
            let b = p.other + en.x * f;
            let e = bitcast<f32>(en.y) - predict(a, b, ba, p.other_bias + en.x);
            sq = sq + e * e;
            if (write) {
                for (var k = 0u; k < f; k = k + 1u) {
                    out[a + k] = out[a + k] - e * theta_o[b + k];
                }
                bacc = bacc - e;
            }
        }
        if (write) {
            if (has(FLAG_UDV)) {
                if (has(FLAG_LAST)) {
                    for (var k = 0u; k < f; k = k + 1u) {
                        let acc = out[a + k];
                        out[a + k] = dval(k) * acc;
                        if (has(FLAG_DBLOCK)) {
                            dscr[row * f + k] = theta[a + k] * acc;
                        }
                    }
                }
            } else if (has(FLAG_BIASES)) {
                out[ba] = select(out[ba] + bacc, bacc, first);
            }
        }
    }
    let total = wg_reduce(sq, ids);
    if (ids.lid == 0u) {
        partials[p.part + ids.wid.x] = total;
    }
}
