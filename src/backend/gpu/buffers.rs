//! Device memory: vectors in the segments of their blocking, rating arrays resident or kept in
//! host memory for streaming, and the pool they stream through.

use super::*;

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
    pub(super) segs: Vec<wgpu::Buffer>,
    pub(super) blocking: Arc<Blocking>,
}

impl GpuVector {
    /// Buffers (storage bindings) the vector is split into.
    pub fn segments(&self) -> usize {
        self.segs.len()
    }
}

impl GpuBackend {
    /// Floats per vector segment.
    pub(super) fn seg_cap(&self) -> usize {
        (self.chunk_cap / 4) as usize
    }

    /// The blocking of θ for `layout` (one per shape, shared).
    pub(super) fn param_blocking(&self, layout: &Layout) -> Result<Arc<Blocking>> {
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

    /// Creates a storage buffer of `bytes` (at least 16), checking it against the binding cap and
    /// catching out-of-memory.
    pub(super) fn storage_buffer(
        &self,
        what: &str,
        bytes: u64,
        data: Option<&[u8]>,
    ) -> Result<wgpu::Buffer> {
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

    /// Keeps rating arrays (row offsets, entries or triplets) on the device while the resident
    /// budget allows, else in host memory for streaming.
    pub(super) fn store_arrays(&self, what: &str, arrays: Vec<Vec<u32>>) -> Result<Stored> {
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
    pub(super) fn bind_stored(&self, st: &mut State, stored: &Stored) -> Result<Vec<wgpu::Buffer>> {
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
            // Every dispatch that reads a pool buffer is recorded by now (tiles are bound one
            // after another), so once they are submitted the buffers may be written again.
            self.flush(st);
            st.stream_taken = 0;
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

    pub(super) fn new_vector(
        &self,
        blocking: Arc<Blocking>,
        data: Option<&[f32]>,
    ) -> Result<GpuVector> {
        let host = data.map(|d| blocking.scatter(d));
        let mut segs = Vec::with_capacity(blocking.segs.len());
        for (k, &n) in blocking.segs.iter().enumerate() {
            let bytes = host
                .as_ref()
                .map(|h| bytemuck::cast_slice::<f32, u8>(&h[k]));
            // New wgpu buffers are zero-initialised.
            segs.push(self.storage_buffer("vector", n as u64 * 4, bytes)?);
        }
        Ok(GpuVector { segs, blocking })
    }
}
