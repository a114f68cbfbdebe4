//! The wgpu backend: device-resident vectors and rating chunks, WGSL kernels from `shaders/`, and a
//! command batcher that records dispatches until the host needs a scalar.
//!
//! - **Device setup.** The adapter's own limits and (optionally) `Features::SUBGROUP` are
//!   requested; the subgroup size is read from the adapter, never assumed.
//! - **Batching.** Each dispatch takes a 256-byte slot of a uniform ring for its `Params` and is
//!   recorded into one open command encoder. The encoder is submitted only when a reduction must
//!   be read back (a dot, a norm, a loss), when the ring is full, or at `sync`. A CG iteration is
//!   thus two submits: one ending in pᵀAp, one ending in rᵀr.
//! - **Chunking.** Every binding stays under `max_storage_buffer_binding_size` (or
//!   `gpu.max_chunk_bytes`). Vectors are cut into segments ([`blocking`]): θ larger than one
//!   binding is stored in row blocks, and the rating arrays are cut into tiles (own rows of one
//!   row block × the columns of one block of the other side, then by entry count), so a row pass
//!   binds one block per side. Every grid is at most 65,535 workgroups in x with grid-stride
//!   loops.
//! - **Streaming.** With `gpu.max_resident_bytes`, rating tiles past that budget stay in host
//!   memory and are written into a pool of 8 buffers before the dispatch that reads them; the
//!   encoder is submitted whenever the pool is used up, and only then are its buffers written
//!   again (a submit for a full command ring frees none), so no buffer is rewritten under
//!   recorded commands. Streamed and resident tiles give the same bits. Kernels and solvers do
//!   not know.
//! - **Determinism.** No atomics; per-workgroup partials in fixed order, summed in f64 here.

mod batch;
pub mod blocking;
mod buffers;
mod device;
pub mod precond;
mod serve;
pub mod shaders;
mod sparse;
mod vector;

pub use buffers::GpuVector;
pub(crate) use buffers::Stored;
pub use device::list_adapters;
pub use sparse::{GpuEntries, GpuMatrix, GpuSide};

use crate::backend::{Backend, DeviceInfo};
use crate::error::{Error, Result};
use crate::model::Layout;
use blocking::Blocking;
use shaders::{Kernel, Params};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes per uniform ring slot (≥ every adapter's min_uniform_buffer_offset_alignment, 256).
const SLOT: u64 = 256;
/// Dispatches recorded before a forced submit (one uniform slot each).
pub const RING_SLOTS: usize = 1024;

/// Choices for opening a device.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Cap on each storage binding (bytes); `None` uses the adapter's limit.
    pub max_chunk_bytes: Option<u64>,
    /// Use subgroup operations when the adapter has them.
    pub subgroups: bool,
    /// Most bytes of rating data (training tiles and evaluation entries) kept on the device;
    /// the rest stays in host memory and is streamed through a small pool of buffers before each
    /// dispatch that needs it. `None`: everything resident.
    pub max_resident_bytes: Option<u64>,
    /// The wgpu back ends to pick an adapter from (None: `WGPU_BACKEND`, else Vulkan, Metal and
    /// DX12).
    pub backends: Option<wgpu::Backends>,
}

impl Default for GpuOptions {
    /// The adapter's own binding limit, subgroups when the adapter has them, everything resident.
    fn default() -> Self {
        GpuOptions {
            max_chunk_bytes: None,
            subgroups: true,
            max_resident_bytes: None,
            backends: None,
        }
    }
}

/// Buffers in the streaming pool: a tile takes two (row offsets, entries), so up to 4 tiles are
/// recorded between two submits.
const STREAM_SLOTS: usize = 8;
/// Largest rating chunk when streaming (each pool buffer holds one).
const STREAM_CHUNK: u64 = 64 << 20;

/// Most workgroups of an element-wise grid (the per-dimension limit).
const MAX_GROUPS: u32 = 65_535;
/// Workgroups of a reduction (so at most this many partials per reduction).
const REDUCE_GROUPS: u32 = 1024;
/// Most workgroups of a row pass per tile.
const ROW_GROUPS: u32 = 4096;

/// Bytes of the uniform that carries d of θ and of the direction (2 × 1024 floats).
const GLOB_BYTES: u64 = 2 * 1024 * 4;

struct State {
    encoder: Option<wgpu::CommandEncoder>,
    params: Vec<u8>,
    slots: usize,
    ring: wgpu::Buffer,
    partials: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// rows × f scratch for the UDV d block.
    scratch: wgpu::Buffer,
    /// d of θ and of the direction, copied in before each UDV pass (model.wgsl).
    glob: wgpu::Buffer,
    /// Small stand-ins for bindings a kernel declares but a call does not use.
    dummy: [wgpu::Buffer; 2],
    /// The streaming pool (created on first use) and how many of its buffers the open encoder
    /// has taken: a buffer is rewritten only after the commands using it were submitted.
    stream: Vec<wgpu::Buffer>,
    stream_taken: usize,
}

/// The wgpu backend. One device and queue, every pipeline built once.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    subgroups: bool,
    binding_cap: u64,
    /// Largest binding of data and vector segments: `binding_cap`, or less with
    /// `gpu.max_chunk_bytes`.
    chunk_cap: u64,
    /// Largest binding of a rating chunk: `chunk_cap`, at most `STREAM_CHUNK` when streaming.
    tile_cap: u64,
    /// One blocking per model shape, shared by all its vectors.
    blockings: Mutex<Vec<(Layout, Arc<Blocking>)>>,
    /// Budget for resident rating data, and what is resident now.
    max_resident: Option<u64>,
    resident: Arc<AtomicU64>,
    /// Bytes written through the streaming pool so far.
    streamed: AtomicU64,
    pipelines: HashMap<Kernel, wgpu::ComputePipeline>,
    state: Mutex<State>,
    errors: Arc<Mutex<Vec<String>>>,
    allocated: AtomicU64,
}

impl GpuBackend {
    /// The adapter's report.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The limits the device was opened with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether kernels use subgroup operations.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }

    /// The largest storage binding used, in bytes.
    pub fn binding_cap(&self) -> u64 {
        self.binding_cap
    }

    /// The largest binding of a rating chunk or vector segment, in bytes.
    pub fn chunk_cap(&self) -> u64 {
        self.chunk_cap
    }

    /// Bytes of device buffers sslf has created for data and vectors.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Bytes of rating data resident on the device.
    pub fn resident_data_bytes(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// Bytes of rating data streamed from host memory so far.
    pub fn streamed_bytes(&self) -> u64 {
        self.streamed.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("gpu state")
    }
}

impl Backend for GpuBackend {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            backend: "gpu".into(),
            name: format!(
                "{} ({:?}, {}{}{})",
                self.info.name,
                self.info.backend,
                if self.subgroups {
                    format!(
                        "subgroups {}..{}",
                        self.info.subgroup_min_size, self.info.subgroup_max_size
                    )
                } else {
                    "no subgroups".into()
                },
                if self.chunk_cap < self.binding_cap {
                    format!(", bindings capped at {} bytes", self.chunk_cap)
                } else {
                    String::new()
                },
                match self.max_resident {
                    Some(b) => format!(", ratings past {b} bytes streamed"),
                    None => String::new(),
                }
            ),
            device_type: format!("{:?}", self.info.device_type),
        }
    }

    fn sync(&self) -> Result<()> {
        let mut st = self.lock();
        let idx = self.flush(&mut st);
        drop(st);
        if let Some(idx) = idx {
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(idx),
                    timeout: None,
                })
                .map_err(|e| Error::Device(format!("waiting for the device: {e}")))?;
        }
        self.check_errors()
    }
}
