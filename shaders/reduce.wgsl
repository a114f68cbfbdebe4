// reduce.wgsl: dot products and squared norms as per-workgroup partials (docs/ALGORITHMS.md, "Kernels":
// vector operations reduce to per-workgroup partials; the host adds them in f64).
//
// Bindings (group 0):
//   0 uniform  Params   n = elements, start = first element (sumsq), part = first partial slot
//   1 read     x: array<f32>
//   2 read     y: array<f32>
//   3 read     w: array<f32>    (weights of wdot)
//   4 rw       partials: array<f32>, one per workgroup at part + workgroup index
// Dispatch: G = min(ceil(n/256), 1024) workgroups of 256; each invocation strides over n, then
// the workgroup sums its 256 values with wg_reduce.
// Determinism: G depends on n only, and every sum has a fixed order; no atomics.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;

// Σ x·y
@compute @workgroup_size(256)
fn dot(ids: Ids) {
    var s = 0.0;
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        s = s + x[k] * y[k];
    }
    let t = wg_reduce(s, ids);
    if (ids.lid == 0u) {
        partials[p.part + ids.wid.x] = t;
    }
}

// Σ w·x·y
@compute @workgroup_size(256)
fn wdot(ids: Ids) {
    var s = 0.0;
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        s = s + w[k] * x[k] * y[k];
    }
    let t = wg_reduce(s, ids);
    if (ids.lid == 0u) {
        partials[p.part + ids.wid.x] = t;
    }
}

// Σ x[start + k]² for k < n
@compute @workgroup_size(256)
fn sumsq(ids: Ids) {
    var s = 0.0;
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        let v = x[p.start + k];
        s = s + v * v;
    }
    let t = wg_reduce(s, ids);
    if (ids.lid == 0u) {
        partials[p.part + ids.wid.x] = t;
    }
}
