//! Turns a [`DataConfig`] into train / validation / test entries with shared id maps.

use super::cache;
use crate::config::DataConfig;
use crate::data::ingest::Progress;
use crate::data::read::{read_into_opts, ReadOptions};
use crate::data::split::{apply, apply3, held_random, random_held_count, split, SplitMode};
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

/// Users of the training part in contiguous id ranges, one per process of `parts`, balanced by
/// their training entries.
pub fn user_ranges(train: &Ratings, n_users: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let mut w = vec![0u64; n_users];
    for &u in &train.users {
        w[u as usize] += 1;
    }
    crate::comm::balanced_ranges(&w, parts)
}

impl Prepared {
    /// The entries of `users` only, with the ids of the whole data (a process's share of a run
    /// sharded by users).
    pub fn keep_users(mut self, users: std::ops::Range<usize>) -> Prepared {
        let keep = |r: &Ratings| -> Ratings {
            let idx: Vec<usize> = (0..r.nnz())
                .filter(|&k| users.contains(&(r.users[k] as usize)))
                .collect();
            r.select(&idx)
        };
        self.train = keep(&self.train);
        self.valid = keep(&self.valid);
        self.test = keep(&self.test);
        self
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

/// What a load may tell its caller: lines to say, and progress.
#[derive(Clone, Copy)]
pub struct LoadHooks<'a> {
    pub say: &'a dyn Fn(&str),
    pub progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
    /// The data files' fingerprints, when the caller has already taken them (so the files are
    /// not hashed twice for the cache's staleness check).
    pub fingerprints: Option<&'a [crate::fs::Fingerprint]>,
}

impl LoadHooks<'_> {
    /// Says nothing, shows nothing.
    pub fn quiet() -> LoadHooks<'static> {
        LoadHooks {
            say: &|_| {},
            progress: None,
            fingerprints: None,
        }
    }

    fn phase(&self, phase: &'static str, lines: u64) {
        if let Some(f) = self.progress {
            f(&Progress {
                phase,
                bytes: 0,
                total: None,
                lines,
            });
        }
    }
}

/// Loads or generates the data and splits it (through the prepared-data cache when the config
/// names one), saying nothing.
pub fn prepare(cfg: &DataConfig) -> Result<Prepared> {
    prepare_with(cfg, &LoadHooks::quiet())
}

/// [`prepare`], telling `hooks`: with `data.cache` or `data.prepared`, a prepared file that
/// matches the data files and settings is loaded; a missing, stale or unreadable one is rebuilt
/// from the data (and said why) and written for next time.
pub fn prepare_with(cfg: &DataConfig, hooks: &LoadHooks) -> Result<Prepared> {
    let Some(path) = cache::cache_path(cfg) else {
        return build(cfg, hooks);
    };
    let say = hooks.say;
    let t = std::time::Instant::now();
    let key = match hooks.fingerprints {
        Some(f) => cache::CacheKey::with_fingerprints(cfg, f.to_vec()),
        None => cache::CacheKey::of(cfg)?,
    };
    hooks.phase("cache", 0);
    match cache::read(&path, &key) {
        Ok(cache::Cached::Fresh(p)) => {
            say(&format!(
                "sslf: read prepared data from {} ({} entries in {:.2} s)",
                path.display(),
                p.train.nnz() + p.valid.nnz() + p.test.nnz(),
                t.elapsed().as_secs_f64()
            ));
            return Ok(*p);
        }
        Ok(cache::Cached::Stale(why)) => say(&format!(
            "sslf: {} is stale ({why}); rebuilding it",
            path.display()
        )),
        Ok(cache::Cached::Missing) => say(&format!(
            "sslf: no prepared data at {} yet; it will be written",
            path.display()
        )),
        Err(e) => say(&format!("sslf: {e}; rebuilding it")),
    }
    let p = build(cfg, hooks)?;
    match cache::write(&path, &p, &key) {
        Ok(()) => say(&format!("sslf: wrote prepared data to {}", path.display())),
        Err(e) => say(&format!(
            "sslf: cannot keep the prepared data ({e}); going on without it"
        )),
    }
    Ok(p)
}

/// The test and validation masks of a random split of `n` entries, drawn at once.
fn split_masks(cfg: &DataConfig, n: usize) -> (Vec<bool>, Option<Vec<bool>>) {
    let n_train = n - random_held_count(n, cfg.test_fraction);
    let vf = cfg.validation_fraction;
    rayon::join(
        || held_random(n, cfg.test_fraction, cfg.split_seed),
        || (vf > 0.0).then(|| held_random(n_train, vf, cfg.split_seed.wrapping_add(1))),
    )
}

/// Reads (or generates) the data and splits it, with no cache.
pub fn build(cfg: &DataConfig, hooks: &LoadHooks) -> Result<Prepared> {
    // A random split depends on the entry count alone: its masks are drawn while the reader
    // checks for duplicates, and kept when the count is the one read.
    let masks = std::sync::Mutex::new(None);
    let draw = |n: usize| {
        let m = split_masks(cfg, n);
        *masks.lock().expect("no panic holds this lock") = Some((n, m));
    };
    let random_file_split =
        cfg.split == SplitMode::Random && cfg.test_fraction > 0.0 && cfg.path.is_some();
    let read = |p: &std::path::Path, ds: &mut Dataset| {
        let opts = ReadOptions {
            format: cfg.format,
            dups: cfg.duplicates,
            header: cfg.header,
            progress: hooks.progress,
            columns: cfg.columns.as_ref(),
            alongside: random_file_split.then_some(&draw as &(dyn Fn(usize) + Sync)),
            chunk: 0,
        };
        read_into_opts(p, &opts, ds)
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
        hooks.phase("split", ds.ratings.nnz() as u64);
        if cfg.split == SplitMode::Random && cfg.test_fraction > 0.0 {
            let n = ds.ratings.nnz();
            let (held_test, held_valid) = match masks.lock().expect("no panic").take() {
                Some((m, drawn)) if m == n => drawn,
                _ => split_masks(cfg, n),
            };
            let (train, valid, test) = match held_valid {
                Some(h) => apply3(&ds.ratings, &held_test, &h),
                None => {
                    let (train, test) = apply(&ds.ratings, &held_test);
                    (train, Ratings::default(), test)
                }
            };
            drop(ds.ratings);
            return Ok(Prepared {
                train,
                valid,
                test,
                users: ds.users,
                items: ds.items,
                source: src,
                notes: ds.notes,
            });
        }
        let (tr, te) = if cfg.test_fraction > 0.0 {
            split(&ds.ratings, cfg.test_fraction, cfg.split, cfg.split_seed)
        } else {
            (ds.ratings, Ratings::default())
        };
        (tr, te, ds.users, ds.items, src, ds.notes)
    };
    hooks.phase("split", train_all.nnz() as u64);
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
