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

/// A kernel file of `shaders/`.
pub struct ShaderFile {
    pub name: &'static str,
    pub source: &'static str,
    /// Prepend model.wgsl.
    pub model: bool,
    /// Uses subgroup operations itself: built only on adapters with `Features::SUBGROUP`.
    pub subgroup_only: bool,
}

macro_rules! shader_file {
    ($name:literal, $model:expr, $sg:expr) => {
        ShaderFile {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name)),
            model: $model,
            subgroup_only: $sg,
        }
    };
}

/// Every kernel file.
pub const FILES: &[ShaderFile] = &[
    shader_file!("vec_ops.wgsl", false, false),
    shader_file!("reduce.wgsl", false, false),
    shader_file!("grad.wgsl", true, false),
    shader_file!("grad_sg.wgsl", true, true),
    shader_file!("curv.wgsl", true, false),
    shader_file!("curv_sg.wgsl", true, true),
    shader_file!("dblock.wgsl", false, false),
    shader_file!("eval.wgsl", true, false),
    shader_file!("precond.wgsl", true, false),
    shader_file!("sam.wgsl", false, false),
    shader_file!("topn.wgsl", false, false),
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
    GradRowsSg,
    CurvRows,
    CurvRowsSg,
    DColsum,
    EvalEntries,
    PcGram,
    PcFactor,
    PcDiag,
    PcApply,
    PcDinv,
    PcDapply,
    AbsShiftSq,
    RowScale,
    RowScaleD,
    TopN,
}

impl Kernel {
    pub const ALL: [Kernel; 28] = [
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
        Kernel::GradRowsSg,
        Kernel::CurvRows,
        Kernel::CurvRowsSg,
        Kernel::DColsum,
        Kernel::EvalEntries,
        Kernel::PcGram,
        Kernel::PcFactor,
        Kernel::PcDiag,
        Kernel::PcApply,
        Kernel::PcDinv,
        Kernel::PcDapply,
        Kernel::AbsShiftSq,
        Kernel::RowScale,
        Kernel::RowScaleD,
        Kernel::TopN,
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
            Kernel::GradRowsSg => "grad_rows_sg",
            Kernel::CurvRows => "curv_rows",
            Kernel::CurvRowsSg => "curv_rows_sg",
            Kernel::DColsum => "d_colsum",
            Kernel::EvalEntries => "eval_entries",
            Kernel::PcGram => "pc_gram",
            Kernel::PcFactor => "pc_factor",
            Kernel::PcDiag => "pc_diag",
            Kernel::PcApply => "pc_apply",
            Kernel::PcDinv => "pc_dinv",
            Kernel::PcDapply => "pc_dapply",
            Kernel::AbsShiftSq => "abs_shift_sq",
            Kernel::RowScale => "row_scale",
            Kernel::RowScaleD => "row_scale_d",
            Kernel::TopN => "top_n",
        }
    }

    /// Whether the kernel is built only on adapters with subgroups.
    pub fn subgroup_only(self) -> bool {
        FILES
            .iter()
            .any(|f| f.name == self.file() && f.subgroup_only)
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
            | Kernel::Adam
            | Kernel::AbsShiftSq => "vec_ops.wgsl",
            Kernel::Dot | Kernel::Wdot | Kernel::SumSq => "reduce.wgsl",
            Kernel::GradRows => "grad.wgsl",
            Kernel::GradRowsSg => "grad_sg.wgsl",
            Kernel::CurvRows => "curv.wgsl",
            Kernel::CurvRowsSg => "curv_sg.wgsl",
            Kernel::DColsum => "dblock.wgsl",
            Kernel::EvalEntries => "eval.wgsl",
            Kernel::PcGram
            | Kernel::PcFactor
            | Kernel::PcDiag
            | Kernel::PcApply
            | Kernel::PcDinv
            | Kernel::PcDapply => "precond.wgsl",
            Kernel::RowScale | Kernel::RowScaleD => "sam.wgsl",
            Kernel::TopN => "topn.wgsl",
        }
    }
}

/// The full WGSL module for a kernel file: common + a reduction variant (+ model helpers) + the file.
pub fn module_source(file: &str, subgroups: bool) -> Result<String> {
    let sf = FILES
        .iter()
        .find(|sf| sf.name == file)
        .ok_or_else(|| Error::Shader {
            kernel: "-".into(),
            file: file.into(),
            message: "no such shader file".into(),
        })?;
    if sf.subgroup_only && !subgroups {
        return Err(Error::Shader {
            kernel: "-".into(),
            file: file.into(),
            message: "this file needs subgroup operations".into(),
        });
    }
    let (src, model) = (sf.source, sf.model);
    let reduce = if subgroups {
        REDUCE_SUBGROUP
    } else {
        REDUCE_PORTABLE
    };
    Ok(format!(
        "{COMMON}\n{reduce}\n{}\n{src}",
        if model { MODEL } else { "" }
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
