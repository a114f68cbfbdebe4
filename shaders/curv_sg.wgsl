// curv_sg.wgsl: the curvature product of curv.wgsl with one subgroup per own row, built only when
// the adapter has Features::SUBGROUP (the layout of work is that of grad_sg.wgsl: lane l of S owns
// factors l, l + S, …; the own rows of θ and v and the first 8·S factors of the output rows stay in
// registers). Per entry, s = J·v (and r̂ for the Hessian) are subgroupAdd sums of the lanes'
// slices. Formulas, tiles, flags and outputs are exactly those of curv.wgsl; no atomics.
//
// Bindings (group 0): as curv.wgsl (0 Params, 1 rowptr, 2 ent, 3 theta, 8 theta_o, 4 dir,
// 9 dir_o, 10 glob, 5 out, 6 dscr).
// Dispatch: as grad_sg.wgsl.

@group(0) @binding(1) var<storage, read> rowptr: array<u32>;
@group(0) @binding(2) var<storage, read> ent: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> dir: array<f32>;
@group(0) @binding(9) var<storage, read> dir_o: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> dscr: array<f32>;

const REG: u32 = 8u; // factors per lane kept in registers

// The lane's share of (s, r̂) for factor k, given θ and v at the own (x, dx) and other (y, dy) rows.
fn terms(k: u32, x: f32, dx: f32, y: f32, dy: f32) -> vec2<f32> {
    if (has(FLAG_UDV)) {
        let d = dval(k);
        return vec2<f32>(d * (dx * y + x * dy) + ddir(k) * x * y, x * d * y);
    }
    return vec2<f32>(dx * y + x * dy, x * y);
}

@compute @workgroup_size(256)
fn curv_rows_sg(ids: Ids) {
    let f = p.f;
    let s = ids.sg_size;
    let lane = ids.lane;
    let udv = has(FLAG_UDV);
    let hess = has(FLAG_HESSIAN);
    let dblock = has(FLAG_DBLOCK);
    let first = has(FLAG_FIRST);
    let biases = !udv && has(FLAG_BIASES);
    for (var r = ids.wid.x * ids.n_sg + ids.sg; r < p.n; r = r + ids.nwg.x * ids.n_sg) {
        let row = p.start + r;
        let a = p.own + row * f;
        let ba = p.own_bias + row;
        var x: array<f32, REG>;
        var dx: array<f32, REG>;
        var acc: array<f32, REG>;
        var dacc: array<f32, REG>;
        for (var j = 0u; j < REG; j = j + 1u) {
            let k = lane + j * s;
            if (k >= f) {
                break;
            }
            x[j] = theta[a + k];
            dx[j] = dir[a + k];
        }
        if (first) {
            for (var k = lane + REG * s; k < f; k = k + s) {
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
            var part = vec2<f32>(0.0, 0.0);
            for (var j = 0u; j < REG; j = j + 1u) {
                let k = lane + j * s;
                if (k >= f) {
                    break;
                }
                part = part + terms(k, x[j], dx[j], theta_o[b + k], dir_o[b + k]);
            }
            for (var k = lane + REG * s; k < f; k = k + s) {
                part = part + terms(k, theta[a + k], dir[a + k], theta_o[b + k], dir_o[b + k]);
            }
            var sv = subgroupAdd(part.x);
            if (biases) {
                sv = sv + dir[ba] + dir_o[bb];
            }
            var w = 0.0;
            if (hess) {
                var pred = subgroupAdd(part.y);
                if (biases) {
                    pred = pred + p.a + theta[ba] + theta_o[bb];
                }
                w = pred - bitcast<f32>(en.y);
            }
            for (var j = 0u; j < REG; j = j + 1u) {
                let k = lane + j * s;
                if (k >= f) {
                    break;
                }
                let t1 = sv * theta_o[b + k] + w * dir_o[b + k];
                if (udv) {
                    let t2 = w * theta_o[b + k];
                    acc[j] = acc[j] + dval(k) * t1 + ddir(k) * t2;
                    dacc[j] = dacc[j] + x[j] * t1 + dx[j] * t2;
                } else {
                    acc[j] = acc[j] + t1;
                }
            }
            for (var k = lane + REG * s; k < f; k = k + s) {
                let t1 = sv * theta_o[b + k] + w * dir_o[b + k];
                if (udv) {
                    let t2 = w * theta_o[b + k];
                    out[a + k] = out[a + k] + dval(k) * t1 + ddir(k) * t2;
                    if (dblock) {
                        dscr[row * f + k] = dscr[row * f + k] + theta[a + k] * t1 + dir[a + k] * t2;
                    }
                } else {
                    out[a + k] = out[a + k] + t1;
                }
            }
            bacc = bacc + sv;
        }
        for (var j = 0u; j < REG; j = j + 1u) {
            let k = lane + j * s;
            if (k >= f) {
                break;
            }
            out[a + k] = select(out[a + k] + acc[j], acc[j], first);
            if (dblock) {
                dscr[row * f + k] = select(dscr[row * f + k] + dacc[j], dacc[j], first);
            }
        }
        if (biases && lane == 0u) {
            out[ba] = select(out[ba] + bacc, bacc, first);
        }
    }
}
