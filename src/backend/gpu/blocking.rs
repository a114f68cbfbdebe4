//! How a vector's flat index space maps onto device buffers ("segments"), each at most one storage
//! binding long.
//!
//! - A **flat** vector is cut into consecutive segments of at most `cap` floats.
//! - A **parameter** vector (θ of a model, and every vector laid out like it) that fits one
//!   binding is one segment holding the host layout `[P | Q | b | c | d]` unchanged. One that does
//!   not is cut into **row blocks**: each block of users (items) is one segment holding the block's
//!   factor rows followed by its biases, and d (UDV) has a segment of its own. A row pass then binds
//!   one block of its own side and one block of the other side at a time (see `GpuMatrix`), so no
//!   kernel ever needs more than one binding per side.
//!
//! The blocking depends only on the layout and the cap, so two vectors of the same model always
//! agree, and reductions over them run in one fixed order.

use crate::error::{Error, Result};
use crate::model::{Layout, ModelKind};
use std::ops::Range;

/// A contiguous run of the flat index space stored contiguously in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// First flat index.
    pub flat: usize,
    pub len: usize,
    pub seg: usize,
    /// Offset (floats) of `flat` in the segment.
    pub off: usize,
}

/// A run of rows of one side that lives in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowBlock {
    /// Global row indices.
    pub rows: Range<usize>,
    pub seg: usize,
    /// Offset (floats) of the block's first factor row in the segment.
    pub factor_off: usize,
    /// Offset (floats) of the block's first bias in the segment (LF with biases).
    pub bias_off: usize,
}

/// The row blocks of a parameter vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamBlocks {
    pub users: Vec<RowBlock>,
    pub items: Vec<RowBlock>,
    /// (segment, offset) of d (UDV).
    pub d: Option<(usize, usize)>,
}

/// The segments of a vector and where each flat index lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocking {
    pub len: usize,
    /// Floats per segment (one device buffer each).
    pub segs: Vec<usize>,
    /// Ascending by `flat`, covering `0..len` exactly once.
    pub pieces: Vec<Piece>,
    /// Row blocks, for parameter vectors.
    pub params: Option<ParamBlocks>,
}

impl Blocking {
    /// Consecutive segments of at most `cap` floats (one empty segment when `len` is 0).
    pub fn flat(len: usize, cap: usize) -> Blocking {
        let cap = cap.max(1);
        let mut segs = Vec::new();
        let mut pieces = Vec::new();
        for r in crate::backend::partition(len, cap) {
            pieces.push(Piece {
                flat: r.start,
                len: r.len(),
                seg: segs.len(),
                off: 0,
            });
            segs.push(r.len());
        }
        if segs.is_empty() {
            segs.push(0);
        }
        Blocking {
            len,
            segs,
            pieces,
            params: None,
        }
    }

    /// The blocking of θ for `layout` with segments of at most `cap` floats.
    pub fn params(layout: &Layout, cap: usize) -> Result<Blocking> {
        let len = layout.len();
        let f = layout.rank;
        let (m, n) = (layout.n_users, layout.n_items);
        let d = (layout.kind == ModelKind::Udv).then(|| layout.d_off());
        if len <= cap {
            let mut b = Blocking::flat(len, len.max(1));
            b.params = Some(ParamBlocks {
                users: vec![RowBlock {
                    rows: 0..m,
                    seg: 0,
                    factor_off: layout.p_off(),
                    bias_off: layout.b_off(),
                }],
                items: vec![RowBlock {
                    rows: 0..n,
                    seg: 0,
                    factor_off: layout.q_off(),
                    bias_off: layout.c_off(),
                }],
                d: d.map(|off| (0, off)),
            });
            return Ok(b);
        }
        let bias = usize::from(layout.has_biases());
        let per_row = f + bias;
        let rows_per = cap / per_row;
        if rows_per == 0 || (d.is_some() && f > cap) {
            return Err(Error::DeviceMemory {
                what: format!("one parameter row ({per_row} floats)"),
                needed: per_row as u64 * 4,
                available: format!("one storage binding holds {} bytes", cap * 4),
            });
        }
        let mut segs = Vec::new();
        let mut pieces = Vec::new();
        let mut side = |rows: usize, f_off: usize, b_off: usize| -> Vec<RowBlock> {
            let mut blocks = Vec::new();
            let mut ranges: Vec<Range<usize>> = crate::backend::partition(rows, rows_per).collect();
            if ranges.is_empty() {
                ranges.push(0..0);
            }
            for r in ranges {
                let seg = segs.len();
                let k = r.len();
                segs.push(k * per_row);
                pieces.push(Piece {
                    flat: f_off + r.start * f,
                    len: k * f,
                    seg,
                    off: 0,
                });
                if bias == 1 {
                    pieces.push(Piece {
                        flat: b_off + r.start,
                        len: k,
                        seg,
                        off: k * f,
                    });
                }
                blocks.push(RowBlock {
                    rows: r,
                    seg,
                    factor_off: 0,
                    bias_off: k * f,
                });
            }
            blocks
        };
        let users = side(m, layout.p_off(), layout.b_off());
        let items = side(n, layout.q_off(), layout.c_off());
        let d = d.map(|off| {
            let seg = segs.len();
            segs.push(f);
            pieces.push(Piece {
                flat: off,
                len: f,
                seg,
                off: 0,
            });
            (seg, 0)
        });
        pieces.retain(|p| p.len > 0);
        pieces.sort_by_key(|p| p.flat);
        Ok(Blocking {
            len,
            segs,
            pieces,
            params: Some(ParamBlocks { users, items, d }),
        })
    }

    /// Whether element-wise ops may pair these vectors: same segments, same lengths.
    pub fn compatible(&self, other: &Blocking) -> bool {
        self.len == other.len && self.segs == other.segs && self.pieces == other.pieces
    }

    /// The (segment, in-segment range) pieces of a flat range, in flat order.
    pub fn ranges(&self, range: Range<usize>) -> Vec<(usize, Range<usize>)> {
        let mut out: Vec<(usize, Range<usize>)> = Vec::new();
        for p in &self.pieces {
            let lo = range.start.max(p.flat);
            let hi = range.end.min(p.flat + p.len);
            if lo >= hi {
                continue;
            }
            let r = p.off + (lo - p.flat)..p.off + (hi - p.flat);
            match out.last_mut() {
                Some((s, last)) if *s == p.seg && last.end == r.start => last.end = r.end,
                _ => out.push((p.seg, r)),
            }
        }
        out
    }

    /// Splits a host vector into per-segment arrays.
    pub fn scatter(&self, data: &[f32]) -> Vec<Vec<f32>> {
        let mut segs: Vec<Vec<f32>> = self.segs.iter().map(|&n| vec![0.0; n]).collect();
        for p in &self.pieces {
            segs[p.seg][p.off..p.off + p.len].copy_from_slice(&data[p.flat..p.flat + p.len]);
        }
        segs
    }

    /// Writes segment `seg`'s contents into their places in a host vector.
    pub fn gather(&self, seg: usize, contents: &[f32], out: &mut [f32]) {
        for p in self.pieces.iter().filter(|p| p.seg == seg) {
            out[p.flat..p.flat + p.len].copy_from_slice(&contents[p.off..p.off + p.len]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    fn layout(kind: ModelKind, biases: bool) -> Layout {
        ModelConfig {
            kind,
            rank: 3,
            biases,
            ..Default::default()
        }
        .layout(10, 7, 3.0)
    }

    #[test]
    fn small_params_keep_the_host_layout() {
        let l = layout(ModelKind::Lf, true);
        let b = Blocking::params(&l, 1 << 20).unwrap();
        assert_eq!(b.segs, vec![l.len()]);
        let x: Vec<f32> = (0..l.len()).map(|k| k as f32).collect();
        assert_eq!(b.scatter(&x), vec![x.clone()]);
        assert_eq!(b.ranges(2..9), vec![(0, 2..9)]);
    }

    #[test]
    fn split_params_round_trip_and_map_ranges() {
        for (kind, biases) in [
            (ModelKind::Lf, true),
            (ModelKind::Lf, false),
            (ModelKind::Udv, false),
        ] {
            let l = layout(kind, biases);
            let b = Blocking::params(&l, 13).unwrap();
            let pb = b.params.as_ref().unwrap();
            assert!(pb.users.len() > 1 && pb.items.len() > 1, "{kind:?}");
            assert!(b.segs.iter().all(|&s| s <= 13));
            let covered: usize = b.pieces.iter().map(|p| p.len).sum();
            assert_eq!(covered, l.len());
            let x: Vec<f32> = (0..l.len()).map(|k| k as f32).collect();
            let segs = b.scatter(&x);
            let mut back = vec![-1.0; l.len()];
            for (k, s) in segs.iter().enumerate() {
                b.gather(k, s, &mut back);
            }
            assert_eq!(back, x);
            // Every flat index of a range is found where `ranges` says.
            let r = l.q_off() + 1..l.len() - 1;
            let mut seen = Vec::new();
            for (seg, lr) in b.ranges(r.clone()) {
                seen.extend_from_slice(&segs[seg][lr]);
            }
            let want: Vec<f32> = r.map(|k| k as f32).collect();
            assert_eq!(seen, want, "{kind:?}");
        }
    }

    #[test]
    fn a_row_wider_than_a_binding_is_an_error() {
        let l = layout(ModelKind::Lf, true);
        assert!(Blocking::params(&l, 3).is_err());
    }

    #[test]
    fn flat_blocking_cuts_by_cap() {
        let b = Blocking::flat(10, 4);
        assert_eq!(b.segs, vec![4, 4, 2]);
        assert_eq!(b.ranges(3..6), vec![(0, 3..4), (1, 0..2)]);
        assert_eq!(Blocking::flat(0, 4).segs, vec![0]);
    }
}
