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

use crate::data::Compressed;
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

/// One tile of a side's ratings, planned on the host: a run of rows of one own row block,
/// restricted to the columns of one row block of the other side.
#[derive(Debug, Clone, PartialEq)]
pub struct TilePlan {
    pub own: usize,
    pub other: usize,
    /// First row, relative to the own block.
    pub row_start: u32,
    pub n_rows: u32,
    /// The tiles over the same rows with `other == 0` initialise them; those with the last
    /// `other` finish them.
    pub first: bool,
    pub last: bool,
    /// `n_rows + 1` offsets into the pairs.
    pub rowptr: Vec<u32>,
    /// (column local to the other block, rating bits) pairs, columns ascending within a row.
    pub entries: Vec<u32>,
}

/// Cuts one compressed side (CSR by user or CSC by item) into tiles of at most `cap_bytes` per
/// array: for each own row block, for each block of the other side, runs of rows whose entries in
/// that block fit. Tiles come out ordered by own block, then other block, then row, and go to
/// `emit` one at a time (so only one tile is held on the host). A row whose entries within one
/// other block exceed a tile is a `DeviceMemory` error naming it.
pub fn plan_tiles(
    what: &str,
    c: &Compressed,
    own: &[RowBlock],
    other: &[RowBlock],
    cap_bytes: u64,
    mut emit: impl FnMut(TilePlan) -> Result<()>,
) -> Result<()> {
    let max_entries = (cap_bytes / 8) as usize;
    let max_rows = (cap_bytes / 4) as usize - 1;
    for (ob, blk) in own.iter().enumerate() {
        let n = blk.rows.len();
        // Per row, the first entry not yet given to a tile (columns ascend within a row).
        let mut cur: Vec<usize> = blk.rows.clone().map(|r| c.ptr[r] as usize).collect();
        for (cb, cblk) in other.iter().enumerate() {
            let ends: Vec<usize> = blk
                .rows
                .clone()
                .zip(&cur)
                .map(|(r, &from)| {
                    let row = &c.index[from..c.ptr[r + 1] as usize];
                    from + row.partition_point(|&col| (col as usize) < cblk.rows.end)
                })
                .collect();
            let mut r0 = 0;
            while r0 < n {
                let mut r1 = r0;
                let mut count = 0;
                while r1 < n && r1 - r0 < max_rows && count + ends[r1] - cur[r1] <= max_entries {
                    count += ends[r1] - cur[r1];
                    r1 += 1;
                }
                if r1 == r0 {
                    let row = blk.rows.start + r0;
                    return Err(Error::DeviceMemory {
                        what: format!("{what} row {row} ({} entries)", ends[r0] - cur[r0]),
                        needed: (ends[r0] - cur[r0]) as u64 * 8,
                        available: format!("one rating chunk holds at most {cap_bytes} bytes"),
                    });
                }
                let mut rowptr = Vec::with_capacity(r1 - r0 + 1);
                let mut entries = Vec::with_capacity(2 * count);
                rowptr.push(0u32);
                for k in r0..r1 {
                    for e in cur[k]..ends[k] {
                        entries.push(c.index[e] - cblk.rows.start as u32);
                        entries.push(c.values[e].to_bits());
                    }
                    rowptr.push((entries.len() / 2) as u32);
                }
                emit(TilePlan {
                    own: ob,
                    other: cb,
                    row_start: r0 as u32,
                    n_rows: (r1 - r0) as u32,
                    first: cb == 0,
                    last: cb + 1 == other.len(),
                    rowptr,
                    entries,
                })?;
                r0 = r1;
            }
            cur = ends;
        }
    }
    Ok(())
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

    fn blocks(sizes: &[usize]) -> Vec<RowBlock> {
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let b = RowBlock {
                    rows: start..start + n,
                    seg: 0,
                    factor_off: 0,
                    bias_off: 0,
                };
                start += n;
                b
            })
            .collect()
    }

    /// A 9 × 8 side with uneven rows (row 4 empty, row 6 dense).
    fn side() -> Compressed {
        let mut ptr = vec![0u64];
        let (mut index, mut values) = (Vec::new(), Vec::new());
        for r in 0..9u32 {
            let cols: Vec<u32> = match r {
                4 => vec![],
                6 => (0..8).collect(),
                _ => (0..8).filter(|c| (c * 3 + r) % 4 == 0).collect(),
            };
            for c in cols {
                index.push(c);
                values.push((r * 10 + c) as f32);
            }
            ptr.push(index.len() as u64);
        }
        Compressed {
            n_rows: 9,
            n_cols: 8,
            ptr,
            index,
            values,
        }
    }

    fn plan(own: &[usize], other: &[usize], cap: u64) -> Result<Vec<TilePlan>> {
        let mut out = Vec::new();
        plan_tiles("test", &side(), &blocks(own), &blocks(other), cap, |t| {
            out.push(t);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn tiles_cover_every_entry_once_in_block_order() {
        let c = side();
        for (own, other, cap) in [
            (vec![9], vec![8], 1 << 20),
            (vec![4, 5], vec![3, 5], 1 << 20),
            (vec![2, 3, 4], vec![1, 7], 64),
            (vec![9], vec![3, 5], 40),
            (vec![9], vec![8], 64),
        ] {
            let (ob, cb) = (blocks(&own), blocks(&other));
            let tiles = plan(&own, &other, cap).unwrap();
            let mut seen = vec![0u32; c.index.len()];
            let mut last_key = (0, 0, 0);
            for t in &tiles {
                let key = (t.own, t.other, t.row_start);
                assert!(key >= last_key, "order {key:?} after {last_key:?}");
                last_key = key;
                assert_eq!(t.first, t.other == 0);
                assert_eq!(t.last, t.other + 1 == other.len());
                assert_eq!(t.rowptr.len(), t.n_rows as usize + 1);
                assert!(t.rowptr.len() * 4 <= cap as usize && t.entries.len() * 4 <= cap as usize);
                for k in 0..t.n_rows as usize {
                    let row = ob[t.own].rows.start + t.row_start as usize + k;
                    let (a, b) = (t.rowptr[k] as usize, t.rowptr[k + 1] as usize);
                    for e in a..b {
                        let col = t.entries[2 * e] as usize + cb[t.other].rows.start;
                        assert!(cb[t.other].rows.contains(&col));
                        let v = f32::from_bits(t.entries[2 * e + 1]);
                        assert_eq!(v, (row * 10 + col) as f32);
                        let pos = (c.ptr[row] as usize..c.ptr[row + 1] as usize)
                            .find(|&p| c.index[p] as usize == col)
                            .unwrap();
                        seen[pos] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|&s| s == 1),
                "{own:?} {other:?} {cap}: {seen:?}"
            );
        }
    }

    #[test]
    fn a_row_wider_than_a_tile_is_named() {
        // Row 6 has 8 entries in one other block: 64 bytes, over a 56-byte cap.
        let e = plan(&[9], &[8], 56).unwrap_err().to_string();
        assert!(e.contains("test row 6 (8 entries)"), "{e}");
        assert!(plan(&[9], &[4, 4], 56).is_ok());
    }
}
