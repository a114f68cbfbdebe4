//! The CPU backend: host vectors (`Vec<f32>`) and host CSR/CSC, computed with rayon on a pool of a
//! chosen size. Every reduction adds fixed-size partials in order, so results are bitwise
//! reproducible for any thread count.

mod lanes;
mod precond;
mod sparse;

pub use precond::CpuPrecond;
pub use sparse::{CpuEntries, CpuMatrix, PLAN_ROWS};
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
    pair_max_bytes: usize,
    plan_rows: usize,
    /// Whether the sparse passes run their AVX2 build (x86_64 CPUs that have it).
    wide: bool,
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
            pair_max_bytes: PAIR_MAX_BYTES,
            plan_rows: PLAN_ROWS,
            wide: avx2(),
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
    /// row, `Some(n)` in tiles of n rows × n columns (the fused passes: a plan of [`PLAN_ROWS`]
    /// rows × n columns, built when a matrix is uploaded), `None` picks n from the rank
    /// ([`auto_tile`]) where tiles pay.
    pub fn with_tile_items(mut self, tile_items: Option<usize>) -> Self {
        self.tile_items = tile_items;
        self
    }

    /// The same backend with another bound on the side-by-side table a curvature pass builds of
    /// the other side's θ and direction rows ([`PAIR_MAX_BYTES`] by default; 0 never builds one,
    /// and the pass reads the two arrays apart). Results do not depend on it.
    pub fn with_pair_limit(mut self, bytes: usize) -> Self {
        self.pair_max_bytes = bytes;
        self
    }

    /// The same backend with another number of rows per group of the fused pass's tile plan
    /// ([`PLAN_ROWS`] by default, at most 65,536). Results do not depend on it.
    pub fn with_plan_rows(mut self, rows: usize) -> Self {
        self.plan_rows = rows.clamp(1, 1 << 16);
        self
    }

    /// The same backend with the sparse passes' AVX2 build allowed (the default, where the CPU
    /// has AVX2) or not. Results do not depend on it.
    pub fn with_avx2(mut self, allow: bool) -> Self {
        self.wide = allow && avx2();
        self
    }

    /// Whether the sparse passes run their AVX2 build.
    pub(crate) fn wide(&self) -> bool {
        self.wide
    }

    /// The AVX lanes' token, where the sparse passes run their AVX2 build.
    #[cfg(target_arch = "x86_64")]
    fn avx(&self) -> Option<lanes::Avx> {
        if self.wide {
            lanes::Avx::detect()
        } else {
            None
        }
    }

    /// Whether a curvature pass over `other` rows of rank `f` reads them from one side-by-side
    /// table of θ and direction rows.
    pub(crate) fn pairs(&self, f: usize, other: usize) -> bool {
        f > 0 && other * 2 * f * 4 <= self.pair_max_bytes
    }

    /// The tile size in force for a pass that reduces `nnz` entries over `own` rows, gathering
    /// from `other` rows (None: untiled). A size that was set is used as it is; the default
    /// ([`auto_tile`]) is used only where it pays (see [`tiles_pay`]).
    pub(crate) fn tile(&self, f: usize, own: usize, other: usize, nnz: usize) -> Option<usize> {
        self.tile_where(f, |t| tiles_pay(t, own, other, nnz))
    }

    /// The columns per tile of the fused pass's tile plan over `other` columns (None: no plan). A
    /// size that was set is used as it is (up to 65,536); the default ([`auto_tile`]) only where
    /// it pays (see [`plan_pays`]).
    pub(crate) fn plan_tile(&self, f: usize, other: usize) -> Option<usize> {
        self.tile_where(f, |t| plan_pays(t, other))
            .filter(|&n| n <= 1 << 16)
    }

    /// `cpu.tile_items` as set (0: none), or else the default tile at rank `f` where `pays` it.
    fn tile_where(&self, f: usize, pays: impl FnOnce(usize) -> bool) -> Option<usize> {
        match self.tile_items {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                let t = auto_tile(f);
                pays(t).then_some(t)
            }
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

/// Whether this CPU has AVX2.
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The largest side-by-side table of the other side's θ and direction rows a curvature pass
/// builds by default (64 MiB: 262,144 rows at rank 32): the table is a copy per pass, worth it
/// while it is small beside the pass's own traffic.
pub const PAIR_MAX_BYTES: usize = 64 << 20;

/// The L2 a tile's item rows may fill: the 1 MiB of L2 per core of common server CPUs.
pub const TILE_BUDGET_BYTES: usize = 1 << 20;

/// The default tile size at rank `f`: the most item rows (a multiple of 64, at least 64) whose
/// rows of every item-side array a pass touches fit [`TILE_BUDGET_BYTES`]: θ's and v's rows and
/// the fused accumulator's, with their biases, (3f + 3) floats per item. The user side of a tile
/// streams through once per tile and is not counted. Rank 32: 2,624; rank 128: 640.
pub fn auto_tile(f: usize) -> usize {
    (TILE_BUDGET_BYTES / tiled_row_bytes(f) / 64 * 64).max(64)
}

/// Bytes of one other-side row across the arrays a pass gathers: (3f + 3) floats.
fn tiled_row_bytes(f: usize) -> usize {
    (3 * f + 3) * std::mem::size_of::<f32>()
}

/// Whether tiles of `t` pay for a pass over `own` rows with `nnz` entries gathering from `other`
/// rows. A tile brings `t` other rows into L2, but it visits each own row once per
/// tile, reloading that row's state; that pays when a visit finds several entries (the mean
/// `nnz / own · t / other` ≥ 4). Never when all other rows fit one tile. Measured on a 2-core VM
/// at rank 32 (benches/RESULTS.md, 2026-12-04): 100k users × 50k items × 20M entries (10.5 per
/// visit) is faster tiled (gradient 309–320 ms against 358); where a visit finds 2.6 entries or
/// fewer the untiled pass, which prefetches the rows it gathers, is level or faster, even when the
/// other side's rows are far past L3 (1M × 200k: 1,090–1,171 ms against 1,475–1,592 tiled;
/// 200k × 400k two-pass: 1,094–1,100 against 1,356–1,375).
pub fn tiles_pay(t: usize, own: usize, other: usize, nnz: usize) -> bool {
    if other <= t {
        return false;
    }
    nnz as f64 / own.max(1) as f64 * t as f64 / other as f64 >= 4.0
}

/// Whether the fused pass's tile plan pays with tiles of `t` columns: whenever the other side's
/// rows do not fit one tile. Unlike the cursor walk ([`tiles_pay`]), a plan costs nothing per
/// visit, so even a tile that finds each column about once is no slower: measured on a 2-core VM
/// at rank 32 (benches/RESULTS.md, 2026-12-04), 1M users × 20k / 50k / 200k items × 20M entries
/// (8, 3.3 and 0.8 entries per column and tile of [`PLAN_ROWS`] users), the plan's gradient took
/// 25–30%, 30% and 5–10% less time than the untiled pass.
pub fn plan_pays(t: usize, other: usize) -> bool {
    other > t
}

/// Whether the loss pass walks the fused passes' plan (groups of `rows` of the `own` rows, `nnz`
/// entries over `other` columns) rather than the rows' cursors: where a tile of the plan finds
/// each column twice or more on average. The loss gathers one array, not three, and a plan visits
/// a row's θ once per entry, not once per row: measured on a 2-core VM at rank 32
/// (benches/RESULTS.md, 2026-12-05), 1M users × 20k / 50k / 200k items × 20M entries (8.2, 3.3
/// and 0.8 per column and tile of [`PLAN_ROWS`] users), the plan's loss took 10–20% and 22–25%
/// less time, and 7% more.
pub fn plan_pays_for_loss(rows: usize, own: usize, other: usize, nnz: usize) -> bool {
    nnz as f64 / own.max(1) as f64 * rows as f64 / other.max(1) as f64 >= 2.0
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
                    None => "tiles where they pay".to_string(),
                }
            ),
            device_type: "Host".into(),
        }
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
