//! BLAS-1 on host vectors with rayon. Element-wise ops split the vector into fixed chunks;
//! reductions add one f64 partial per chunk, in chunk order, so the result never depends on the
//! thread count or on scheduling.

use super::CpuBackend;
use crate::backend::{AdamHyper, VectorOps};
use crate::error::Result;
use rayon::prelude::*;
use std::ops::Range;

/// Elements per task and per reduction partial.
pub(crate) const CHUNK: usize = 1 << 14;

fn reduce(n: usize, f: impl Fn(Range<usize>) -> f64 + Sync) -> f64 {
    let partials: Vec<f64> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|k| f(k * CHUNK..((k + 1) * CHUNK).min(n)))
        .collect();
    partials.iter().sum()
}

impl VectorOps for CpuBackend {
    type Vector = Vec<f32>;

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }
    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn download(&self, v: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(v.clone())
    }
    fn read_ranges(&self, v: &Vec<f32>, ranges: &[Range<usize>]) -> Result<Vec<f32>> {
        Ok(ranges
            .iter()
            .flat_map(|r| v[r.clone()].iter().copied())
            .collect())
    }

    fn write_ranges(&self, v: &mut Vec<f32>, ranges: &[Range<usize>], data: &[f32]) -> Result<()> {
        let mut at = 0;
        for r in ranges {
            v[r.clone()].copy_from_slice(&data[at..at + r.len()]);
            at += r.len();
        }
        Ok(())
    }

    fn vec_len(&self, v: &Vec<f32>) -> usize {
        v.len()
    }

    fn abs_shift_sq(&self, x: &Vec<f32>, a: f32, out: &mut Vec<f32>) -> Result<()> {
        self.install(|| {
            out.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(o, x)| {
                    o.iter_mut().zip(x).for_each(|(o, x)| {
                        let t = x.abs() + a;
                        *o = t * t
                    })
                })
        });
        Ok(())
    }
    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        self.install(|| {
            dst.par_chunks_mut(CHUNK)
                .zip(src.par_chunks(CHUNK))
                .for_each(|(d, s)| d.copy_from_slice(s))
        });
        Ok(())
    }
    fn fill(&self, v: &mut Vec<f32>, value: f32) -> Result<()> {
        self.install(|| v.par_chunks_mut(CHUNK).for_each(|c| c.fill(value)));
        Ok(())
    }
    fn axpy(&self, a: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        self.install(|| {
            y.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x))
        });
        Ok(())
    }
    fn xpby(&self, x: &Vec<f32>, b: f32, y: &mut Vec<f32>) -> Result<()> {
        self.install(|| {
            y.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y = x + b * *y))
        });
        Ok(())
    }
    fn waxpy(&self, a: f32, x: &Vec<f32>, y: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        self.install(|| {
            out.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
                .for_each(|(o, (x, y))| {
                    for k in 0..o.len() {
                        o[k] = y[k] + a * x[k];
                    }
                })
        });
        Ok(())
    }
    fn scale(&self, a: f32, x: &mut Vec<f32>) -> Result<()> {
        self.install(|| {
            x.par_chunks_mut(CHUNK)
                .for_each(|x| x.iter_mut().for_each(|x| *x *= a))
        });
        Ok(())
    }
    fn mul_add(&self, d: &Vec<f32>, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        self.install(|| {
            y.par_chunks_mut(CHUNK)
                .zip(d.par_chunks(CHUNK).zip(x.par_chunks(CHUNK)))
                .for_each(|(y, (d, x))| {
                    for k in 0..y.len() {
                        y[k] += d[k] * x[k];
                    }
                })
        });
        Ok(())
    }
    fn dot(&self, x: &Vec<f32>, y: &Vec<f32>) -> Result<f64> {
        Ok(self.install(|| {
            reduce(x.len(), |r| {
                x[r.clone()]
                    .iter()
                    .zip(&y[r])
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum()
            })
        }))
    }
    fn wdot(&self, d: &Vec<f32>, x: &Vec<f32>, y: &Vec<f32>) -> Result<f64> {
        Ok(self.install(|| {
            reduce(x.len(), |r| {
                r.map(|k| d[k] as f64 * x[k] as f64 * y[k] as f64).sum()
            })
        }))
    }
    fn norm_sq_range(&self, x: &Vec<f32>, range: Range<usize>) -> Result<f64> {
        let s = &x[range];
        Ok(self.install(|| reduce(s.len(), |r| s[r].iter().map(|a| (*a as f64).powi(2)).sum())))
    }
    fn scale_range(&self, x: &mut Vec<f32>, range: Range<usize>, a: f32) -> Result<()> {
        self.install(|| {
            x[range]
                .par_chunks_mut(CHUNK)
                .for_each(|x| x.iter_mut().for_each(|x| *x *= a))
        });
        Ok(())
    }
    fn clamp_min_range(&self, x: &mut Vec<f32>, range: Range<usize>, lo: f32) -> Result<()> {
        self.install(|| {
            x[range]
                .par_chunks_mut(CHUNK)
                .for_each(|x| x.iter_mut().for_each(|x| *x = x.max(lo)))
        });
        Ok(())
    }
    fn adam_step(
        &self,
        theta: &mut Vec<f32>,
        g: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        h: AdamHyper,
    ) -> Result<()> {
        self.install(|| {
            theta
                .par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .zip(g.par_chunks(CHUNK))
                .for_each(|((t, (m, v)), g)| {
                    for k in 0..t.len() {
                        m[k] = h.beta1 * m[k] + (1.0 - h.beta1) * g[k];
                        v[k] = h.beta2 * v[k] + (1.0 - h.beta2) * g[k] * g[k];
                        t[k] -= h.lr * (h.c1 * m[k]) / ((h.c2 * v[k]).sqrt() + h.eps);
                    }
                })
        });
        Ok(())
    }
}
