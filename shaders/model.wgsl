// model.wgsl: the prediction rule r̂, prepended (after common.wgsl) to the kernels that need it.
// ALGORITHMS.md, "Models": LF r̂ = μ + b_u + c_i + p_u·q_i (μ and biases with FLAG_BIASES);
// UDV^T r̂ = Σ_k U_uk d_k V_ik (FLAG_UDV). θ is one flat vector; `a` and `b` are the offsets of the
// two factor rows, `ba` and `bb` of the two biases; p.a holds μ.

@group(0) @binding(3) var<storage, read> theta: array<f32>;

fn predict(a: u32, b: u32, ba: u32, bb: u32) -> f32 {
    var s = 0.0;
    if (has(FLAG_UDV)) {
        for (var k = 0u; k < p.f; k = k + 1u) {
            s = s + theta[a + k] * theta[p.d_off + k] * theta[b + k];
        }
    } else {
        for (var k = 0u; k < p.f; k = k + 1u) {
            s = s + theta[a + k] * theta[b + k];
        }
        if (has(FLAG_BIASES)) {
            s = s + p.a + theta[ba] + theta[bb];
        }
    }
    return s;
}
