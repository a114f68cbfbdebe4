// reduce_subgroup.wgsl: builtins and the workgroup sum with subgroup operations, for adapters
// with Features::SUBGROUP; the subgroup size is whatever the device runs. Prepended after
// common.wgsl.

struct Ids {
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
    @builtin(subgroup_size) sg_size: u32,
}

// Subgroup sums first (subgroupAdd, whatever the subgroup size the device runs), then invocation 0
// adds the per-subgroup sums in subgroup order. No `enable subgroups;` line: naga 30 rejects it and
// needs only Features::SUBGROUP.
fn wg_reduce(v: f32, ids: Ids) -> f32 {
    let s = subgroupAdd(v);
    if (ids.lane == 0u) {
        red[ids.sg] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var k = 0u; k < ids.n_sg; k = k + 1u) {
        total = total + red[k];
    }
    workgroupBarrier();
    return total;
}
