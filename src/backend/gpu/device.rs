//! Opening a device: which adapter (hardware first, GL only when asked), with the adapter's own
//! limits and features, and every pipeline built once.

use super::*;

/// The wgpu back ends to look at: `asked`, else `WGPU_BACKEND`, else Vulkan, Metal and DX12 (GL
/// only when named: it lacks subgroups, and probing EGL prints noise).
fn backends(asked: Option<wgpu::Backends>) -> Result<wgpu::Backends> {
    if let Some(b) = asked {
        return Ok(b);
    }
    match std::env::var("WGPU_BACKEND") {
        Ok(v) => {
            let b = wgpu::Backends::from_comma_list(&v);
            if b.is_empty() {
                return Err(Error::Config {
                    file: "environment".into(),
                    path: "WGPU_BACKEND".into(),
                    message: format!(
                        "`{v}` names no wgpu back end (vulkan, metal, dx12 or gl, comma-separated)"
                    ),
                });
            }
            Ok(b)
        }
        Err(_) => Ok(wgpu::Backends::PRIMARY),
    }
}

fn adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    let inst = wgpu::Instance::new(desc);
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
fn pick_adapter(hardware_only: bool, asked: Option<wgpu::Backends>) -> Result<wgpu::Adapter> {
    let backends = backends(asked)?;
    let mut all = adapters(backends);
    if all.is_empty() {
        let hint = if backends == wgpu::Backends::GL {
            "install a GL driver with EGL, e.g. libegl1 and libgl1-mesa-dri"
        } else {
            "install a Vulkan driver, e.g. mesa-vulkan-drivers"
        };
        return Err(Error::Device(format!(
            "no wgpu adapter found among {backends:?} ({hint})"
        )));
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
pub fn list_adapters() -> Result<Vec<String>> {
    let mut all = adapters(backends(None)?);
    all.sort_by_key(preference);
    let lines = all
        .iter()
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
        .collect();
    Ok(lines)
}

impl GpuBackend {
    /// Opens the preferred adapter, software ones included (lavapipe).
    pub fn new(opts: &GpuOptions) -> Result<Self> {
        Self::open(pick_adapter(false, opts.backends)?, opts)
    }

    /// Opens a hardware adapter, or fails.
    pub fn new_hardware(opts: &GpuOptions) -> Result<Self> {
        Self::open(pick_adapter(true, opts.backends)?, opts)
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
                    let m = validated(&device, kernel, |d| {
                        d.create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(file),
                            source: wgpu::ShaderSource::Wgsl(src.into()),
                        })
                    })?;
                    modules.insert(file, m);
                    &modules[file]
                }
            };
            let pipeline = validated(&device, kernel, |d| {
                d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&format!("sslf::{}", kernel.entry())),
                    layout: None,
                    module,
                    entry_point: Some(kernel.entry()),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })?;
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
}

/// Runs `make` on `device` inside a validation error scope; a validation error is a
/// `Shader` error naming `kernel` and its file.
fn validated<T>(
    device: &wgpu::Device,
    kernel: Kernel,
    make: impl FnOnce(&wgpu::Device) -> T,
) -> Result<T> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let made = make(device);
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(Error::Shader {
            kernel: kernel.entry().into(),
            file: kernel.file().into(),
            message: e.to_string(),
        }),
        None => Ok(made),
    }
}
