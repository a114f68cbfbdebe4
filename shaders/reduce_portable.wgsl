// reduce_portable.wgsl: builtins and the workgroup sum without subgroup operations: a
// shared-memory tree in fixed order. Prepended after common.wgsl.

struct Ids {
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
}

fn wg_reduce(v: f32, ids: Ids) -> f32 {
    red[ids.lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (ids.lid < s) {
            red[ids.lid] = red[ids.lid] + red[ids.lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
