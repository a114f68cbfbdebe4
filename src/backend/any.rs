//! A backend chosen at run time: the one place that turns a [`BackendChoice`] into an open
//! backend. `train`, `experiment` and `bench` all open theirs here, so `auto`'s CPU fallback is
//! decided (and said) once.

use super::cpu::{CpuBackend, CpuOptions};
use super::gpu::{GpuBackend, GpuOptions};
use super::{Backend, DeviceInfo};
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// The multithreaded CPU backend.
    #[default]
    Cpu,
    /// A wgpu adapter (a hardware one if present, else any, lavapipe included).
    Gpu,
    /// A hardware GPU if there is one, else the CPU backend (saying so).
    Auto,
}

/// An open backend of either kind.
pub enum AnyBackend {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend>),
}

/// Runs `$body` with `$b` bound to the concrete backend inside an [`AnyBackend`].
#[macro_export]
macro_rules! with_backend {
    ($any:expr, $b:ident => $body:expr) => {
        match $any {
            $crate::backend::any::AnyBackend::Cpu($b) => $body,
            $crate::backend::any::AnyBackend::Gpu($b) => {
                let $b = &**$b;
                $body
            }
        }
    };
}

/// Opens the backend `choice` names; `cpu` sizes the CPU pool and its tiles. `auto`
/// takes a hardware GPU when there is one; otherwise it tells `say` why, once, and opens the CPU.
pub fn open(
    choice: BackendChoice,
    cpu: &CpuOptions,
    gpu: &GpuOptions,
    say: &dyn Fn(&str),
) -> Result<AnyBackend> {
    match choice {
        BackendChoice::Cpu => Ok(AnyBackend::Cpu(CpuBackend::open(cpu)?)),
        BackendChoice::Gpu => Ok(AnyBackend::Gpu(Box::new(GpuBackend::new(gpu)?))),
        BackendChoice::Auto => match GpuBackend::new_hardware(gpu) {
            Ok(g) => Ok(AnyBackend::Gpu(Box::new(g))),
            Err(e) => {
                say(&format!(
                    "sslf: no hardware GPU ({e}); falling back to the CPU backend"
                ));
                Ok(AnyBackend::Cpu(CpuBackend::open(cpu)?))
            }
        },
    }
}

impl AnyBackend {
    pub fn info(&self) -> DeviceInfo {
        crate::with_backend!(self, b => b.info())
    }

    /// Whether this is the CPU backend.
    pub fn is_cpu(&self) -> bool {
        matches!(self, AnyBackend::Cpu(_))
    }
}
