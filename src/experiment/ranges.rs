//! A rating file (or a train and a test file) read by the processes of a run together: each
//! parses a byte range of whole lines, the ids are agreed by exchanging names (never ratings),
//! and every entry is sent to the process that owns its user. Duplicates across ranges are
//! resolved there, and the split is drawn over the positions one process would have seen, so the
//! processes end up with exactly the entries, ids and split of a one-process read, cut by user.

use super::data::{split_masks, LoadHooks, Prepared};
use crate::comm::{all_gather_u64, balanced_ranges, offset, Comm};
use crate::config::DataConfig;
use crate::data::read::{open_text_sized, read_from_with, DuplicatePolicy, Format, ReadOptions};
use crate::data::split::{apply, apply3, held_random};
use crate::data::{Dataset, IdMap, Ratings};
use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Whether `path` can be read in byte ranges: uncompressed delimited text.
pub fn rangeable(path: &Path, format: Format) -> bool {
    let f = format.resolve(path);
    if matches!(f, Format::Parquet | Format::Mtx) || crate::data::parquet::is_parquet(path) {
        return false;
    }
    open_text_sized(path).is_ok_and(|(_, size)| size.is_some())
}

/// The first line start at or after byte `pos` (0 for 0; the file's size past its last line).
fn line_start_at(path: &Path, file: &mut std::fs::File, pos: u64, size: u64) -> Result<u64> {
    if pos == 0 || pos >= size {
        return Ok(pos.min(size));
    }
    file.seek(SeekFrom::Start(pos - 1))
        .map_err(|e| Error::io(path, e))?;
    let mut r = BufReader::new(file);
    let mut skipped = Vec::new();
    let n = r
        .read_until(b'\n', &mut skipped)
        .map_err(|e| Error::io(path, e))?;
    Ok(pos - 1 + n as u64)
}

/// This rank's byte range of `path`: whole lines, the ranks' ranges in order covering the file.
fn byte_range(path: &Path, rank: usize, n: usize) -> Result<Range<u64>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let cut = |r: usize| (size as u128 * r as u128 / n as u128) as u64;
    let start = line_start_at(path, &mut f, cut(rank), size)?;
    let end = if rank + 1 == n {
        size
    } else {
        line_start_at(path, &mut f, cut(rank + 1), size)?
    };
    Ok(start..end.max(start))
}

/// Lines in `range` of `path` (a last line without a newline counts).
fn count_lines(path: &Path, range: &Range<u64>) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.seek(SeekFrom::Start(range.start))
        .map_err(|e| Error::io(path, e))?;
    let mut r = f.take(range.end - range.start);
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let got = r.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..got]).count() as u64;
        last = buf[got - 1];
    }
    Ok(lines + (last != b'\n') as u64)
}

/// One entry on its way to its user's process (sent as raw bytes).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Rec {
    /// Which of the config's files (train, then test).
    file: u32,
    user: u32,
    item: u32,
    value: f32,
    /// Position among the file's entries (one process's order).
    pos: u64,
    line: u64,
}

fn encode_names(names: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend((n.len() as u32).to_le_bytes());
        out.extend(n.as_bytes());
    }
    out
}

fn decode_names(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
        out.push(String::from_utf8_lossy(&b[4..4 + len]).into_owned());
        b = &b[4 + len..];
    }
    out
}

/// Every rank's names, in rank order.
pub(super) fn gather_names(comm: &dyn Comm, names: &[String]) -> Result<Vec<Vec<String>>> {
    Ok(comm
        .all_gather_bytes(&encode_names(names))?
        .iter()
        .map(|b| decode_names(b))
        .collect())
}

/// Adds every rank's `mine`, rank by rank, to `map` (new names in that order, as one reader
/// meets them); returns the ids of this rank's names.
pub(super) fn merge_names(comm: &dyn Comm, map: &mut IdMap, mine: &[String]) -> Result<Vec<u32>> {
    let mut ids = Vec::with_capacity(mine.len());
    for (r, names) in gather_names(comm, mine)?.iter().enumerate() {
        for name in names {
            let id = map.get_or_insert(name);
            if r == comm.rank() {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// Reads `cfg`'s data (`path`, or `train` with an optional `test`; every file rangeable) as
/// described in the module docs; returns this rank's share and its users.
pub fn prepare_ranges(
    cfg: &DataConfig,
    hooks: &LoadHooks,
    comm: &dyn Comm,
) -> Result<(Prepared, Range<usize>)> {
    let (rank, n) = (comm.rank(), comm.size());
    let files: Vec<PathBuf> = [&cfg.path, &cfg.train, &cfg.test]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    // 1. Each rank parses its range of each file, ids local to it.
    let mut ds = Dataset::default();
    let mut local: Vec<(Ratings, Vec<u64>)> = Vec::new();
    let mut new_users: Vec<Range<usize>> = Vec::new();
    let mut new_items: Vec<Range<usize>> = Vec::new();
    for path in &files {
        let range = byte_range(path, rank, n)?;
        let lines_here = if range.is_empty() {
            0
        } else {
            count_lines(path, &range)?
        };
        let (before, _) = offset(comm, lines_here)?;
        let (u0, i0) = (ds.users.len(), ds.items.len());
        let lines = std::sync::Mutex::new(Vec::new());
        let r = if range.is_empty() {
            Ratings::default()
        } else {
            let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            f.seek(SeekFrom::Start(range.start))
                .map_err(|e| Error::io(path, e))?;
            let reader = BufReader::with_capacity(1 << 20, f.take(range.end - range.start));
            let opts = ReadOptions {
                first_line: before as usize + 1,
                entry_lines: Some(&lines),
                ..super::data::read_options(cfg, hooks)
            };
            read_from_with(reader, path, &opts, Some(range.end - range.start), &mut ds)?
        };
        new_users.push(u0..ds.users.len());
        new_items.push(i0..ds.items.len());
        local.push((r, lines.into_inner().expect("no panic holds this lock")));
    }
    // 2. The ids: each file's new names, rank by rank, as one reader meets them.
    let mut users = IdMap::default();
    let mut items = IdMap::default();
    // Local ids are numbered file by file, so each file's new ids extend the map.
    let (mut user_to, mut item_to) = (Vec::new(), Vec::new());
    for f in 0..files.len() {
        let mine_u = &ds.users.names()[new_users[f].clone()];
        user_to.extend(merge_names(comm, &mut users, mine_u)?);
        let mine_i = &ds.items.names()[new_items[f].clone()];
        item_to.extend(merge_names(comm, &mut items, mine_i)?);
    }
    // 3. Owners: users in contiguous ranges balanced by their entries in every file.
    let mut per_user = vec![0f64; users.len()];
    for (r, _) in &local {
        for &u in &r.users {
            per_user[user_to[u as usize] as usize] += 1.0;
        }
    }
    comm.sum_f64(&mut per_user)?;
    let weights: Vec<u64> = per_user.iter().map(|&c| c as u64).collect();
    let owners = balanced_ranges(&weights, n);
    let mut owner_of = vec![0u32; users.len()];
    for (k, r) in owners.iter().enumerate() {
        owner_of[r.clone()].fill(k as u32);
    }
    // 4. Every entry to its owner, with its position in its file and its line.
    let mut to: Vec<Vec<Rec>> = vec![Vec::new(); n];
    for (f, (r, lines)) in local.iter().enumerate() {
        let (first, _) = offset(comm, r.nnz() as u64)?;
        for k in 0..r.nnz() {
            let user = user_to[r.users[k] as usize];
            to[owner_of[user as usize] as usize].push(Rec {
                file: f as u32,
                user,
                item: item_to[r.items[k] as usize],
                value: r.values[k],
                pos: first + k as u64,
                line: lines[k],
            });
        }
    }
    drop(local);
    let bytes = to
        .iter()
        .map(|v| bytemuck::cast_slice::<Rec, u8>(v).to_vec())
        .collect();
    let got: Vec<Rec> = comm
        .all_to_all_bytes(bytes)?
        .iter()
        .flat_map(|b| bytemuck::pod_collect_to_vec::<u8, Rec>(b))
        .collect();
    // 5. Per file: duplicates met across ranges, then the split over one reader's positions.
    let mut parts = Vec::new();
    for (f, path) in files.iter().enumerate() {
        let mut recs: Vec<Rec> = got.iter().filter(|r| r.file == f as u32).copied().collect();
        recs.sort_unstable_by_key(|r| r.pos);
        let removed = resolve_duplicates(path, &mut recs, cfg.duplicates, &users, &items)?;
        let mut gone: Vec<u64> = all_gather_u64(comm, &removed)?.concat();
        gone.sort_unstable();
        let total = offset(comm, recs.len() as u64)?.1 as usize;
        if total == 0 {
            return Err(Error::data(path, 0, "the file holds no ratings"));
        }
        // A position after duplicates: the earlier positions that were not removed.
        let pos: Vec<usize> = recs
            .iter()
            .map(|r| r.pos as usize - gone.partition_point(|&g| g < r.pos))
            .collect();
        let mut ratings = Ratings::with_capacity(recs.len());
        for r in &recs {
            ratings.push(r.user, r.item, r.value);
        }
        parts.push((ratings, pos, total));
    }
    let (train, valid, test) = if cfg.path.is_some() {
        let (r, pos, total) = &parts[0];
        split_positions(cfg, r, pos, *total, cfg.test_fraction)
    } else {
        let (r, pos, total) = &parts[0];
        let (tr, va, _) = split_positions(cfg, r, pos, *total, 0.0);
        let te = parts.get(1).map(|p| p.0.clone()).unwrap_or_default();
        (tr, va, te)
    };
    let source = match (&cfg.path, &cfg.train, &cfg.test) {
        (Some(p), _, _) => p.display().to_string(),
        (_, Some(t), Some(s)) => format!("{} + {}", t.display(), s.display()),
        (_, Some(t), None) => t.display().to_string(),
        _ => unreachable!("prepare_ranges reads files"),
    };
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
        owners[rank].clone(),
    ))
}

/// The test and validation split of one reader's `total` entries (`split_masks`, with a test
/// fraction of `test_fraction`), applied to the entries `r` this process holds, at one reader's
/// positions `pos` (ascending): (train, validation, test).
pub(super) fn split_positions(
    cfg: &DataConfig,
    r: &Ratings,
    pos: &[usize],
    total: usize,
    test_fraction: f64,
) -> (Ratings, Ratings, Ratings) {
    let pick = |held: &[bool]| -> Vec<bool> { pos.iter().map(|&p| held[p]).collect() };
    let vf = cfg.validation_fraction;
    if test_fraction > 0.0 {
        let (held_test, held_valid) = split_masks(cfg, total);
        let test_here = pick(&held_test);
        match held_valid {
            Some(v) => {
                // A kept entry's validation mark sits at its rank among the kept positions,
                // counted in one walk over the ascending positions.
                let (mut at, mut kept) = (0, 0);
                let mut valid_here = Vec::with_capacity(pos.len());
                for &p in pos {
                    kept += held_test[at..p].iter().filter(|&&h| !h).count();
                    at = p;
                    if !held_test[p] {
                        valid_here.push(v[kept]);
                    }
                }
                apply3(r, &test_here, &valid_here)
            }
            None => {
                let (tr, te) = apply(r, &test_here);
                (tr, Ratings::default(), te)
            }
        }
    } else if vf > 0.0 {
        let held = held_random(total, vf, cfg.split_seed.wrapping_add(1));
        let (tr, va) = apply(r, &pick(&held));
        (tr, va, Ratings::default())
    } else {
        (r.clone(), Ratings::default(), Ratings::default())
    }
}

/// Resolves pairs seen in more than one range (each range resolved its own): `error` names the
/// later line, `keep_last` keeps the first position with the last value. Returns the positions
/// removed.
fn resolve_duplicates(
    path: &Path,
    recs: &mut Vec<Rec>,
    dups: DuplicatePolicy,
    users: &IdMap,
    items: &IdMap,
) -> Result<Vec<u64>> {
    let mut order: Vec<usize> = (0..recs.len()).collect();
    order.sort_unstable_by_key(|&k| (recs[k].user, recs[k].item, recs[k].pos));
    let mut drop = vec![false; recs.len()];
    let mut removed = Vec::new();
    let mut first_error: Option<(u64, u64, usize)> = None;
    let mut g = 0;
    while g < order.len() {
        let key = |k: usize| (recs[k].user, recs[k].item);
        let mut e = g + 1;
        while e < order.len() && key(order[e]) == key(order[g]) {
            e += 1;
        }
        if e - g > 1 {
            let (first, later) = (order[g], order[g + 1]);
            match dups {
                DuplicatePolicy::Error => {
                    let l = recs[later].line;
                    if first_error.is_none_or(|(fl, _, _)| l < fl) {
                        first_error = Some((l, recs[first].line, later));
                    }
                }
                DuplicatePolicy::KeepLast => {
                    recs[first].value = recs[order[e - 1]].value;
                    for &k in &order[g + 1..e] {
                        drop[k] = true;
                        removed.push(recs[k].pos);
                    }
                }
            }
        }
        g = e;
    }
    if let Some((line, first_line, k)) = first_error {
        return Err(Error::data(
            path,
            line as usize,
            format!(
                "duplicate pair (user {}, item {}), first seen on line {first_line} \
                 (set data.duplicates to \"keep_last\" to keep the later value)",
                crate::data::read::quote(users.name(recs[k].user)),
                crate::data::read::quote(items.name(recs[k].item)),
            ),
        ));
    }
    let mut k = 0;
    recs.retain(|_| {
        k += 1;
        !drop[k - 1]
    });
    Ok(removed)
}
