// topn.wgsl: every listed user's N best items (serving; docs/ALGORITHMS.md, "Serving").
// score(u, i) = p_u·q_i + c_i for every item i the user did not rate; the host adds μ + b_u.
// Order: higher score first, ties by lower item index (as the CPU path).
//
// Entry point:
//   top_n   one workgroup per user (grid-stride over `p.n` users). Each invocation scans items
//           lid, lid + 256, …, skipping the user's seen items (binary search in its sorted list),
//           and keeps its own best N in private arrays (insertion). Then N rounds pick the
//           workgroup's best remaining head by a fixed-order tree over the 256 invocations; the
//           winner advances. Params: n users, f, own = n_items, other = N (≤ TOP_MAX).
// Bindings (group 0): 0 Params; 1 pu (read, the users' factor rows, n × f); 2 q (read, n_items ×
//   f); 3 c (read, item biases, zeros without biases); 4 seen_ptr (read, n + 1 offsets into
//   seen); 5 seen (read, item indices ascending per user); 6 out_item (rw, n × N, 0xffffffff where
//   fewer than N items are left); 7 out_score (rw, n × N).
// Determinism: every output is written by invocation 0 from a fixed-order reduction.

const TOP_MAX: u32 = 32u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(1) var<storage, read> pu: array<f32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read> seen_ptr: array<u32>;
@group(0) @binding(5) var<storage, read> seen: array<u32>;
@group(0) @binding(6) var<storage, read_write> out_item: array<u32>;
@group(0) @binding(7) var<storage, read_write> out_score: array<f32>;

var<workgroup> win_item: array<u32, 256>;
var<workgroup> win_lane: array<u32, 256>;

// Whether (sa, ia) ranks before (sb, ib); NONE ranks last.
fn before(sa: f32, ia: u32, sb: f32, ib: u32) -> bool {
    if (ib == NONE) {
        return ia != NONE;
    }
    if (ia == NONE) {
        return false;
    }
    return sa > sb || (sa == sb && ia < ib);
}

fn is_seen(lo: u32, hi: u32, item: u32) -> bool {
    var a = lo;
    var b = hi;
    while (a < b) {
        let m = a + (b - a) / 2u;
        let v = seen[m];
        if (v == item) {
            return true;
        }
        if (v < item) {
            a = m + 1u;
        } else {
            b = m;
        }
    }
    return false;
}

@compute @workgroup_size(256)
fn top_n(ids: Ids) {
    let f = p.f;
    let n_items = p.own;
    let top = min(p.other, TOP_MAX);
    let lane = ids.lid;
    for (var r = ids.wid.x; r < p.n; r = r + ids.nwg.x) {
        var bs: array<f32, 32>;
        var bi: array<u32, 32>;
        for (var k = 0u; k < TOP_MAX; k = k + 1u) {
            bs[k] = 0.0;
            bi[k] = NONE;
        }
        let lo = seen_ptr[r];
        let hi = seen_ptr[r + 1u];
        for (var i = lane; i < n_items; i = i + WG) {
            if (is_seen(lo, hi, i)) {
                continue;
            }
            var s = c[i];
            for (var k = 0u; k < f; k = k + 1u) {
                s = s + pu[r * f + k] * q[i * f + k];
            }
            if (top == 0u || !before(s, i, bs[top - 1u], bi[top - 1u])) {
                continue;
            }
            var j = top - 1u;
            while (j > 0u && before(s, i, bs[j - 1u], bi[j - 1u])) {
                bs[j] = bs[j - 1u];
                bi[j] = bi[j - 1u];
                j = j - 1u;
            }
            bs[j] = s;
            bi[j] = i;
        }
        // N rounds: the best head over the workgroup wins and its lane advances.
        var head = 0u;
        for (var k = 0u; k < top; k = k + 1u) {
            var hs = 0.0;
            var hi_ = NONE;
            if (head < top) {
                hs = bs[head];
                hi_ = bi[head];
            }
            red[lane] = hs;
            win_item[lane] = hi_;
            win_lane[lane] = lane;
            workgroupBarrier();
            for (var s = WG / 2u; s > 0u; s = s >> 1u) {
                if (lane < s) {
                    if (before(red[lane + s], win_item[lane + s], red[lane], win_item[lane])) {
                        red[lane] = red[lane + s];
                        win_item[lane] = win_item[lane + s];
                        win_lane[lane] = win_lane[lane + s];
                    }
                }
                workgroupBarrier();
            }
            let wl = win_lane[0];
            if (lane == 0u) {
                out_item[r * p.other + k] = win_item[0];
                out_score[r * p.other + k] = red[0];
            }
            if (lane == wl && win_item[0] != NONE) {
                head = head + 1u;
            }
            workgroupBarrier();
        }
    }
}
