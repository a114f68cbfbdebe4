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
//!   encoder is submitted whenever the pool is used up, so no buffer is rewritten under recorded
//!   commands. Kernels and solvers do not know.
//! - **Determinism.** No atomics; per-workgroup partials in fixed order, summed in f64 here.

pub mod blocking;
mod ops;
pub mod precond;
pub mod shaders;

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
/// Dispatches recorded before a forced submit.
const RING_SLOTS: usize = 1024;

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
}

impl Default for GpuOptions {
    /// The adapter's own binding limit, subgroups when the adapter has them, everything resident.
    fn default() -> Self {
        GpuOptions {
            max_chunk_bytes: None,
            subgroups: true,
            max_resident_bytes: None,
        }
    }
}

/// Buffers in the streaming pool: a tile takes two (row offsets, entries), so up to 4 tiles are
/// recorded between two submits.
const STREAM_SLOTS: usize = 8;
/// Largest rating chunk when streaming (each pool buffer holds one).
const STREAM_CHUNK: u64 = 64 << 20;

/// Rating arrays of one tile: on the device, or in host memory to be streamed.
pub(crate) enum Stored {
    Device {
        bufs: Vec<wgpu::Buffer>,
        /// Held for its `Drop`.
        _resident: Resident,
    },
    Host(Vec<Vec<u32>>),
}

/// Bytes counted against the resident budget, given back when the arrays are dropped.
pub(crate) struct Resident {
    bytes: u64,
    counter: Arc<AtomicU64>,
}

impl Drop for Resident {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A device-resident f32 vector: one buffer per segment of its [`Blocking`].
pub struct GpuVector {
    segs: Vec<wgpu::Buffer>,
    blocking: Arc<Blocking>,
}

impl GpuVector {
    /// Buffers (storage bindings) the vector is split into.
    pub fn segments(&self) -> usize {
        self.segs.len()
    }
}

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

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn adapters() -> Vec<wgpu::Adapter> {
    let inst = instance();
    // GL is left out unless WGPU_BACKEND asks for it: it lacks subgroups, and probing EGL prints noise.
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    pollster::block_on(inst.enumerate_adapters(backends))
}

fn preference(a: &wgpu::Adapter) -> u32 {
    let i = a.get_info();
    let kind = match i.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    // Compute-capable APIs before GL (GL has no subgroups and smaller limits).
    let api = match i.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    kind * 2 + api
}

fn is_hardware(a: &wgpu::Adapter) -> bool {
    !matches!(a.get_info().device_type, wgpu::DeviceType::Cpu)
        && a.get_info().backend != wgpu::Backend::Gl
}

/// Picks an adapter: `WGPU_ADAPTER_NAME` (a case-insensitive substring) if set, else the most
/// preferred (discrete, integrated, virtual, other, CPU; Vulkan/Metal/DX12 before GL).
fn pick_adapter(hardware_only: bool) -> Result<wgpu::Adapter> {
    let mut all = adapters();
    if all.is_empty() {
        return Err(Error::Device(
            "no wgpu adapter found (install a Vulkan driver, e.g. mesa-vulkan-drivers)".into(),
        ));
    }
    if let Ok(want) = std::env::var("WGPU_ADAPTER_NAME") {
        let want = want.to_lowercase();
        let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
        return all
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want))
            .ok_or_else(|| {
                Error::Device(format!(
                    "WGPU_ADAPTER_NAME={want} matches none of: {}",
                    names.join(", ")
                ))
            });
    }
    all.sort_by_key(preference);
    let first = all.into_iter().next().expect("not empty");
    if hardware_only && !is_hardware(&first) {
        return Err(Error::Device(format!(
            "only a software adapter is present ({})",
            first.get_info().name
        )));
    }
    Ok(first)
}

/// One line per adapter with its type, API and the limits sslf depends on.
pub fn list_adapters() -> Vec<String> {
    let mut all = adapters();
    all.sort_by_key(preference);
    all.iter()
        .map(|a| {
            let i = a.get_info();
            let l = a.limits();
            format!(
                "{} | {:?} | {:?} | driver {} {} | max_storage_buffer_binding_size {} | max_buffer_size {} | max_storage_buffers_per_shader_stage {} | max_compute_workgroups_per_dimension {} | subgroups {} (size {}..{})",
                i.name,
                i.device_type,
                i.backend,
                i.driver,
                i.driver_info,
                l.max_storage_buffer_binding_size,
                l.max_buffer_size,
                l.max_storage_buffers_per_shader_stage,
                l.max_compute_workgroups_per_dimension,
                a.features().contains(wgpu::Features::SUBGROUP),
                i.subgroup_min_size,
                i.subgroup_max_size
            )
        })
        .collect()
}

impl GpuBackend {
    /// Opens the preferred adapter, software ones included (lavapipe).
    pub fn new(opts: &GpuOptions) -> Result<Self> {
        Self::open(pick_adapter(false)?, opts)
    }

    /// Opens a hardware adapter, or fails.
    pub fn new_hardware(opts: &GpuOptions) -> Result<Self> {
        Self::open(pick_adapter(true)?, opts)
    }

    /// Opens a device on `adapter` with its own limits.
    pub fn open(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let subgroups = opts.subgroups && adapter.features().contains(wgpu::Features::SUBGROUP);
        let features = if subgroups {
            wgpu::Features::SUBGROUP
        } else {
            wgpu::Features::empty()
        };
        if limits.max_storage_buffers_per_shader_stage < 8 {
            return Err(Error::Device(format!(
                "{} offers {} storage buffers per shader stage; sslf's kernels need 8",
                info.name, limits.max_storage_buffers_per_shader_stage
            )));
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("sslf"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::Device(format!("cannot open {}: {e}", info.name)))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().expect("error sink").push(e.to_string());
        }));

        let mut binding_cap = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        binding_cap -= binding_cap % 16;
        let mut chunk_cap = binding_cap;
        if let Some(c) = opts.max_chunk_bytes {
            chunk_cap = chunk_cap.min(c - c % 16);
        }
        // Streamed chunks pass through pool buffers of at most STREAM_CHUNK bytes.
        let tile_cap = match opts.max_resident_bytes {
            Some(_) => chunk_cap.min(STREAM_CHUNK),
            None => chunk_cap,
        };

        let mut pipelines = HashMap::new();
        let mut modules = HashMap::new();
        for kernel in Kernel::ALL {
            if kernel.subgroup_only() && !subgroups {
                continue;
            }
            let file = kernel.file();
            let module = match modules.get(file) {
                Some(m) => m,
                None => {
                    let src = shaders::module_source(file, subgroups)?;
                    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
                    let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(file),
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    });
                    if let Some(e) = pollster::block_on(scope.pop()) {
                        return Err(Error::Shader {
                            kernel: kernel.entry().into(),
                            file: file.into(),
                            message: e.to_string(),
                        });
                    }
                    modules.insert(file, m);
                    &modules[file]
                }
            };
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&format!("sslf::{}", kernel.entry())),
                layout: None,
                module,
                entry_point: Some(kernel.entry()),
                compilation_options: Default::default(),
                cache: None,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Shader {
                    kernel: kernel.entry().into(),
                    file: file.into(),
                    message: e.to_string(),
                });
            }
            pipelines.insert(kernel, pipeline);
        }

        let buf = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let state = State {
            encoder: None,
            params: vec![0u8; RING_SLOTS * SLOT as usize],
            slots: 0,
            ring: buf(
                "sslf::params",
                RING_SLOTS as u64 * SLOT,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            ),
            partials: buf("sslf::partials", 4 * 4096, storage),
            staging: buf(
                "sslf::staging",
                4 * 4096,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            scratch: buf("sslf::scratch", 16, storage),
            glob: buf(
                "sslf::glob",
                GLOB_BYTES,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            ),
            dummy: [
                buf("sslf::dummy0", 16, storage),
                buf("sslf::dummy1", 16, storage),
            ],
            stream: Vec::new(),
            stream_taken: 0,
        };
        Ok(GpuBackend {
            device,
            queue,
            info,
            limits,
            subgroups,
            binding_cap,
            chunk_cap,
            tile_cap,
            blockings: Mutex::default(),
            max_resident: opts.max_resident_bytes,
            resident: Arc::default(),
            streamed: AtomicU64::new(0),
            pipelines,
            state: Mutex::new(state),
            errors,
            allocated: AtomicU64::new(0),
        })
    }

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

    /// Floats per vector segment.
    fn seg_cap(&self) -> usize {
        (self.chunk_cap / 4) as usize
    }

    /// The blocking of θ for `layout` (one per shape, shared).
    fn param_blocking(&self, layout: &Layout) -> Result<Arc<Blocking>> {
        if layout.kind == crate::model::ModelKind::Udv && layout.rank > 1024 {
            return Err(Error::Unsupported(format!(
                "the GPU backend takes UDV^T ranks up to 1024, not {}",
                layout.rank
            )));
        }
        let same = |l: &Layout| {
            (l.kind, l.n_users, l.n_items, l.rank, l.has_biases())
                == (
                    layout.kind,
                    layout.n_users,
                    layout.n_items,
                    layout.rank,
                    layout.has_biases(),
                )
        };
        let mut cache = self.blockings.lock().expect("blocking cache");
        if let Some((_, b)) = cache.iter().find(|(l, _)| same(l)) {
            return Ok(b.clone());
        }
        let b = Arc::new(Blocking::params(layout, self.seg_cap())?);
        cache.push((*layout, b.clone()));
        Ok(b)
    }

    /// Bytes of device buffers sslf has created for data and vectors.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    fn check_errors(&self) -> Result<()> {
        let mut e = self.errors.lock().expect("error sink");
        if e.is_empty() {
            Ok(())
        } else {
            let msg = e.join("; ");
            e.clear();
            Err(Error::Device(msg))
        }
    }

    /// Creates a storage buffer of `bytes` (at least 16), checking it against the binding cap and
    /// catching out-of-memory.
    fn storage_buffer(&self, what: &str, bytes: u64, data: Option<&[u8]>) -> Result<wgpu::Buffer> {
        if bytes > self.binding_cap {
            return Err(Error::DeviceMemory {
                what: what.into(),
                needed: bytes,
                available: format!(
                    "one storage binding on {} holds at most {} bytes",
                    self.info.name, self.binding_cap
                ),
            });
        }
        let size = bytes.max(16).div_ceil(4) * 4;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::DeviceMemory {
                what: what.into(),
                needed: size,
                available: format!(
                    "{} ran out of memory after sslf had created {} bytes of buffers ({e}); rating \
                     data can stay in host memory and stream: set gpu.max_resident_bytes",
                    self.info.name,
                    self.allocated_bytes()
                ),
            });
        }
        if let Some(d) = data {
            if !d.is_empty() {
                self.queue.write_buffer(&buf, 0, d);
            }
        }
        self.allocated.fetch_add(size, Ordering::Relaxed);
        Ok(buf)
    }

    /// Grid for `n` items at 256 per workgroup, capped at `cap` workgroups.
    fn groups(n: usize, cap: u32) -> u32 {
        (n.div_ceil(256) as u64).min(cap as u64).max(1) as u32
    }

    /// Records one dispatch. `bind` lists (binding, buffer) for bindings 1.. of the kernel.
    fn dispatch(
        &self,
        st: &mut State,
        kernel: Kernel,
        params: Params,
        bind: &[(u32, &wgpu::Buffer)],
        groups: u32,
    ) {
        if st.slots == RING_SLOTS {
            self.flush(st);
        }
        let slot = st.slots;
        let off = slot * SLOT as usize;
        st.params[off..off + std::mem::size_of::<Params>()]
            .copy_from_slice(bytemuck::bytes_of(&params));
        st.slots += 1;
        let pipeline = &self.pipelines[&kernel];
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &st.ring,
                offset: off as u64,
                size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
            }),
        }];
        for (b, buf) in bind {
            entries.push(wgpu::BindGroupEntry {
                binding: *b,
                resource: buf.as_entire_binding(),
            });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.entry()),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let enc = self.encoder(st);
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(kernel.entry()),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups, 1, 1);
    }

    /// The open command encoder, begun if there is none.
    fn encoder<'s>(&self, st: &'s mut State) -> &'s mut wgpu::CommandEncoder {
        st.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("sslf"),
                })
        })
    }

    /// Submits what is recorded.
    fn flush(&self, st: &mut State) -> Option<wgpu::SubmissionIndex> {
        let enc = st.encoder.take()?;
        if st.slots > 0 {
            self.queue
                .write_buffer(&st.ring, 0, &st.params[..st.slots * SLOT as usize]);
        }
        st.slots = 0;
        st.stream_taken = 0;
        Some(self.queue.submit([enc.finish()]))
    }

    /// Keeps rating arrays (row offsets, entries or triplets) on the device while the resident
    /// budget allows, else in host memory for streaming.
    fn store_arrays(&self, what: &str, arrays: Vec<Vec<u32>>) -> Result<Stored> {
        let bytes: u64 = arrays.iter().map(|a| a.len() as u64 * 4).sum();
        if let Some(budget) = self.max_resident {
            if self.resident.load(Ordering::Relaxed) + bytes > budget {
                return Ok(Stored::Host(arrays));
            }
        }
        let mut bufs = Vec::with_capacity(arrays.len());
        for a in &arrays {
            bufs.push(self.storage_buffer(
                what,
                a.len() as u64 * 4,
                Some(bytemuck::cast_slice(a)),
            )?);
        }
        self.resident.fetch_add(bytes, Ordering::Relaxed);
        Ok(Stored::Device {
            bufs,
            _resident: Resident {
                bytes,
                counter: self.resident.clone(),
            },
        })
    }

    /// Buffers holding `stored`'s arrays for the next dispatch: its own when resident, else pool
    /// buffers filled from host memory (submitting first when the pool is used up, so no buffer
    /// is rewritten under recorded commands).
    fn bind_stored(&self, st: &mut State, stored: &Stored) -> Result<Vec<wgpu::Buffer>> {
        let arrays = match stored {
            Stored::Device { bufs, .. } => return Ok(bufs.clone()),
            Stored::Host(arrays) => arrays,
        };
        if st.stream.is_empty() {
            for k in 0..STREAM_SLOTS {
                let b = self.storage_buffer(&format!("sslf::stream{k}"), self.tile_cap, None)?;
                st.stream.push(b);
            }
        }
        if st.stream_taken + arrays.len() > st.stream.len() {
            self.flush(st);
        }
        let mut out = Vec::with_capacity(arrays.len());
        for a in arrays {
            let buf = st.stream[st.stream_taken].clone();
            st.stream_taken += 1;
            if !a.is_empty() {
                self.queue.write_buffer(&buf, 0, bytemuck::cast_slice(a));
                self.streamed
                    .fetch_add(a.len() as u64 * 4, Ordering::Relaxed);
            }
            out.push(buf);
        }
        Ok(out)
    }

    /// Bytes of rating data resident on the device.
    pub fn resident_data_bytes(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// Bytes of rating data streamed from host memory so far.
    pub fn streamed_bytes(&self) -> u64 {
        self.streamed.load(Ordering::Relaxed)
    }

    /// Ensures the partials buffer holds `n` floats.
    fn reserve_partials(&self, st: &mut State, n: usize) {
        let bytes = (n as u64 * 4).max(16);
        if st.partials.size() < bytes {
            let storage = wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST;
            st.partials = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("sslf::partials"),
                size: bytes,
                usage: storage,
                mapped_at_creation: false,
            });
            st.staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("sslf::staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
        }
    }

    /// Ensures the UDV scratch holds `n` floats.
    fn reserve_scratch(&self, st: &mut State, n: usize) -> Result<()> {
        let bytes = (n as u64 * 4).max(16);
        if st.scratch.size() < bytes {
            st.scratch = self.storage_buffer("UDV d-block scratch", bytes, None)?;
        }
        Ok(())
    }

    /// Copies `src[..bytes]` to the staging buffer, submits everything pending, waits and returns
    /// the bytes.
    fn read_back(&self, st: &mut State, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let bytes = bytes.max(4);
        if st.staging.size() < bytes {
            st.staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("sslf::staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
        }
        let staging = st.staging.clone();
        self.encoder(st)
            .copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        let idx = self.flush(st).expect("encoder was just used");
        let (tx, rx) = std::sync::mpsc::channel();
        st.staging
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(idx),
                timeout: None,
            })
            .map_err(|e| Error::Device(format!("waiting for the device: {e}")))?;
        self.check_errors()?;
        rx.recv()
            .map_err(|_| Error::Device("buffer map callback never ran".into()))?
            .map_err(|e| Error::Device(format!("cannot map the staging buffer: {e}")))?;
        let out = {
            let view = st
                .staging
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| Error::Device(format!("cannot read the staging buffer: {e}")))?;
            view.to_vec()
        };
        st.staging.unmap();
        Ok(out)
    }

    /// Reads `n` partials and returns them as f32.
    fn read_partials(&self, st: &mut State, n: usize) -> Result<Vec<f32>> {
        let partials = st.partials.clone();
        let bytes = self.read_back(st, &partials, n as u64 * 4)?;
        Ok(bytemuck::cast_slice::<u8, f32>(&bytes[..n * 4]).to_vec())
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
