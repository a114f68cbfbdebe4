//! The command batcher: a uniform ring slot per dispatch, one open encoder, a submit only when the
//! host needs a scalar (or the ring is full), and the read-back of per-workgroup partials.

use super::*;

impl GpuBackend {
    pub(super) fn check_errors(&self) -> Result<()> {
        let mut e = self.errors.lock().expect("error sink");
        if e.is_empty() {
            Ok(())
        } else {
            let msg = e.join("; ");
            e.clear();
            Err(Error::Device(msg))
        }
    }

    /// Grid for `n` items at 256 per workgroup, capped at `cap` workgroups.
    pub(super) fn groups(n: usize, cap: u32) -> u32 {
        (n.div_ceil(256) as u64).min(cap as u64).max(1) as u32
    }

    /// Records one dispatch. `bind` lists (binding, buffer) for bindings 1.. of the kernel.
    pub(super) fn dispatch(
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
    pub(super) fn encoder<'s>(&self, st: &'s mut State) -> &'s mut wgpu::CommandEncoder {
        st.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("sslf"),
                })
        })
    }

    /// Submits what is recorded.
    pub(super) fn flush(&self, st: &mut State) -> Option<wgpu::SubmissionIndex> {
        let enc = st.encoder.take()?;
        if st.slots > 0 {
            self.queue
                .write_buffer(&st.ring, 0, &st.params[..st.slots * SLOT as usize]);
        }
        st.slots = 0;
        // The streaming pool's slots stay taken: a flush for a full ring can fall between a
        // tile's binding and its last dispatch, and a slot written again before the next submit
        // would feed that dispatch the later tile. Only `bind_stored` frees them.
        Some(self.queue.submit([enc.finish()]))
    }

    /// Ensures the partials buffer holds `n` floats.
    pub(super) fn reserve_partials(&self, st: &mut State, n: usize) {
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
    pub(super) fn reserve_scratch(&self, st: &mut State, n: usize) -> Result<()> {
        let bytes = (n as u64 * 4).max(16);
        if st.scratch.size() < bytes {
            st.scratch = self.storage_buffer("UDV d-block scratch", bytes, None)?;
        }
        Ok(())
    }

    /// Copies `src[..bytes]` to the staging buffer, submits everything pending, waits and returns
    /// the bytes.
    pub(super) fn read_back(
        &self,
        st: &mut State,
        src: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<u8>> {
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
    pub(super) fn read_partials(&self, st: &mut State, n: usize) -> Result<Vec<f32>> {
        let partials = st.partials.clone();
        let bytes = self.read_back(st, &partials, n as u64 * 4)?;
        Ok(bytemuck::cast_slice::<u8, f32>(&bytes[..n * 4]).to_vec())
    }
}
