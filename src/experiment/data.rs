//! Turns a [`DataConfig`] into train / validation / test entries with shared id maps.

use super::cache;
use crate::comm::Comm;
use crate::config::DataConfig;
use crate::data::ingest::Progress;
use crate::data::read::{read_into_opts, ReadOptions};
use crate::data::split::{apply, apply3, held_random, random_held_count, split, SplitMode};
use crate::data::synth::generate;
use crate::data::{Dataset, IdMap, Ratings};
use crate::error::{Error, Result};
use std::ops::Range;
use std::path::{Path, PathBuf};

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

/// The files `cfg` reads (none for synthetic data; every existing part of `shards`).
pub fn data_files(cfg: &DataConfig) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [&cfg.path, &cfg.train, &cfg.test]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if let Some(p) = &cfg.shards {
        out.extend(shard_files(p));
    }
    out
}

/// The files process `rank` of `size` reads: its own part of `shards`, or [`data_files`]
/// (also when the parts do not match the processes, which the load then refuses).
pub fn data_files_of_rank(cfg: &DataConfig, rank: usize, size: usize) -> Vec<PathBuf> {
    match &cfg.shards {
        Some(p) if size > 1 && shard_files(p).len() == size => vec![shard_path(p, rank)],
        _ => data_files(cfg),
    }
}

/// Fingerprints of the files `cfg` reads.
pub fn fingerprints(cfg: &DataConfig) -> Result<Vec<crate::fs::Fingerprint>> {
    fingerprints_of(&data_files(cfg))
}

/// Fingerprints of `files`.
pub fn fingerprints_of(files: &[PathBuf]) -> Result<Vec<crate::fs::Fingerprint>> {
    files.iter().map(|p| crate::fs::fingerprint(p)).collect()
}

/// Part `rank` of a `{rank}` pattern.
pub fn shard_path(pattern: &Path, rank: usize) -> PathBuf {
    PathBuf::from(
        pattern
            .to_string_lossy()
            .replace("{rank}", &rank.to_string()),
    )
}

/// The parts of a `{rank}` pattern that exist: part 0, 1, … up to the first missing one.
pub fn shard_files(pattern: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|r| shard_path(pattern, r))
        .take_while(|p| p.exists())
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
pub(super) fn split_masks(cfg: &DataConfig, n: usize) -> (Vec<bool>, Option<Vec<bool>>) {
    let n_train = n - random_held_count(n, cfg.test_fraction);
    let vf = cfg.validation_fraction;
    rayon::join(
        || held_random(n, cfg.test_fraction, cfg.split_seed),
        || (vf > 0.0).then(|| held_random(n_train, vf, cfg.split_seed.wrapping_add(1))),
    )
}

/// Reads (or generates) the data and splits it, with no cache.
pub fn build(cfg: &DataConfig, hooks: &LoadHooks) -> Result<Prepared> {
    if let Some(pattern) = &cfg.shards {
        return Ok(prepare_shards(cfg, pattern, hooks, &crate::comm::SINGLE)?.0);
    }
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
            ..Default::default()
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

/// This process's share of the data of a run across the processes of `comm`, and its users
/// (ids of the whole data): with `data.shards`, its own part read alone (the ids agreed by
/// exchanging names, the split drawn over every part's positions); plain text files read in byte
/// ranges ([`super::ranges`]); otherwise (synthetic data, compressed or Parquet files, a
/// per-user split, a prepared-data cache) the whole data, read by every process, cut to users
/// balanced by training entries. One process gets
/// [`prepare_with`]'s result (or every part, in order) and all users.
pub fn prepare_part(
    cfg: &DataConfig,
    hooks: &LoadHooks,
    comm: &dyn Comm,
) -> Result<(Prepared, Range<usize>)> {
    let n = comm.size();
    if let Some(pattern) = &cfg.shards {
        return prepare_shards(cfg, pattern, hooks, comm);
    }
    let files = data_files(cfg);
    let by_ranges = n > 1
        && !files.is_empty()
        && cfg.split == SplitMode::Random
        && cache::cache_path(cfg).is_none()
        && files
            .iter()
            .all(|f| super::ranges::rangeable(f, cfg.format));
    if by_ranges {
        return super::ranges::prepare_ranges(cfg, hooks, comm);
    }
    let data = prepare_with(cfg, hooks)?;
    if n == 1 {
        let all = 0..data.n_users();
        return Ok((data, all));
    }
    let users = user_ranges(&data.train, data.n_users(), n)[comm.rank()].clone();
    Ok((data.keep_users(users.clone()), users))
}

/// How `cfg` reads a file: its format, duplicate and header rules, columns, and `hooks`' progress.
pub(super) fn read_options<'a>(cfg: &'a DataConfig, hooks: &LoadHooks<'a>) -> ReadOptions<'a> {
    ReadOptions {
        format: cfg.format,
        dups: cfg.duplicates,
        header: cfg.header,
        progress: hooks.progress,
        columns: cfg.columns.as_ref(),
        ..Default::default()
    }
}

fn prepare_shards(
    cfg: &DataConfig,
    pattern: &Path,
    hooks: &LoadHooks,
    comm: &dyn Comm,
) -> Result<(Prepared, Range<usize>)> {
    let (n, rank) = (comm.size(), comm.rank());
    let files = shard_files(pattern);
    if files.is_empty() {
        return Err(Error::Input(format!(
            "data.shards: no part at {} (write the parts with `sslf shard`)",
            shard_path(pattern, 0).display()
        )));
    }
    if n > 1 && files.len() != n {
        return Err(Error::Input(format!(
            "data.shards: {} parts for {n} processes; write {n} parts with `sslf shard --parts {n}`, \
             or run {} processes",
            files.len(),
            files.len()
        )));
    }
    let mine: &[PathBuf] = if n > 1 { &files[rank..=rank] } else { &files };
    let mut ds = Dataset::default();
    let mut ratings = Ratings::default();
    for f in mine {
        let r = read_into_opts(f, &read_options(cfg, hooks), &mut ds)?;
        ratings.extend_from(&r, 0..r.nnz());
    }
    let source = format!("{} ({} parts)", pattern.display(), files.len());
    // The ids every process agrees on: users in part order (a user in two parts is an error),
    // items in order of first appearance over the parts in order, as one process reading them
    // all would number them.
    let user_parts = super::ranges::gather_names(comm, ds.users.names())?;
    let (users, items, first_user) = if n == 1 {
        (ds.users, ds.items, 0)
    } else {
        let mut users = IdMap::default();
        let mut first = 0;
        for (r, names) in user_parts.iter().enumerate() {
            if r == rank {
                first = users.len();
            }
            for name in names {
                let before = users.len();
                if users.get_or_insert(name) as usize != before {
                    return Err(Error::Input(format!(
                        "data.shards: user {name} is in {} and in an earlier part; the parts must \
                         be split by user (`sslf shard` writes them so)",
                        shard_path(pattern, r).display()
                    )));
                }
            }
        }
        let mut items = IdMap::default();
        let local_to_global = super::ranges::merge_names(comm, &mut items, ds.items.names())?;
        for u in ratings.users.iter_mut() {
            *u += first as u32;
        }
        for i in ratings.items.iter_mut() {
            *i = local_to_global[*i as usize];
        }
        (users, items, first)
    };
    let own = first_user..first_user + user_parts[rank].len();
    // The split of the parts' concatenation, as one process would draw it.
    let (at, total) = crate::comm::offset(comm, ratings.nnz() as u64)?;
    let (at, total) = (at as usize, total as usize);
    let pos: Vec<usize> = (at..at + ratings.nnz()).collect();
    let (train, valid, test) =
        super::ranges::split_positions(cfg, &ratings, &pos, total, cfg.test_fraction);
    Ok((
        Prepared {
            train,
            valid,
            test,
            users,
            items,
            source,
            notes: ds.notes,
        },
        own,
    ))
}

/// What `sslf shard` wrote.
#[derive(Debug, Clone)]
pub struct Sharded {
    pub files: Vec<PathBuf>,
    /// Users and entries of each part.
    pub users: Vec<usize>,
    pub entries: Vec<usize>,
}

/// Writes the ratings `cfg` names (one file, `data.path`, or synthetic data), before any split,
/// as `parts` TSV files `dir/part-{rank}.tsv` split by user: contiguous ranges of users in order
/// of first appearance, balanced by entry count, each part's lines in the input's order. Reading
/// the parts in order gives the same users, items and entries as the input, in the users' order.
pub fn shard(cfg: &DataConfig, parts: usize, dir: &Path, hooks: &LoadHooks) -> Result<Sharded> {
    if parts == 0 {
        return Err(Error::Input("--parts must be at least 1".into()));
    }
    if cfg.train.is_some() || cfg.shards.is_some() {
        return Err(Error::Input(
            "sslf shard splits one ratings file (`data.path`) or synthetic data; this config \
             names `data.train` or `data.shards`"
                .into(),
        ));
    }
    let ds = match &cfg.path {
        Some(p) => {
            let mut ds = Dataset::default();
            ds.ratings = read_into_opts(p, &read_options(cfg, hooks), &mut ds)?;
            ds
        }
        None => generate(&cfg.synthetic.clone().unwrap_or_default()),
    };
    let ranges = user_ranges(&ds.ratings, ds.users.len(), parts);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let pattern = dir.join("part-{rank}.tsv");
    let old = shard_files(&pattern);
    if !old.is_empty() {
        return Err(Error::Input(format!(
            "{} already holds parts ({} of them); remove them or write elsewhere",
            dir.display(),
            old.len()
        )));
    }
    let mut out = Sharded {
        files: Vec::new(),
        users: Vec::new(),
        entries: Vec::new(),
    };
    // Each entry's part, then one pass per part in input order.
    let mut part_of = vec![0u32; ds.users.len()];
    for (k, r) in ranges.iter().enumerate() {
        part_of[r.clone()].fill(k as u32);
    }
    for (k, r) in ranges.iter().enumerate() {
        let idx: Vec<usize> = (0..ds.ratings.nnz())
            .filter(|&e| part_of[ds.ratings.users[e] as usize] == k as u32)
            .collect();
        let part = ds.ratings.select(&idx);
        let file = shard_path(&pattern, k);
        crate::data::read::write_tsv(&file, &part, &ds.users, &ds.items)?;
        out.files.push(file);
        out.users.push(r.len());
        out.entries.push(part.nnz());
    }
    Ok(out)
}
