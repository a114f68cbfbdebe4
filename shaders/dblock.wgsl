// dblock.wgsl: the d block of the UDV^T gradient and curvature product, a global reduction of size
// f (docs/docs/ALGORITHMS.md: g_d = Σ_K −e (U_u ⊙ V_i)). The user-side row pass leaves one f-vector per user
// of the current row block in dscr; this kernel sums them per column. With several user blocks it
// runs once per block, in block order: FLAG_FIRST writes, later blocks add.
//
// Bindings (group 0):
//   0 uniform  Params  n = rows of dscr, f, d_off = where d sits in out, flags
//   5 rw       out: array<f32>    out[d_off + k] (+)= Σ_rows dscr[row·f + k]
//   6 rw       dscr: array<f32>   rows × f
// Dispatch: f workgroups of 256 (f ≤ 1024); workgroup k strides over rows, then wg_reduce.
// Determinism: fixed stride and tree order; no atomics.

@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> dscr: array<f32>;

@compute @workgroup_size(256)
fn d_colsum(ids: Ids) {
    let k = ids.wid.x;
    var s = 0.0;
    for (var r = ids.lid; r < p.n; r = r + WG) {
        s = s + dscr[r * p.f + k];
    }
    let total = wg_reduce(s, ids);
    if (ids.lid == 0u) {
        out[p.d_off + k] = select(out[p.d_off + k] + total, total, has(FLAG_FIRST));
    }
}
