//! Every user's top-N on the device (`shaders/topn.wgsl`): users in chunks whose factor rows,
//! seen lists and outputs each fit one binding; the item factors and biases in one binding each.

use super::shaders::{Kernel, Params};
use super::GpuBackend;
use crate::error::{Error, Result};
use crate::model::file::ModelFile;

/// Most items per user the kernel keeps (`TOP_MAX` in topn.wgsl).
pub const TOP_MAX: usize = 32;

impl GpuBackend {
    /// The `n` best items of each user in `users` (dense ids) of `model`, training items left
    /// out, best first, with score = r̂ (μ and both biases included): the same lists as
    /// [`ModelFile::recommend_all`], computed on the device. `n` is at most [`TOP_MAX`].
    pub fn recommend_all(
        &self,
        model: &ModelFile,
        users: &[u32],
        n: usize,
        mut emit: impl FnMut(u32, &[(u32, f32)]) -> Result<()>,
    ) -> Result<()> {
        let l = model.layout;
        if n > TOP_MAX {
            return Err(Error::Unsupported(format!(
                "the GPU top-N keeps at most {TOP_MAX} items per user, not {n}; use the CPU \
                 backend for longer lists"
            )));
        }
        if let Some(&u) = users.iter().find(|&&u| u as usize >= l.n_users) {
            return Err(Error::Unsupported(format!(
                "user index {u} is past the model's {} users",
                l.n_users
            )));
        }
        let f = l.rank;
        let theta = &model.theta;
        let mut q: Vec<f32> = theta[l.q_off()..l.q_off() + l.n_items * f].to_vec();
        if l.kind == crate::model::ModelKind::Udv {
            for row in q.chunks_mut(f) {
                for (k, x) in row.iter_mut().enumerate() {
                    *x *= theta[l.d_off() + k];
                }
            }
        }
        let c = model.item_biases();
        let q_buf = self.storage_buffer(
            "item factors",
            q.len() as u64 * 4,
            Some(bytemuck::cast_slice(&q)),
        )?;
        let c_buf = self.storage_buffer(
            "item biases",
            c.len() as u64 * 4,
            Some(bytemuck::cast_slice(&c)),
        )?;
        let cap = (self.chunk_cap / 4) as usize;
        let per_user = (f.max(n.max(1))).max(1);
        let mut start = 0;
        while start < users.len() {
            // As many users as fit every binding.
            let mut end = users.len().min(start + (cap / per_user).max(1));
            loop {
                let seen_len: usize = users[start..end]
                    .iter()
                    .map(|&u| model.seen_items(u).len())
                    .sum();
                if seen_len <= cap || end == start + 1 {
                    break;
                }
                end = start + (end - start).div_ceil(2);
            }
            let chunk = &users[start..end];
            let mut pu = Vec::with_capacity(chunk.len() * f);
            let mut ptr = vec![0u32];
            let mut seen = Vec::new();
            for &u in chunk {
                pu.extend_from_slice(
                    &theta[l.p_off() + u as usize * f..l.p_off() + (u as usize + 1) * f],
                );
                seen.extend_from_slice(model.seen_items(u));
                ptr.push(seen.len() as u32);
            }
            if seen.is_empty() {
                seen.push(u32::MAX);
            }
            let m = chunk.len();
            let b_pu = self.storage_buffer(
                "user factors",
                pu.len() as u64 * 4,
                Some(bytemuck::cast_slice(&pu)),
            )?;
            let b_ptr = self.storage_buffer(
                "seen offsets",
                ptr.len() as u64 * 4,
                Some(bytemuck::cast_slice(&ptr)),
            )?;
            let b_seen = self.storage_buffer(
                "seen items",
                seen.len() as u64 * 4,
                Some(bytemuck::cast_slice(&seen)),
            )?;
            let out_bytes = (m * n.max(1)) as u64 * 4;
            let b_item = self.storage_buffer("top-N items", out_bytes, None)?;
            let b_score = self.storage_buffer("top-N scores", out_bytes, None)?;
            let params = Params {
                n: m as u32,
                f: f as u32,
                own: l.n_items as u32,
                other: n as u32,
                ..Default::default()
            };
            let mut st = self.lock();
            self.dispatch(
                &mut st,
                Kernel::TopN,
                params,
                &[
                    (1, &b_pu),
                    (2, &q_buf),
                    (3, &c_buf),
                    (4, &b_ptr),
                    (5, &b_seen),
                    (6, &b_item),
                    (7, &b_score),
                ],
                Self::groups(m * 256, 65_535),
            );
            let items = self.read_back(&mut st, &b_item, out_bytes)?;
            let scores = self.read_back(&mut st, &b_score, out_bytes)?;
            drop(st);
            let items: &[u32] = bytemuck::cast_slice(&items[..out_bytes as usize]);
            let scores: &[f32] = bytemuck::cast_slice(&scores[..out_bytes as usize]);
            let mut list = Vec::with_capacity(n);
            for (r, &u) in chunk.iter().enumerate() {
                let base = model.user_offset(u);
                list.clear();
                for k in 0..n {
                    let i = items[r * n + k];
                    if i == u32::MAX {
                        break;
                    }
                    list.push((i, scores[r * n + k] + base));
                }
                emit(u, &list)?;
            }
            start = end;
        }
        Ok(())
    }
}
