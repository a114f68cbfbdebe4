// grad_sg.wgsl: the gradient of grad.wgsl with one subgroup per own row, built only when the
// adapter has Features::SUBGROUP. Lane l of a subgroup of S lanes (S read at run time, never
// assumed) owns factors k = l, l + S, l + 2S, …: it loads its slice of the other row (coalesced
// across lanes), the slices' products are summed with subgroupAdd into r̂, and each lane keeps its
// slice of the gradient row in registers (the first 8·S factors; any beyond in `out`). Every row is
// still written by one subgroup, in column order: no atomics, deterministic on a given device.
// Tiles, flags and outputs are exactly those of grad.wgsl.
//
// Bindings (group 0): as grad.wgsl (0 Params, 1 rowptr, 2 ent, 3 theta, 8 theta_o, 10 glob,
// 5 out, 6 dscr, 7 partials).
// Dispatch: min(ceil(n·S_max/256), 4096) workgroups of 256; subgroup g of workgroup w starts at
// row w·num_subgroups + g and strides by num_workgroups·num_subgroups.

@group(0) @binding(1) var<storage, read> rowptr: array<u32>;
@group(0) @binding(2) var<storage, read> ent: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> dscr: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

const REG: u32 = 8u; // factors per lane kept in registers

@compute @workgroup_size(256)
fn grad_rows_sg(ids: Ids) {
    let f = p.f;
    let s = ids.sg_size;
    let lane = ids.lane;
    let write = has(FLAG_WRITE);
    let first = has(FLAG_FIRST);
    let udv = has(FLAG_UDV);
    let biases = !udv && has(FLAG_BIASES);
    var sq = 0.0;
    for (var r = ids.wid.x * ids.n_sg + ids.sg; r < p.n; r = r + ids.nwg.x * ids.n_sg) {
        let row = p.start + r;
        let a = p.own + row * f;
        let ba = p.own_bias + row;
        var own: array<f32, REG>;
        var acc: array<f32, REG>;
        for (var j = 0u; j < REG; j = j + 1u) {
            let k = lane + j * s;
            if (k >= f) {
                break;
            }
            own[j] = theta[a + k];
            if (udv) {
                own[j] = own[j] * dval(k);
            }
            acc[j] = 0.0;
        }
        if (write && first) {
            for (var k = lane + REG * s; k < f; k = k + s) {
                out[a + k] = 0.0;
            }
        }
        var base = 0.0;
        if (biases) {
            base = p.a + theta[ba];
        }
        var bacc = 0.0;
        let end = rowptr[r + 1u];
        for (var t = rowptr[r]; t < end; t = t + 1u) {
            let en = ent[t];
            let b = p.other + en.x * f;
            var part = 0.0;
            for (var j = 0u; j < REG; j = j + 1u) {
                let k = lane + j * s;
                if (k >= f) {
                    break;
                }
                part = part + own[j] * theta_o[b + k];
            }
            for (var k = lane + REG * s; k < f; k = k + s) {
                var x = theta[a + k] * theta_o[b + k];
                if (udv) {
                    x = theta[a + k] * dval(k) * theta_o[b + k];
                }
                part = part + x;
            }
            var pred = subgroupAdd(part);
            if (biases) {
                pred = pred + base + theta_o[p.other_bias + en.x];
            }
            let e = bitcast<f32>(en.y) - pred;
            if (lane == 0u) {
                sq = sq + e * e;
            }
            if (write) {
                for (var j = 0u; j < REG; j = j + 1u) {
                    let k = lane + j * s;
                    if (k >= f) {
                        break;
                    }
                    acc[j] = acc[j] - e * theta_o[b + k];
                }
                for (var k = lane + REG * s; k < f; k = k + s) {
                    out[a + k] = out[a + k] - e * theta_o[b + k];
                }
                bacc = bacc - e;
            }
        }
        if (write) {
            for (var j = 0u; j < REG; j = j + 1u) {
                let k = lane + j * s;
                if (k >= f) {
                    break;
                }
                out[a + k] = select(out[a + k] + acc[j], acc[j], first);
            }
            if (udv) {
                if (has(FLAG_LAST)) {
                    for (var k = lane; k < f; k = k + s) {
                        let total = out[a + k];
                        out[a + k] = dval(k) * total;
                        if (has(FLAG_DBLOCK)) {
                            dscr[row * f + k] = theta[a + k] * total;
                        }
                    }
                }
            } else if (biases && lane == 0u) {
                out[ba] = select(out[ba] + bacc, bacc, first);
            }
        }
    }
    let total = wg_reduce(sq, ids);
    if (ids.lid == 0u) {
        partials[p.part + ids.wid.x] = total;
    }
}
