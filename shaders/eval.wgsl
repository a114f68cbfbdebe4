// eval.wgsl: error sums of r̂ on evaluation entries (docs/ALGORITHMS.md, "Evaluation protocol"): Σe²,
// Σ|e|, and both again with r̂ clipped to the rating range [b, c].
//
// Entries are grouped into tiles by (user block, item block) of θ (ops.rs), with indices local to
// the blocks; one dispatch per tile.
//
// Bindings (group 0):
//   0  uniform  Params  n = entries in this tile, f, flags, offsets in the bound blocks (own =
//                       P/U, other = Q/V, own_bias = b, other_bias = c), a = μ, b/c = clip range,
//                       part
//   1  read     coo: array<u32>        (user, item, bitcast<u32>(rating)) triplets
//   3  read     theta: array<f32>      the user block of θ (model.wgsl)
//   8  read     theta_o: array<f32>    the item block of θ (model.wgsl)
//   10 uniform  glob                   d of θ (model.wgsl)
//   7  rw       partials: array<f32>   4 sums per workgroup at part + 4·workgroup index
// Dispatch: min(ceil(n/256), 1024) workgroups of 256, grid-stride over entries.
// Determinism: fixed grid and tree order; no atomics.

@group(0) @binding(1) var<storage, read> coo: array<u32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

@compute @workgroup_size(256)
fn eval_entries(ids: Ids) {
    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        let u = coo[3u * k];
        let i = coo[3u * k + 1u];
        let r = bitcast<f32>(coo[3u * k + 2u]);
        let pred = predict(p.own + u * p.f, p.other + i * p.f, p.own_bias + u, p.other_bias + i);
        let e = r - pred;
        let ec = r - clamp(pred, p.b, p.c);
        s0 = s0 + e * e;
        s1 = s1 + abs(e);
        s2 = s2 + ec * ec;
        s3 = s3 + abs(ec);
    }
    let t0 = wg_reduce(s0, ids);
    let t1 = wg_reduce(s1, ids);
    let t2 = wg_reduce(s2, ids);
    let t3 = wg_reduce(s3, ids);
    if (ids.lid == 0u) {
        let base = p.part + 4u * ids.wid.x;
        partials[base] = t0;
        partials[base + 1u] = t1;
        partials[base + 2u] = t2;
        partials[base + 3u] = t3;
    }
}
