//! Turns a [`DataConfig`] into train / validation / test entries with shared id maps.

use crate::config::DataConfig;
use crate::data::read::read_into_with;
use crate::data::split::split;
use crate::data::synth::generate;
use crate::data::{Dataset, IdMap, Ratings};
use crate::error::Result;

/// The entries of one experiment, with dense ids shared by all parts.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub train: Ratings,
    pub valid: Ratings,
    pub test: Ratings,
    pub users: IdMap,
    pub items: IdMap,
    /// Where the data came from, for summaries.
    pub source: String,
    /// What the readers decided on the user's behalf (a skipped header line), to be told.
    pub notes: Vec<String>,
}

impl Prepared {
    pub fn n_users(&self) -> usize {
        self.users.len()
    }
    pub fn n_items(&self) -> usize {
        self.items.len()
    }
    /// Entries of each user and item in the training part.
    pub fn train_counts(&self) -> (Vec<u32>, Vec<u32>) {
        let mut cu = vec![0u32; self.n_users()];
        let mut ci = vec![0u32; self.n_items()];
        for k in 0..self.train.nnz() {
            cu[self.train.users[k] as usize] += 1;
            ci[self.train.items[k] as usize] += 1;
        }
        (cu, ci)
    }
    /// The items each user rated in the training file (the train and validation parts), as CSR
    /// (offsets, item indices ascending within a user).
    pub fn seen_by_user(&self) -> (Vec<u64>, Vec<u32>) {
        let cat = |a: &[u32], b: &[u32]| [a, b].concat();
        let c = crate::data::Compressed::build(
            self.n_users(),
            self.n_items(),
            &cat(&self.train.users, &self.valid.users),
            &cat(&self.train.items, &self.valid.items),
            &[&self.train.values[..], &self.valid.values[..]].concat(),
        );
        (c.ptr, c.index)
    }

    /// Test entries whose user or item has no training entry.
    pub fn cold_test_entries(&self) -> usize {
        let (cu, ci) = self.train_counts();
        (0..self.test.nnz())
            .filter(|&k| {
                cu[self.test.users[k] as usize] == 0 || ci[self.test.items[k] as usize] == 0
            })
            .count()
    }
}

/// The files `cfg` reads (none for synthetic data).
pub fn data_files(cfg: &DataConfig) -> Vec<&std::path::Path> {
    [&cfg.path, &cfg.train, &cfg.test]
        .into_iter()
        .flatten()
        .map(|p| p.as_path())
        .collect()
}

/// Fingerprints of the files `cfg` reads.
pub fn fingerprints(cfg: &DataConfig) -> Result<Vec<crate::fs::Fingerprint>> {
    data_files(cfg)
        .into_iter()
        .map(crate::fs::fingerprint)
        .collect()
}

/// Loads or generates the data and splits it.
pub fn prepare(cfg: &DataConfig) -> Result<Prepared> {
    let read = |p: &std::path::Path, ds: &mut Dataset| {
        read_into_with(p, cfg.format, cfg.duplicates, cfg.header, ds)
    };
    let (train_all, test, users, items, source, notes) = if let Some(train) = &cfg.train {
        let mut ds = Dataset::default();
        let tr = read(train, &mut ds)?;
        let te = match &cfg.test {
            Some(t) => read(t, &mut ds)?,
            None => Ratings::default(),
        };
        let src = match &cfg.test {
            Some(t) => format!("{} + {}", train.display(), t.display()),
            None => train.display().to_string(),
        };
        (tr, te, ds.users, ds.items, src, ds.notes)
    } else {
        let (ds, src) = match &cfg.path {
            Some(p) => {
                let mut ds = Dataset::default();
                ds.ratings = read(p, &mut ds)?;
                (ds, p.display().to_string())
            }
            None => {
                let s = cfg.synthetic.clone().unwrap_or_default();
                let src = format!(
                    "synthetic {}×{}, {} entries, rank {}, noise {}",
                    s.n_users, s.n_items, s.nnz, s.rank, s.noise
                );
                (generate(&s), src)
            }
        };
        let (tr, te) = if cfg.test_fraction > 0.0 {
            split(&ds.ratings, cfg.test_fraction, cfg.split, cfg.split_seed)
        } else {
            (ds.ratings, Ratings::default())
        };
        (tr, te, ds.users, ds.items, src, ds.notes)
    };
    let (train, valid) = if cfg.validation_fraction > 0.0 {
        split(
            &train_all,
            cfg.validation_fraction,
            cfg.split,
            cfg.split_seed.wrapping_add(1),
        )
    } else {
        (train_all, Ratings::default())
    };
    Ok(Prepared {
        train,
        valid,
        test,
        users,
        items,
        source,
        notes,
    })
}
