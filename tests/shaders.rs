//! Every WGSL kernel, in both prelude variants, parses and validates with naga: no adapter needed.
//! Also checks that the Rust `Params` mirrors the WGSL struct.

use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};
use sslf::backend::gpu::shaders::{module_source, Params, FILES};

fn validate(file: &str, subgroups: bool) -> naga::Module {
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
    v.validate(&module)
        .unwrap_or_else(|e| panic!("{file} (subgroups {subgroups}): {}", e.emit_to_string(&src)));
    module
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
