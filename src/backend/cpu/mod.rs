//! The CPU backend: host vectors (`Vec<f32>`) and host CSR/CSC, computed with rayon on a pool of a
//! chosen size. Every reduction adds fixed-size partials in order, so results are bitwise
//! reproducible for any thread count.

mod sparse;
mod vector;

use super::{Backend, DeviceInfo};
use crate::error::{Error, Result};

/// Rayon-parallel host backend.
pub struct CpuBackend {
    pool: rayon::ThreadPool,
}

impl CpuBackend {
    /// A backend on `threads` worker threads (0: one per core).
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|k| format!("sslf-cpu-{k}"))
            .build()
            .map_err(|e| Error::Device(format!("cannot start the CPU thread pool: {e}")))?;
        Ok(CpuBackend { pool })
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
