// common.wgsl: the prelude shared by every sslf kernel.
//
// The loader (src/backend/gpu/shaders.rs) builds each module as this file, then one reduction
// variant — reduce_portable.wgsl, or reduce_subgroup.wgsl when the adapter has
// Features::SUBGROUP — then model.wgsl where needed, then the kernel file. This file defines
// `Params`, the one uniform block of every dispatch (mirrored by `Params` in Rust, 64 bytes), the
// flags and the workgroup scratch `red`. Each variant defines `Ids` (the builtins an entry point
// receives) and `wg_reduce(v, ids)`: the sum of `v` over the 256 invocations of a workgroup, in a
// fixed order, so results are deterministic.
//
// Every entry point uses @workgroup_size(256) and a grid-stride loop over `p.n` items from a grid
// of at most 65,535 workgroups in x, so no dispatch exceeds the per-dimension limit.

struct Params {
    n: u32,          // items (elements, rows or entries) in this dispatch
    start: u32,      // first element (range ops), or first row of a tile within its row block
    f: u32,          // rank
    flags: u32,      // bit 0 biases, 1 udv, 2 hessian, 3 d-block, 4 write out, 5 first, 6 last
    own: u32,        // offset of the own factor rows (P for user rows, Q for item rows) in `theta`
    other: u32,      // offset of the other side's factor rows in `theta_o`
    own_bias: u32,   // offset of the own biases
    other_bias: u32, // offset of the other side's biases
    d_off: u32,      // offset of d in `out` (the d block of UDV gradients and products)
    part: u32,       // first partial slot written by this dispatch
    a: f32,          // scalars: their meaning is given per entry point
    b: f32,
    c: f32,
    d: f32,
    e: f32,
    g: f32,
}

const WG: u32 = 256u;
const FLAG_BIASES: u32 = 1u;
const FLAG_UDV: u32 = 2u;
const FLAG_HESSIAN: u32 = 4u;
const FLAG_DBLOCK: u32 = 8u;
const FLAG_WRITE: u32 = 16u;
const FLAG_FIRST: u32 = 32u; // the first tile over these rows: initialise instead of accumulating
const FLAG_LAST: u32 = 64u;  // the last tile over these rows: finish per-row results

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> red: array<f32, 256>;

fn has(flag: u32) -> bool {
    return (p.flags & flag) != 0u;
}

