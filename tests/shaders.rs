//! Every WGSL kernel, in both prelude variants, parses and validates with naga, and translates with
//! naga's SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL) back ends: a WGSL change that one
//! of those platforms would reject fails here, with no adapter needed. Also checks that the Rust
//! `Params` mirrors the WGSL struct.

use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};
use sslf::backend::gpu::shaders::{module_source, Params, FILES};

fn validate(file: &str, subgroups: bool) -> naga::Module {
    validate_with_info(file, subgroups).0
}

fn validate_with_info(file: &str, subgroups: bool) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = module_source(file, subgroups).unwrap();
    let module = naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{file} (subgroups {subgroups}): {}", e.emit_to_string(&src)));
    let caps = if subgroups {
        Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER
    } else {
        Capabilities::empty()
    };
    let mut v = Validator::new(ValidationFlags::all(), caps);
    if subgroups {
        v.subgroup_stages(ShaderStages::COMPUTE);
        v.subgroup_operations(SubgroupOperationSet::all());
    }
    let info = v
        .validate(&module)
        .unwrap_or_else(|e| panic!("{file} (subgroups {subgroups}): {}", e.emit_to_string(&src)));
    (module, info)
}

/// Translates one variant with every back end; returns what failed.
fn translate(file: &str, subgroups: bool) -> Vec<String> {
    use naga::back::{glsl, hlsl, msl, spv};
    let (module, info) = validate_with_info(file, subgroups);
    let mut failed = Vec::new();
    let tag = format!(
        "{file} ({})",
        if subgroups { "subgroup" } else { "portable" }
    );
    // SPIR-V: subgroup operations need 1.3.
    let spv_opts = spv::Options {
        lang_version: if subgroups { (1, 3) } else { (1, 0) },
        ..Default::default()
    };
    if let Err(e) = spv::write_vec(&module, &info, &spv_opts, None) {
        failed.push(format!("{tag} SPIR-V: {e}"));
    }
    // MSL: SIMD-group functions need 2.1.
    let msl_opts = msl::Options {
        lang_version: if subgroups { (2, 1) } else { (2, 0) },
        ..Default::default()
    };
    if let Err(e) = msl::write_string(&module, &info, &msl_opts, &msl::PipelineOptions::default()) {
        failed.push(format!("{tag} MSL: {e}"));
    }
    // HLSL: DX12's shader model 5.1, or 6.0 for wave intrinsics.
    let hlsl_opts = hlsl::Options {
        shader_model: if subgroups {
            hlsl::ShaderModel::V6_0
        } else {
            hlsl::ShaderModel::V5_1
        },
        ..Default::default()
    };
    let mut out = String::new();
    let pipeline = hlsl::PipelineOptions::default();
    if let Err(e) = hlsl::Writer::new(&mut out, &hlsl_opts, &pipeline).write(&module, &info, None) {
        failed.push(format!("{tag} HLSL: {e}"));
    }
    // GLSL: wgpu's GL back end has no subgroups; the portable kernels must translate for GLES 3.1
    // and desktop GL 4.3 compute, one entry point at a time.
    if !subgroups {
        for ep in &module.entry_points {
            for version in [glsl::Version::new_gles(310), glsl::Version::Desktop(430)] {
                let opts = glsl::Options {
                    version,
                    ..Default::default()
                };
                let po = glsl::PipelineOptions {
                    shader_stage: ep.stage,
                    entry_point: ep.name.clone(),
                    multiview: None,
                };
                let mut out = String::new();
                let r = glsl::Writer::new(
                    &mut out,
                    &module,
                    &info,
                    &opts,
                    &po,
                    naga::proc::BoundsCheckPolicies::default(),
                )
                .and_then(|mut w| w.write().map(|_| ()));
                if let Err(e) = r {
                    failed.push(format!("{tag} GLSL {version:?} {}: {e}", ep.name));
                }
            }
        }
    }
    failed
}

#[test]
fn every_shader_translates_for_vulkan_metal_dx12_and_gl() {
    let mut failed = Vec::new();
    let mut variants = 0;
    for sf in FILES {
        if !sf.subgroup_only {
            failed.extend(translate(sf.name, false));
            variants += 1;
        }
        failed.extend(translate(sf.name, true));
        variants += 1;
    }
    assert!(variants > FILES.len());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_shader_validates_with_and_without_subgroups() {
    assert!(FILES.len() >= 8);
    for sf in FILES {
        if !sf.subgroup_only {
            validate(sf.name, false);
        } else {
            assert!(module_source(sf.name, false).is_err(), "{}", sf.name);
        }
        validate(sf.name, true);
    }
}

#[test]
fn the_portable_variant_uses_no_subgroup_operations() {
    for file in FILES
        .iter()
        .filter(|sf| !sf.subgroup_only)
        .map(|sf| sf.name)
    {
        let src = module_source(file, false).unwrap();
        assert!(!src.contains("subgroupAdd"), "{file}");
        // Without the SUBGROUP capability the subgroup variant must be rejected, so the check
        // above really exercises two different programs.
        let sub = module_source(file, true).unwrap();
        let m = naga::front::wgsl::parse_str(&sub).unwrap();
        let r = Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&m);
        assert!(
            r.is_err(),
            "{file}: the subgroup variant validated without SUBGROUP"
        );
    }
}

#[test]
fn params_struct_matches_wgsl_layout() {
    let module = validate("vec_ops.wgsl", false);
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Params"))
        .expect("Params in WGSL");
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("Params is not a struct");
    };
    assert_eq!(*span as usize, std::mem::size_of::<Params>());
    assert_eq!(std::mem::align_of::<Params>(), 4);
    let names = [
        "n",
        "start",
        "f",
        "flags",
        "own",
        "other",
        "own_bias",
        "other_bias",
        "d_off",
        "part",
        "a",
        "b",
        "c",
        "d",
        "e",
        "g",
    ];
    assert_eq!(members.len(), names.len());
    for (k, (m, want)) in members.iter().zip(names).enumerate() {
        assert_eq!(m.name.as_deref(), Some(want));
        assert_eq!(m.offset as usize, 4 * k, "{want}");
    }
}
