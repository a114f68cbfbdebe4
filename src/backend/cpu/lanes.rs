//! Eight f32 lanes for the sparse passes' dot products, in two forms with the same bits: a
//! portable array and, on x86-64 CPUs with AVX2, one 256-bit register. Both add and multiply lane
//! by lane (never a fused multiply-add), so a sum built from them rounds the same way in either.
//!
//! The portable form leaves vectorising to the compiler, which splits the lanes of a dot product
//! over several narrow registers; the register form pins them to one.

use std::ops::{Add, Mul};

/// Lanes per vector.
pub(super) const LANES: usize = 8;

/// Chunks a lane sum loads per step.
const UNROLL: usize = 4;

/// A way to hold eight lanes: a zero-sized token, passed by value, that builds the vectors.
pub(super) trait Lanes: Copy {
    /// Eight lanes.
    type V: Copy + Add<Output = Self::V> + Mul<Output = Self::V>;
    /// The eight floats of `x`.
    fn load(self, x: &[f32; LANES]) -> Self::V;
    /// The lanes, in order.
    fn array(self, v: Self::V) -> [f32; LANES];
    /// Every lane zero.
    fn zero(self) -> Self::V {
        self.load(&[0.0; LANES])
    }
}

/// The portable form: arrays the compiler may vectorise as it likes.
#[derive(Clone, Copy)]
pub(super) struct Portable;

/// Eight lanes as an array.
#[derive(Clone, Copy)]
pub(super) struct Arr([f32; LANES]);

impl Add for Arr {
    type Output = Arr;
    #[inline(always)]
    fn add(self, o: Arr) -> Arr {
        Arr(std::array::from_fn(|l| self.0[l] + o.0[l]))
    }
}

impl Mul for Arr {
    type Output = Arr;
    #[inline(always)]
    fn mul(self, o: Arr) -> Arr {
        Arr(std::array::from_fn(|l| self.0[l] * o.0[l]))
    }
}

impl Lanes for Portable {
    type V = Arr;
    #[inline(always)]
    fn load(self, x: &[f32; LANES]) -> Arr {
        Arr(*x)
    }
    #[inline(always)]
    fn array(self, v: Arr) -> [f32; LANES] {
        v.0
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx::Avx;

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Lanes, LANES};
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_storeu_ps,
    };
    use std::ops::{Add, Mul};

    /// The AVX form. A value exists only where the CPU has AVX2 (see [`Avx::detect`]), so every
    /// [`Reg`] (made only through a token) lives on such a CPU.
    #[derive(Clone, Copy)]
    pub(in crate::backend::cpu) struct Avx(());

    impl Avx {
        /// The token, where this CPU has AVX2.
        pub(in crate::backend::cpu) fn detect() -> Option<Avx> {
            std::arch::is_x86_feature_detected!("avx2").then_some(Avx(()))
        }
    }

    /// Eight lanes in one register. Its operations compile to single instructions where they are
    /// inlined into a function built for AVX2 (the passes' AVX2 builds); elsewhere they are
    /// calls, correct but slow.
    #[derive(Clone, Copy)]
    pub(in crate::backend::cpu) struct Reg(__m256);

    impl Add for Reg {
        type Output = Reg;
        #[inline(always)]
        fn add(self, o: Reg) -> Reg {
            // SAFETY: a `Reg` exists only where the CPU has AVX (see `Avx`).
            Reg(unsafe { _mm256_add_ps(self.0, o.0) })
        }
    }

    impl Mul for Reg {
        type Output = Reg;
        #[inline(always)]
        fn mul(self, o: Reg) -> Reg {
            // SAFETY: as for `add`.
            Reg(unsafe { _mm256_mul_ps(self.0, o.0) })
        }
    }

    impl Lanes for Avx {
        type V = Reg;
        #[inline(always)]
        fn load(self, x: &[f32; LANES]) -> Reg {
            // SAFETY: the token proves AVX; `x` holds eight floats.
            Reg(unsafe { _mm256_loadu_ps(x.as_ptr()) })
        }
        #[inline(always)]
        fn array(self, v: Reg) -> [f32; LANES] {
            let mut out = [0f32; LANES];
            // SAFETY: the token proves AVX; `out` holds eight floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v.0) };
            out
        }
    }
}

/// Σ_k term(x₀[k], x₁[k], …) over equal-length rows, in LANES interleaved partial sums added in
/// lane order at the end (so results stay deterministic, and the same in either form). The rows
/// are viewed as LANES-wide chunks; a last partial chunk is zero-padded: its padding lanes add
/// term(0, …) = ±0 to partial sums that are never −0 (they start at +0), which leaves them as
/// they were.
#[inline(always)]
pub(super) fn lane_sum<S: Lanes, const R: usize>(
    s: S,
    rows: [&[f32]; R],
    term: impl Fn([S::V; R]) -> S::V,
) -> f32 {
    let n = rows[0].len();
    let full = n / LANES;
    let rest = n - full * LANES;
    // Loops, not `from_fn` or `map`: their closures may be compiled apart, without AVX.
    let mut chunks: [&[[f32; LANES]]; R] = [&[]; R];
    for (ch, row) in chunks.iter_mut().zip(rows) {
        *ch = row[..n].as_chunks::<LANES>().0;
    }
    let mut acc = s.zero();
    let mut x = [s.zero(); R];
    let mut c = 0;
    // Four chunks per step (rank 32 in one), their terms added in chunk order.
    while c + UNROLL <= full {
        let mut xs = [[s.zero(); R]; UNROLL];
        for (u, xs) in xs.iter_mut().enumerate() {
            for (x, ch) in xs.iter_mut().zip(&chunks) {
                *x = s.load(&ch[c + u]);
            }
        }
        for xs in xs {
            acc = acc + term(xs);
        }
        c += UNROLL;
    }
    while c < full {
        for (x, ch) in x.iter_mut().zip(&chunks) {
            *x = s.load(&ch[c]);
        }
        acc = acc + term(x);
        c += 1;
    }
    if rest > 0 {
        for (x, row) in x.iter_mut().zip(rows) {
            let mut p = [0f32; LANES];
            p[..rest].copy_from_slice(&row[full * LANES..n]);
            *x = s.load(&p);
        }
        acc = acc + term(x);
    }
    let mut sum = 0f32;
    for a in s.array(acc) {
        sum += a;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain per-lane loop the two forms must match bit for bit.
    fn reference(rows: [&[f32]; 3]) -> f32 {
        let mut acc = [0f32; LANES];
        for k in 0..rows[0].len() {
            acc[k % LANES] += rows[0][k] * rows[1][k] + rows[2][k] * rows[0][k];
        }
        let mut s = 0f32;
        for a in acc {
            s += a;
        }
        s
    }

    #[test]
    fn both_forms_give_the_plain_lane_sums_bits() {
        let val = |k: usize, seed: u64| {
            (((k as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32) / 1.3e6 - 6.0
        };
        for n in 0..70 {
            let rows: Vec<Vec<f32>> = (0..3)
                .map(|j| (0..n).map(|k| val(k, j)).collect())
                .collect();
            let r = [&rows[0][..], &rows[1][..], &rows[2][..]];
            let want = reference(r);
            let term = |[a, b, c]: [_; 3]| a * b + c * a;
            let got = lane_sum(Portable, r, term);
            assert_eq!(got.to_bits(), want.to_bits(), "portable, n = {n}");
            #[cfg(target_arch = "x86_64")]
            if let Some(avx) = Avx::detect() {
                let got = lane_sum(avx, r, |[a, b, c]| a * b + c * a);
                assert_eq!(got.to_bits(), want.to_bits(), "AVX, n = {n}");
            }
        }
    }
}
