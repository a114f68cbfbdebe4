//! The CPU backend: host vectors (`Vec<f32>`) and host CSR/CSC, computed with rayon on a pool of a
//! chosen size. Every reduction adds fixed-size partials in order, so results are bitwise
//! reproducible for any thread count.

mod precond;
mod sparse;

pub use precond::CpuPrecond;
mod vector;

use super::{Backend, DeviceInfo};
use crate::error::{Error, Result};

/// Rayon-parallel host backend.
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    fusion: Fusion,
}

/// Whether gradients and curvature products do the item side inside the user pass (one pass over
/// the CSR with per-block item buffers) or as a second pass over the CSC. See `sparse.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fusion {
    /// Fused when items are few next to the entries (average item degree ≥ 64).
    #[default]
    Auto,
    Always,
    Never,
}

impl CpuBackend {
    /// A backend on `threads` worker threads (0: one per core).
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|k| format!("sslf-cpu-{k}"))
            .build()
            .map_err(|e| Error::Device(format!("cannot start the CPU thread pool: {e}")))?;
        Ok(CpuBackend {
            pool,
            fusion: Fusion::Auto,
        })
    }

    /// The same backend with another fusion rule.
    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

impl Backend for CpuBackend {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            backend: "cpu".into(),
            name: format!("{} rayon threads", self.threads()),
            device_type: "Host".into(),
        }
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
