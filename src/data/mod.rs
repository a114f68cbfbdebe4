//! Host-side rating data: COO triplets with dense ids, the id maps that turn them back into the
//! original ids, CSR/CSC construction, readers, seeded splits and the synthetic generator.
//!
//! Nothing here touches a device; backends take a [`Csr`]/[`Csc`] pair and upload it.

pub mod ingest;
pub mod parquet;
pub mod read;
pub mod split;
pub mod synth;

/// Dense id map: dense index `i` stands for the original id `names[i]`. Each name is stored
/// once; the hash table holds (hash, index) pairs, so growing it never rehashes a string.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    names: Vec<String>,
    index: hashbrown::HashTable<(u64, u32)>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl PartialEq for IdMap {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names
    }
}

impl Eq for IdMap {}

impl IdMap {
    /// The map `0..n` onto the ids `"0".."n-1"` (synthetic data).
    pub fn identity(n: usize) -> Self {
        let mut m = IdMap::default();
        for i in 0..n {
            m.get_or_insert(&i.to_string());
        }
        m
    }

    /// Rebuilds a map from its names, in dense order.
    pub fn from_names(names: Vec<String>) -> Self {
        let mut m = IdMap {
            names: Vec::with_capacity(names.len()),
            ..Default::default()
        };
        m.index.reserve(names.len(), |e| e.0);
        let mut dups = false;
        for n in names {
            let h = m.hash(&n);
            if m.find(h, &n).is_some() {
                dups = true;
            } else {
                m.index.insert_unique(h, (h, m.names.len() as u32), |e| e.0);
            }
            m.names.push(n);
        }
        debug_assert_eq!(dups, m.has_duplicates());
        m
    }

    fn hash(&self, name: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(name)
    }

    fn find(&self, h: u64, name: &str) -> Option<u32> {
        self.index
            .find(h, |e| e.0 == h && self.names[e.1 as usize] == name)
            .map(|e| e.1)
    }

    /// Appends names known to be new and distinct (hashed in parallel).
    pub(crate) fn extend_new(&mut self, names: Vec<String>) {
        use rayon::prelude::*;
        let hashes: Vec<u64> = names.par_iter().map(|n| self.hash(n)).collect();
        self.index.reserve(names.len(), |e| e.0);
        for (n, h) in names.into_iter().zip(hashes) {
            debug_assert!(self.find(h, &n).is_none(), "{n} is new");
            self.index
                .insert_unique(h, (h, self.names.len() as u32), |e| e.0);
            self.names.push(n);
        }
    }

    /// Whether a name appears twice (a map built by [`IdMap::from_names`] from bad input).
    pub fn has_duplicates(&self) -> bool {
        self.index.len() != self.names.len()
    }

    /// The dense index of `name`, adding it when new.
    pub fn get_or_insert(&mut self, name: &str) -> u32 {
        let h = self.hash(name);
        if let Some(i) = self.find(h, name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert_unique(h, (h, i), |e| e.0);
        i
    }

    /// The dense index of `name`, if known.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.find(self.hash(name), name)
    }

    /// The original id of dense index `i`.
    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    /// All original ids in dense order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no ids.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The entry positions grouped by row: `order[ptr[r]..ptr[r + 1]]` are the positions `k` with
/// `rows[k] == r`, ascending (a stable counting sort). Positions are u32: callers check the count.
pub fn positions_by_row(rows: &[u32], n_rows: usize) -> (Vec<usize>, Vec<u32>) {
    let mut ptr = vec![0usize; n_rows + 1];
    for &r in rows {
        ptr[r as usize + 1] += 1;
    }
    for r in 0..n_rows {
        ptr[r + 1] += ptr[r];
    }
    let mut next = ptr.clone();
    let mut order = vec![0u32; rows.len()];
    for (k, &r) in rows.iter().enumerate() {
        order[next[r as usize]] = k as u32;
        next[r as usize] += 1;
    }
    (ptr, order)
}

/// Known entries as COO triplets (dense `u32` ids, `f32` values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ratings {
    pub users: Vec<u32>,
    pub items: Vec<u32>,
    pub values: Vec<f32>,
}

impl Ratings {
    /// Number of known entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// No entries, room for `n`.
    pub fn with_capacity(n: usize) -> Self {
        Ratings {
            users: Vec::with_capacity(n),
            items: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
        }
    }

    /// Appends one entry.
    pub fn push(&mut self, user: u32, item: u32, value: f32) {
        self.users.push(user);
        self.items.push(item);
        self.values.push(value);
    }

    /// Appends the entries of `other` in `range`.
    pub fn extend_from(&mut self, other: &Ratings, range: std::ops::Range<usize>) {
        self.users.extend_from_slice(&other.users[range.clone()]);
        self.items.extend_from_slice(&other.items[range.clone()]);
        self.values.extend_from_slice(&other.values[range]);
    }

    /// The entries at the given positions, in that order.
    pub fn select(&self, idx: &[usize]) -> Ratings {
        Ratings {
            users: idx.iter().map(|&k| self.users[k]).collect(),
            items: idx.iter().map(|&k| self.items[k]).collect(),
            values: idx.iter().map(|&k| self.values[k]).collect(),
        }
    }

    /// Mean value, accumulated in f64 (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        self.values.iter().map(|&v| v as f64).sum::<f64>() / self.values.len() as f64
    }

    /// Smallest and largest value.
    pub fn value_range(&self) -> (f32, f32) {
        self.values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }
}

/// A whole data set: the ratings and the id maps that name their rows and columns.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub ratings: Ratings,
    pub users: IdMap,
    pub items: IdMap,
    /// What the readers decided on the user's behalf (a skipped header line), to be told.
    pub notes: Vec<String>,
}

/// Compressed sparse rows. Row `r` holds `index[ptr[r]..ptr[r+1]]` with `values` alongside; within a
/// row, columns are ascending, which fixes every reduction order.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    pub n_rows: usize,
    pub n_cols: usize,
    pub ptr: Vec<u64>,
    pub index: Vec<u32>,
    pub values: Vec<f32>,
}

impl Compressed {
    /// Builds rows keyed by `rows` with columns `cols` (a counting sort, then a sort within rows).
    pub fn build(n_rows: usize, n_cols: usize, rows: &[u32], cols: &[u32], values: &[f32]) -> Self {
        let mut ptr = vec![0u64; n_rows + 1];
        for &r in rows {
            ptr[r as usize + 1] += 1;
        }
        for r in 0..n_rows {
            ptr[r + 1] += ptr[r];
        }
        let mut next: Vec<u64> = ptr[..n_rows].to_vec();
        let mut index = vec![0u32; rows.len()];
        let mut vals = vec![0f32; rows.len()];
        for k in 0..rows.len() {
            let r = rows[k] as usize;
            let at = next[r] as usize;
            index[at] = cols[k];
            vals[at] = values[k];
            next[r] += 1;
        }
        let mut c = Compressed {
            n_rows,
            n_cols,
            ptr,
            index,
            values: vals,
        };
        c.sort_rows();
        c
    }

    fn sort_rows(&mut self) {
        use rayon::prelude::*;
        // Split index/values into per-row slices and sort each by column.
        let mut idx_rest: &mut [u32] = &mut self.index;
        let mut val_rest: &mut [f32] = &mut self.values;
        let mut rows = Vec::with_capacity(self.n_rows);
        for r in 0..self.n_rows {
            let len = (self.ptr[r + 1] - self.ptr[r]) as usize;
            let (a, b) = idx_rest.split_at_mut(len);
            let (c, d) = val_rest.split_at_mut(len);
            rows.push((a, c));
            idx_rest = b;
            val_rest = d;
        }
        rows.par_iter_mut().for_each(|(idx, val)| {
            if idx.windows(2).all(|w| w[0] <= w[1]) {
                return;
            }
            let mut pairs: Vec<(u32, f32)> = idx.iter().copied().zip(val.iter().copied()).collect();
            pairs.sort_by_key(|p| p.0);
            for (k, (i, v)) in pairs.into_iter().enumerate() {
                idx[k] = i;
                val[k] = v;
            }
        });
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.index.len()
    }

    /// Entries in row `r`.
    pub fn row_len(&self, r: usize) -> usize {
        (self.ptr[r + 1] - self.ptr[r]) as usize
    }

    /// Entries in every row.
    pub fn row_counts(&self) -> Vec<u32> {
        (0..self.n_rows).map(|r| self.row_len(r) as u32).collect()
    }

    /// The range of row `r` in `index`/`values`.
    pub fn row_range(&self, r: usize) -> std::ops::Range<usize> {
        self.ptr[r] as usize..self.ptr[r + 1] as usize
    }
}

/// The training data in both orders: CSR by user (item index, rating) and CSC by item (user index,
/// rating). Both copies carry the value, so each side is a pure row reduction with no permutation.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub by_user: Compressed,
    pub by_item: Compressed,
}

impl Matrix {
    /// Builds CSR and CSC from COO ratings over `n_users` × `n_items`.
    pub fn from_ratings(r: &Ratings, n_users: usize, n_items: usize) -> Self {
        Matrix {
            by_user: Compressed::build(n_users, n_items, &r.users, &r.items, &r.values),
            by_item: Compressed::build(n_items, n_users, &r.items, &r.users, &r.values),
        }
    }

    pub fn n_users(&self) -> usize {
        self.by_user.n_rows
    }

    pub fn n_items(&self) -> usize {
        self.by_item.n_rows
    }

    pub fn nnz(&self) -> usize {
        self.by_user.nnz()
    }
}

/// Summary counts of a rating set, for logs and summaries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataStats {
    pub n_users: usize,
    pub n_items: usize,
    pub nnz: usize,
    pub density: f64,
    pub mean: f64,
    pub min: f32,
    pub max: f32,
    pub max_user_degree: usize,
    pub max_item_degree: usize,
}

impl DataStats {
    pub fn of(m: &Matrix) -> Self {
        let mean = m.by_user.values.iter().map(|&v| v as f64).sum::<f64>() / m.nnz().max(1) as f64;
        let (min, max) = m
            .by_user
            .values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        DataStats {
            n_users: m.n_users(),
            n_items: m.n_items(),
            nnz: m.nnz(),
            density: m.nnz() as f64 / (m.n_users() as f64 * m.n_items() as f64).max(1.0),
            mean,
            min,
            max,
            max_user_degree: (0..m.n_users())
                .map(|r| m.by_user.row_len(r))
                .max()
                .unwrap_or(0),
            max_item_degree: (0..m.n_items())
                .map(|r| m.by_item.row_len(r))
                .max()
                .unwrap_or(0),
        }
    }
}

/// True for a finite x ≥ 0 (false for NaN).
pub fn finite_nonneg(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

/// True for a finite x > 0 (false for NaN).
pub fn finite_pos(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_and_csc_hold_the_same_entries_sorted() {
        let mut r = Ratings::default();
        r.push(1, 2, 5.0);
        r.push(0, 1, 1.0);
        r.push(1, 0, 3.0);
        r.push(0, 0, 2.0);
        let m = Matrix::from_ratings(&r, 3, 3);
        assert_eq!(m.by_user.ptr, vec![0, 2, 4, 4]);
        assert_eq!(m.by_user.index, vec![0, 1, 0, 2]);
        assert_eq!(m.by_user.values, vec![2.0, 1.0, 3.0, 5.0]);
        assert_eq!(m.by_item.ptr, vec![0, 2, 3, 4]);
        assert_eq!(m.by_item.index, vec![0, 1, 0, 1]);
        assert_eq!(m.by_item.values, vec![2.0, 3.0, 1.0, 5.0]);
    }
}
