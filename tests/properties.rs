//! Property tests (proptest) of the pieces everything else stands on: the hold-out splits and the
//! CSR/CSC construction.

use proptest::prelude::*;
use sslf::data::split::{split, SplitMode};
use sslf::data::{Matrix, Ratings};
use std::collections::BTreeMap;

/// Ratings with distinct (user, item) pairs on a grid of at most 30 × 20.
fn ratings() -> impl Strategy<Value = (Ratings, usize, usize)> {
    (1usize..30, 1usize..20).prop_flat_map(|(m, n)| {
        proptest::collection::btree_map(
            (0..m as u32, 0..n as u32),
            -5.0f32..5.0,
            0..(m * n).min(200),
        )
        .prop_map(move |entries: BTreeMap<(u32, u32), f32>| {
            let mut r = Ratings::default();
            for ((u, i), v) in entries {
                r.push(u, i, v);
            }
            (r, m, n)
        })
    })
}

fn triplets(r: &Ratings) -> Vec<(u32, u32, u32)> {
    let mut t: Vec<_> = (0..r.nnz())
        .map(|k| (r.users[k], r.items[k], r.values[k].to_bits()))
        .collect();
    t.sort_unstable();
    t
}

proptest! {
    #[test]
    fn a_split_partitions_the_entries_and_depends_only_on_its_inputs(
        (r, _, _) in ratings(),
        fraction in 0.0f64..0.95,
        per_user in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mode = if per_user { SplitMode::PerUser } else { SplitMode::Random };
        let (a, b) = split(&r, fraction, mode, seed);
        let mut both = triplets(&a);
        both.extend(triplets(&b));
        both.sort_unstable();
        prop_assert_eq!(both, triplets(&r));
        prop_assert_eq!(split(&r, fraction, mode, seed), (a.clone(), b.clone()));
        match mode {
            SplitMode::Random => {
                prop_assert_eq!(b.nnz(), (r.nnz() as f64 * fraction).floor() as usize);
            }
            SplitMode::PerUser => {
                // Every user with an entry keeps one for training.
                for &u in &r.users {
                    prop_assert!(a.users.contains(&u), "user {} lost all its entries", u);
                }
            }
        }
    }

    #[test]
    fn csr_and_csc_hold_the_same_entries_sorted_within_rows((r, m, n) in ratings()) {
        let mat = Matrix::from_ratings(&r, m, n);
        for (c, rows, cols, transposed) in [(&mat.by_user, m, n, false), (&mat.by_item, n, m, true)] {
            prop_assert_eq!(c.n_rows, rows);
            prop_assert_eq!(c.n_cols, cols);
            prop_assert_eq!(c.ptr.len(), rows + 1);
            prop_assert_eq!(c.ptr[0], 0);
            prop_assert_eq!(*c.ptr.last().unwrap() as usize, r.nnz());
            let mut got = Vec::new();
            for row in 0..rows {
                let (s, e) = (c.ptr[row] as usize, c.ptr[row + 1] as usize);
                prop_assert!(s <= e);
                prop_assert!(c.index[s..e].windows(2).all(|w| w[0] < w[1]), "row {} unsorted", row);
                for k in s..e {
                    prop_assert!((c.index[k] as usize) < cols);
                    let (u, i) = if transposed { (c.index[k], row as u32) } else { (row as u32, c.index[k]) };
                    got.push((u, i, c.values[k].to_bits()));
                }
            }
            got.sort_unstable();
            prop_assert_eq!(got, triplets(&r));
        }
    }
}
