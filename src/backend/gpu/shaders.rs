//! The only place WGSL sources enter the binary. Each kernel module is common.wgsl, a reduction
//! variant (portable or subgroup), optional model helpers and one file from `shaders/`; every pipeline is built once
//! when the backend starts, inside a validation error scope, so a bad shader becomes
//! `Error::Shader` naming the kernel and file.

use crate::error::{Error, Result};

const COMMON: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/common.wgsl"));
const REDUCE_PORTABLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/shaders/reduce_portable.wgsl"
));
const REDUCE_SUBGROUP: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/shaders/reduce_subgroup.wgsl"
));
const MODEL: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/model.wgsl"));

/// Kernel files: (file name, source, needs model.wgsl).
pub const FILES: &[(&str, &str, bool)] = &[
    (
        "vec_ops.wgsl",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/vec_ops.wgsl")),
        false,
    ),
    (
        "reduce.wgsl",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/reduce.wgsl")),
        false,
    ),
    (
        "grad.wgsl",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/grad.wgsl")),
        true,
    ),
    (
        "curv.wgsl",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/curv.wgsl")),
        true,
    ),
    (
        "dblock.wgsl",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/dblock.wgsl")),
        false,
    ),
    (
        "eval.wgsl",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/eval.wgsl")),
        true,
    ),
];

/// Every kernel: (entry point, file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    Fill,
    Copy,
    Axpy,
    Xpby,
    Waxpy,
    Scale,
    ClampMin,
    MulAdd,
    Adam,
    Dot,
    Wdot,
    SumSq,
    GradRows,
    CurvRows,
    DColsum,
    EvalEntries,
}

impl Kernel {
    pub const ALL: [Kernel; 16] = [
        Kernel::Fill,
        Kernel::Copy,
        Kernel::Axpy,
        Kernel::Xpby,
        Kernel::Waxpy,
        Kernel::Scale,
        Kernel::ClampMin,
        Kernel::MulAdd,
        Kernel::Adam,
        Kernel::Dot,
        Kernel::Wdot,
        Kernel::SumSq,
        Kernel::GradRows,
        Kernel::CurvRows,
        Kernel::DColsum,
        Kernel::EvalEntries,
    ];

    /// The WGSL entry point.
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::Fill => "fill",
            Kernel::Copy => "copy",
            Kernel::Axpy => "axpy",
            Kernel::Xpby => "xpby",
            Kernel::Waxpy => "waxpy",
            Kernel::Scale => "scale",
            Kernel::ClampMin => "clamp_min",
            Kernel::MulAdd => "mul_add",
            Kernel::Adam => "adam",
            Kernel::Dot => "dot",
            Kernel::Wdot => "wdot",
            Kernel::SumSq => "sumsq",
            Kernel::GradRows => "grad_rows",
            Kernel::CurvRows => "curv_rows",
            Kernel::DColsum => "d_colsum",
            Kernel::EvalEntries => "eval_entries",
        }
    }

    /// The file in `shaders/` that holds the entry point.
    pub fn file(self) -> &'static str {
        match self {
            Kernel::Fill
            | Kernel::Copy
            | Kernel::Axpy
            | Kernel::Xpby
            | Kernel::Waxpy
            | Kernel::Scale
            | Kernel::ClampMin
            | Kernel::MulAdd
            | Kernel::Adam => "vec_ops.wgsl",
            Kernel::Dot | Kernel::Wdot | Kernel::SumSq => "reduce.wgsl",
            Kernel::GradRows => "grad.wgsl",
            Kernel::CurvRows => "curv.wgsl",
            Kernel::DColsum => "dblock.wgsl",
            Kernel::EvalEntries => "eval.wgsl",
        }
    }
}

/// The full WGSL module for a kernel file: common + a reduction variant (+ model helpers) + the file.
pub fn module_source(file: &str, subgroups: bool) -> Result<String> {
    let (_, src, model) =
        FILES
            .iter()
            .find(|(f, _, _)| *f == file)
            .ok_or_else(|| Error::Shader {
                kernel: "-".into(),
                file: file.into(),
                message: "no such shader file".into(),
            })?;
    let reduce = if subgroups {
        REDUCE_SUBGROUP
    } else {
        REDUCE_PORTABLE
    };
    Ok(format!(
        "{COMMON}\n{reduce}\n{}\n{src}",
        if *model { MODEL } else { "" }
    ))
}

/// The uniform block of every dispatch; mirrors `struct Params` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub start: u32,
    pub f: u32,
    pub flags: u32,
    pub own: u32,
    pub other: u32,
    pub own_bias: u32,
    pub other_bias: u32,
    pub d_off: u32,
    pub part: u32,
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
    pub e: f32,
    pub g: f32,
}

pub const FLAG_BIASES: u32 = 1;
pub const FLAG_UDV: u32 = 2;
pub const FLAG_HESSIAN: u32 = 4;
pub const FLAG_DBLOCK: u32 = 8;
pub const FLAG_WRITE: u32 = 16;
pub const FLAG_FIRST: u32 = 32;
pub const FLAG_LAST: u32 = 64;
