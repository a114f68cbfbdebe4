//! The CPU backend: host vectors (`Vec<f32>`) and host CSR/CSC, computed with rayon on a pool of a
//! chosen size. Every reduction adds fixed-size partials in order, so results are bitwise
//! reproducible for any thread count.

mod precond;
mod sparse;

pub use precond::CpuPrecond;
pub use sparse::CpuEntries;
mod vector;

use super::{Backend, DeviceInfo};
use crate::error::{Error, Result};

/// How to open the CPU backend (the config's `train.threads` and `cpu` section).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuOptions {
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Tile size of the sparse passes (see [`CpuBackend::with_tile_items`]).
    pub tile_items: Option<usize>,
}

/// Rayon-parallel host backend.
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    fusion: Fusion,
    tile_items: Option<usize>,
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
            tile_items: None,
        })
    }

    /// A backend as `opts` asks.
    pub fn open(opts: &CpuOptions) -> Result<Self> {
        Ok(Self::new(opts.threads)?.with_tile_items(opts.tile_items))
    }

    /// The same backend with another fusion rule.
    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// The same backend with another tile size for the sparse passes: `Some(0)` walks row by
    /// row, `Some(n)` in tiles of n rows × n columns, `None` picks n from the rank
    /// ([`auto_tile`]).
    pub fn with_tile_items(mut self, tile_items: Option<usize>) -> Self {
        self.tile_items = tile_items;
        self
    }

    /// The tile size in force for a model of this layout (None: untiled).
    pub(crate) fn tile(&self, layout: &crate::model::Layout) -> Option<usize> {
        match self.tile_items {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(auto_tile(layout.rank)),
        }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

/// The L2 share a tile's rows may fill: the 1 MiB of L2 per core of common server CPUs.
pub const TILE_BUDGET_BYTES: usize = 1 << 20;

/// The default tile size at rank `f`: the most rows per side (a multiple of 64, at least 64)
/// such that a tile's rows of every array a pass touches fit [`TILE_BUDGET_BYTES`]. The widest
/// pass (the Hessian product with the item side fused) touches 8 f-wide rows and 3 scalars per
/// row pair: θ, v, the accumulators of the own side, and θ, v and the fused accumulator of the
/// other side. Rank 32: 960; rank 128: 192.
pub fn auto_tile(f: usize) -> usize {
    let per_pair = (8 * f + 3) * std::mem::size_of::<f32>();
    (TILE_BUDGET_BYTES / per_pair / 64 * 64).max(64)
}

impl Backend for CpuBackend {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            backend: "cpu".into(),
            name: format!(
                "{} rayon threads, {}",
                self.threads(),
                match self.tile_items {
                    Some(0) => "untiled".to_string(),
                    Some(n) => format!("tiles of {n}"),
                    None => "tiles by rank".to_string(),
                }
            ),
            device_type: "Host".into(),
        }
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
