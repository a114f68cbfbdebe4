// vec_ops.wgsl: element-wise BLAS-1 for CG, GD, Adam, the SAM ascent step and the UDV^T ball
// projection (docs/ALGORITHMS.md, "Kernels" and "Solvers").
//
// Bindings (group 0):
//   0 uniform  Params   n = elements, start = first element (range ops), a/b... = scalars
//   1 read     x: array<f32>
//   2 read     y: array<f32>
//   3 rw       out: array<f32>
//   4 rw       m1: array<f32>   (Adam first moment)
//   5 rw       m2: array<f32>   (Adam second moment)
// Dispatch: min(ceil(n/256), 65535) workgroups of 256, grid-stride over n.
// Determinism: element-wise; every element is written by one invocation.

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> m1: array<f32>;
@group(0) @binding(5) var<storage, read_write> m2: array<f32>;

// out[start + k] = a
@compute @workgroup_size(256)
fn fill(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        out[p.start + k] = p.a;
    }
}

// out = (|x| + a)²  (the ASAM metric T² with T = |θ| + η)
@compute @workgroup_size(256)
fn abs_shift_sq(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        let t = abs(x[k]) + p.a;
        out[k] = t * t;
    }
}

// out = x
@compute @workgroup_size(256)
fn copy(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        out[k] = x[k];
    }
}

// out = out + a·x
@compute @workgroup_size(256)
fn axpy(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        out[k] = out[k] + p.a * x[k];
    }
}

// out = x + b·out (CG direction update)
@compute @workgroup_size(256)
fn xpby(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        out[k] = x[k] + p.b * out[k];
    }
}

// out = y + a·x (the SAM ascent step θ̃ = θ + ρ g/‖g‖, and θ' = θ + ηs)
@compute @workgroup_size(256)
fn waxpy(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        out[k] = y[k] + p.a * x[k];
    }
}

// out[start + k] = a·out[start + k] (the ball projection's scale, and whole-vector scale)
@compute @workgroup_size(256)
fn scale(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        out[p.start + k] = p.a * out[p.start + k];
    }
}

// out[start + k] = max(out[start + k], a) (d ≥ 0 by clipping)
@compute @workgroup_size(256)
fn clamp_min(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        out[p.start + k] = max(out[p.start + k], p.a);
    }
}

// out = out + x⊙y (the ridge term D⊙θ)
@compute @workgroup_size(256)
fn mul_add(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        out[k] = out[k] + x[k] * y[k];
    }
}

// Adam: x = g, out = θ, m1, m2 the moments; a = lr, b = β1, c = β2, d = ε, e = c1, g = c2.
@compute @workgroup_size(256)
fn adam(ids: Ids) {
    for (var k = ids.gid.x; k < p.n; k = k + ids.nwg.x * WG) {
        let g = x[k];
        let m = p.b * m1[k] + (1.0 - p.b) * g;
        let v = p.c * m2[k] + (1.0 - p.c) * g * g;
        m1[k] = m;
        m2[k] = v;
        out[k] = out[k] - p.a * (p.e * m) / (sqrt(p.g * v) + p.d);
    }
}
