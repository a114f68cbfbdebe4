// model.wgsl: the prediction rule r̂, prepended (after common.wgsl) to the kernels that need it.
// docs/ALGORITHMS.md, "Models": LF r̂ = μ + b_u + c_i + p_u·q_i (μ and biases with FLAG_BIASES);
// UDV^T r̂ = Σ_k U_uk d_k V_ik (FLAG_UDV).
//
// θ may be split into row blocks (src/backend/gpu/blocking.rs), so a kernel binds the block that
// holds its own rows as `theta` and the block that holds the other side's rows as `theta_o` (the
// same buffer when θ is one segment). `a`/`ba` are offsets in `theta`, `b`/`bb` in `theta_o`.
// d (UDV) is copied before each pass into the uniform `glob`: θ's d at 0.., the direction's d at
// 1024.. (rank ≤ 1024). p.a holds μ.

@group(0) @binding(3) var<storage, read> theta: array<f32>;
@group(0) @binding(8) var<storage, read> theta_o: array<f32>;
@group(0) @binding(10) var<uniform> glob: array<vec4<f32>, 512>;

// d_k of θ.
fn dval(k: u32) -> f32 {
    return glob[k >> 2u][k & 3u];
}

// d_k of the direction (curvature products).
fn ddir(k: u32) -> f32 {
    let j = 1024u + k;
    return glob[j >> 2u][j & 3u];
}

fn predict(a: u32, b: u32, ba: u32, bb: u32) -> f32 {
    var s = 0.0;
    if (has(FLAG_UDV)) {
        for (var k = 0u; k < p.f; k = k + 1u) {
            s = s + theta[a + k] * dval(k) * theta_o[b + k];
        }
    } else {
        for (var k = 0u; k < p.f; k = k + 1u) {
            s = s + theta[a + k] * theta_o[b + k];
        }
        if (has(FLAG_BIASES)) {
            s = s + p.a + theta[ba] + theta_o[bb];
        }
    }
    return s;
}
