// sam.wgsl: the per-row SAM perturbation scale (docs/ALGORITHMS.md, "SSLF", `row`): for each
// user row (factors and bias) and each item row, out_r = ρ / ‖g_r‖ on every coordinate of the
// row (0 where g_r = 0), so that ε = out ⊙ g has norm ρ in every row.
//
// Entry points:
//   row_scale    one invocation per own row of one θ row block. Params: n rows, start = first
//                row in the block, f, flags (biases), own/own_bias = offsets in the block, a = ρ.
//   row_scale_d  one invocation: the d block of UDV as one row. Params: f, d_off, a = ρ.
// Bindings (group 0): 0 Params; 4 g (read, the block of the gradient); 5 out (rw, the same block
// of the scale vector).
// Determinism: every output is written by one invocation; sums run in coordinate order.

@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

fn scale_of(s: f32) -> f32 {
    return select(0.0, p.a / sqrt(s), s > 0.0);
}

@compute @workgroup_size(256)
fn row_scale(ids: Ids) {
    let f = p.f;
    let bias = has(FLAG_BIASES) && !has(FLAG_UDV);
    for (var r = ids.gid.x; r < p.n; r = r + ids.nwg.x * WG) {
        let row = p.start + r;
        let a = p.own + row * f;
        let ba = p.own_bias + row;
        var s = 0.0;
        for (var k = 0u; k < f; k = k + 1u) {
            s = s + g[a + k] * g[a + k];
        }
        if (bias) {
            s = s + g[ba] * g[ba];
        }
        let c = scale_of(s);
        for (var k = 0u; k < f; k = k + 1u) {
            out[a + k] = c;
        }
        if (bias) {
            out[ba] = c;
        }
    }
}

@compute @workgroup_size(256)
fn row_scale_d(ids: Ids) {
    if (ids.gid.x == 0u) {
        var s = 0.0;
        for (var k = 0u; k < p.f; k = k + 1u) {
            s = s + g[p.d_off + k] * g[p.d_off + k];
        }
        let c = scale_of(s);
        for (var k = 0u; k < p.f; k = k + 1u) {
            out[p.d_off + k] = c;
        }
    }
}
