//! The chunked parallel reader of delimited rating files, and what every reader shares after
//! parsing: duplicate handling by sorting, and line numbers recovered from entry positions.
//!
//! The input is read in chunks of whole lines (a few tens of MiB, so the text and the parsed
//! arrays are never both held beyond one chunk). A chunk is cut at line ends into pieces that the
//! threads parse at once with [`super::read::parse_line`], the reference reader's own line
//! parser; ids are then mapped to dense indices piece by piece, in file order, so the result is
//! the serial reader's to the bit: same entries, same order, same id numbering, same first error.
//! Ids that are plain decimal integers are mapped through a direct table (no hashing, no string
//! built until an id is new); others through the id map's hash table.

use super::read::{line_text, parse_line, Line, ReadOptions};
use super::{Dataset, IdMap, Ratings};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::io::BufRead;
use std::path::Path;

/// Bytes of text parsed per chunk.
pub const DEFAULT_CHUNK: usize = 32 << 20;

/// How far a load has come.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// `parse`, `ids`, `split`, `matrix` (or `cache`).
    pub phase: &'static str,
    /// Input bytes consumed (after decompression).
    pub bytes: u64,
    /// The input's size, where known.
    pub total: Option<u64>,
    /// Lines read.
    pub lines: u64,
}

/// Entries as read, before duplicates are resolved, with what is needed to give an entry's line.
#[derive(Debug, Default)]
pub(crate) struct Raw {
    pub ratings: Ratings,
    /// Entries are rows of a table (Parquet), not lines: messages say `row N`.
    pub rows: bool,
    /// (entry index, lines skipped before that entry in all): a line without an entry (blank, a
    /// header, Matrix Market's banner, comments and size line) moves every later entry's line
    /// number down by one.
    skips: Vec<(usize, usize)>,
}

impl Raw {
    /// Records one line that holds no entry.
    pub fn skip_line(&mut self) {
        self.skip_lines(1);
    }

    fn skip_lines(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let at = self.ratings.nnz();
        match self.skips.last_mut() {
            Some(last) if last.0 == at => last.1 += n,
            Some(&mut (_, total)) => self.skips.push((at, total + n)),
            None => self.skips.push((at, n)),
        }
    }

    /// The 1-based line of entry `k`.
    pub fn line_of(&self, k: usize) -> usize {
        let before = self.skips.partition_point(|&(at, _)| at <= k);
        k + 1
            + if before == 0 {
                0
            } else {
                self.skips[before - 1].1
            }
    }

    /// Resolves duplicate pairs by `dups` and returns the entries; `failure` is the first error
    /// the parse met (the entries are those before it). A duplicate on an earlier line than the
    /// failure is reported instead, as a reader going line by line would.
    pub fn finish(
        self,
        path: &Path,
        dups: super::read::DuplicatePolicy,
        ds: &Dataset,
        failure: Option<Error>,
    ) -> Result<Ratings> {
        self.finish_lines(path, dups, ds, failure, None)
    }

    /// [`Raw::finish`], also giving each kept entry's line to `lines`.
    pub fn finish_lines(
        mut self,
        path: &Path,
        dups: super::read::DuplicatePolicy,
        ds: &Dataset,
        failure: Option<Error>,
        lines: Option<&std::sync::Mutex<Vec<u64>>>,
    ) -> Result<Ratings> {
        use super::read::DuplicatePolicy;
        if u32::try_from(self.ratings.nnz()).is_err() {
            return Err(Error::data(
                path,
                0,
                format!(
                    "{} entries in one file; at most {} are supported",
                    self.ratings.nnz(),
                    u32::MAX
                ),
            ));
        }
        let groups = duplicate_groups(&self.ratings, ds.users.len());
        match dups {
            DuplicatePolicy::Error => {
                if let Some((first, later)) = groups
                    .iter()
                    .map(|g| (g[0] as usize, g[1] as usize))
                    .min_by_key(|&(_, later)| later)
                {
                    let r = &self.ratings;
                    let what = format!(
                        "duplicate pair (user {}, item {}), first seen on {} {} \
                         (set data.duplicates to \"keep_last\" to keep the later value)",
                        super::read::quote(ds.users.name(r.users[later])),
                        super::read::quote(ds.items.name(r.items[later])),
                        if self.rows { "row" } else { "line" },
                        self.line_of(first)
                    );
                    return Err(if self.rows {
                        Error::data(path, 0, format!("row {}: {what}", later + 1))
                    } else {
                        Error::data(path, self.line_of(later), what)
                    });
                }
            }
            DuplicatePolicy::KeepLast => {
                if !groups.is_empty() {
                    let mut drop = vec![false; self.ratings.nnz()];
                    for g in &groups {
                        let last = *g.last().expect("a group has two entries") as usize;
                        self.ratings.values[g[0] as usize] = self.ratings.values[last];
                        for &k in &g[1..] {
                            drop[k as usize] = true;
                        }
                    }
                    if let Some(out) = lines {
                        let kept = (0..drop.len()).filter(|&k| !drop[k]);
                        let v: Vec<u64> = kept.map(|k| self.line_of(k) as u64).collect();
                        *out.lock().expect("no panic holds this lock") = v;
                    }
                    let r = &mut self.ratings;
                    let mut w = 0;
                    for (k, &gone) in drop.iter().enumerate() {
                        if !gone {
                            r.users[w] = r.users[k];
                            r.items[w] = r.items[k];
                            r.values[w] = r.values[k];
                            w += 1;
                        }
                    }
                    r.users.truncate(w);
                    r.items.truncate(w);
                    r.values.truncate(w);
                }
            }
        }
        if let Some(out) = lines {
            let mut v = out.lock().expect("no panic holds this lock");
            if v.len() != self.ratings.nnz() {
                *v = (0..self.ratings.nnz())
                    .map(|k| self.line_of(k) as u64)
                    .collect();
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(self.ratings),
        }
    }
}

/// The positions of every (user, item) pair that occurs more than once, one ascending list per
/// pair. Entries are bucketed by user (a counting sort), then sorted by (item, position) within a
/// user, so equal pairs sit side by side.
fn duplicate_groups(r: &Ratings, n_users: usize) -> Vec<Vec<u32>> {
    let (ptr, mut order) = super::positions_by_row(&r.users, n_users);
    let mut rows: Vec<&mut [u32]> = Vec::with_capacity(n_users);
    let mut rest: &mut [u32] = &mut order;
    for u in 0..n_users {
        let (a, b) = rest.split_at_mut(ptr[u + 1] - ptr[u]);
        if a.len() > 1 {
            rows.push(a);
        }
        rest = b;
    }
    let items = &r.items;
    rows.par_iter_mut()
        .flat_map_iter(|row| {
            // Positions within a row are ascending already: a stable sort by item keeps them so.
            row.sort_by_key(|&k| items[k as usize]);
            let mut groups = Vec::new();
            let mut s = 0;
            while s < row.len() {
                let mut e = s + 1;
                while e < row.len() && items[row[e] as usize] == items[row[s] as usize] {
                    e += 1;
                }
                if e - s > 1 {
                    groups.push(row[s..e].to_vec());
                }
                s = e;
            }
            groups
        })
        .collect()
}

/// A token's key: a plain decimal integer below 2^62 as itself, otherwise `STR | span index`.
const STR: u64 = 1 << 63;

/// What the threads parse out of one piece of a chunk. Ids already known are mapped while
/// parsing; a new one is stored as `FRESH | n`, its number among the piece's new ids, which the
/// in-order pass turns into the dense index.
#[derive(Default)]
struct Piece {
    entries: Ratings,
    fresh_users: Fresh,
    fresh_items: Fresh,
    /// (start, end) byte offsets within the piece of the tokens keyed `STR | index`.
    spans: Vec<(u32, u32)>,
    /// (entry index within the piece, lines without an entry just before it).
    skips: Vec<(u32, u32)>,
    /// Lines without an entry after the last entry.
    trailing_skips: usize,
    /// Lines in the piece (up to the failing one, which counts).
    lines: usize,
    header: Option<String>,
    /// The first problem: (line within the piece, 1-based; message).
    error: Option<(usize, String)>,
}

impl Piece {
    /// Empties the piece, keeping its buffers.
    fn clear(&mut self) {
        self.entries.users.clear();
        self.entries.items.clear();
        self.entries.values.clear();
        self.fresh_users.clear();
        self.fresh_items.clear();
        self.spans.clear();
        self.skips.clear();
        self.trailing_skips = 0;
        self.lines = 0;
        self.header = None;
        self.error = None;
    }
}

/// A token that is a plain decimal integer (no sign, no leading zero, at most 18 digits): its
/// value. Its decimal spelling is then the token itself.
fn plain_int(token: &str) -> Option<u64> {
    let b = token.as_bytes();
    if b.is_empty() || b.len() > 18 || (b[0] == b'0' && b.len() > 1) {
        return None;
    }
    b.iter().try_fold(0u64, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + (c - b'0') as u64)
    })
}

/// The key of a token: a plain integer as itself, otherwise `STR | n` with its span recorded.
fn key(token: &str, base: *const u8, spans: &mut Vec<(u32, u32)>) -> u64 {
    if let Some(v) = plain_int(token) {
        return v;
    }
    let start = token.as_ptr() as usize - base as usize;
    spans.push((start as u32, (start + token.len()) as u32));
    STR | (spans.len() as u64 - 1)
}

#[allow(clippy::too_many_arguments)]
fn parse_piece(
    p: &mut Piece,
    text: &[u8],
    first_line_of_file: bool,
    opts: &ReadOptions,
    path: &Path,
    uids: &Ids,
    iids: &Ids,
) {
    p.clear();
    let base = text.as_ptr();
    let mut pending_skips = 0u32;
    // One check of the whole piece spares one per line (a piece with bad bytes goes line by
    // line, to name the first bad line as the reference reader does).
    let valid = simdutf8::basic::from_utf8(text).ok();
    let mut at = 0usize;
    while at < text.len() {
        let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |e| at + e);
        let raw = &text[at..end];
        let line_start = at;
        at = end + 1;
        p.lines += 1;
        let first = first_line_of_file && p.lines == 1;
        if let (false, Some(valid)) = (first, valid) {
            if let Some((user, item, value)) = ascii_fields(&valid[line_start..end], opts.format) {
                if let Ok(value) = super::read::parse_rating(value) {
                    push_entry(p, &mut pending_skips, user, item, value, base, (uids, iids));
                    continue;
                }
            }
        }
        let line = match std::str::from_utf8(raw) {
            Ok(s) => s,
            Err(_) => {
                // The reference reader's own message, from the same standard-library call.
                let msg = match std::io::Cursor::new(raw).lines().next() {
                    Some(Err(e)) => format!("cannot read line: {e}"),
                    _ => "cannot read line: stream did not contain valid UTF-8".to_string(),
                };
                p.error = Some((p.lines, msg));
                break;
            }
        };
        let t = line_text(line, first);
        match parse_line(t, first, opts.format, opts.header, path) {
            Ok(Line::Entry { user, item, value }) => {
                push_entry(p, &mut pending_skips, user, item, value, base, (uids, iids))
            }
            Ok(Line::Blank) => pending_skips += 1,
            Ok(Line::Header(note)) => {
                p.header = Some(note);
                pending_skips += 1;
            }
            Err(m) => {
                p.error = Some((p.lines, m));
                break;
            }
        }
    }
    p.trailing_skips = pending_skips as usize;
}

/// The ids a piece meets that were not known before its chunk, in order of first appearance.
#[derive(Default)]
struct Fresh {
    /// Keys, as [`key`] gives them (spans index the piece's `spans`).
    keys: Vec<u64>,
    ints: hashbrown::HashMap<u64, u32>,
    strs: hashbrown::HashMap<String, u32>,
    /// The dense index of each key, filled in by the in-order pass.
    resolved: Vec<u32>,
}

impl Fresh {
    fn clear(&mut self) {
        self.keys.clear();
        self.ints.clear();
        self.strs.clear();
        self.resolved.clear();
    }

    /// `FRESH | n` for the piece's n-th new id.
    fn local(&mut self, key: u64, token: &str) -> u32 {
        let next = self.keys.len() as u32;
        // Files sorted by user meet a new user's entries one after another.
        if key & STR == 0 && next > 0 && self.keys[next as usize - 1] == key {
            return FRESH | (next - 1);
        }
        let n = if key & STR == 0 {
            *self.ints.entry(key).or_insert(next)
        } else if let Some(&n) = self.strs.get(token) {
            n
        } else {
            self.strs.insert(token.to_string(), next);
            next
        };
        if n == next {
            self.keys.push(key);
        }
        FRESH | n
    }
}

/// Marks an index that is a piece's new-id number, not yet a dense index.
const FRESH: u32 = 1 << 31;

/// Adds one entry to the piece, after the lines without one that came before it.
#[inline]
fn push_entry(
    p: &mut Piece,
    pending_skips: &mut u32,
    user: &str,
    item: &str,
    value: f32,
    base: *const u8,
    (uids, iids): (&Ids, &Ids),
) {
    if *pending_skips > 0 {
        p.skips.push((p.entries.nnz() as u32, *pending_skips));
        *pending_skips = 0;
    }
    let ku = key(user, base, &mut p.spans);
    let mut u = uids.known(ku, user);
    if u == ABSENT {
        u = p.fresh_users.local(ku, user);
    }
    let ki = key(item, base, &mut p.spans);
    let mut i = iids.known(ki, item);
    if i == ABSENT {
        i = p.fresh_items.local(ki, item);
    }
    p.entries.push(u, i, value);
}

/// Whitespace as `str::trim` and `split_whitespace` see it, within ASCII.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The bounds of `b[lo..hi]` without ASCII whitespace at either end.
fn trim_range(b: &[u8], mut lo: usize, mut hi: usize) -> (usize, usize) {
    while lo < hi && is_space(b[lo]) {
        lo += 1;
    }
    while hi > lo && is_space(b[hi - 1]) {
        hi -= 1;
    }
    (lo, hi)
}

/// The user, item and rating tokens of a well-formed ASCII line that is not line 1, split exactly
/// as [`parse_line`] splits it; `None` for anything else (non-ASCII, blank, a wrong field count,
/// an empty id), which then takes the reference path with its messages.
fn ascii_fields(line: &str, format: super::read::Format) -> Option<(&str, &str, &str)> {
    use super::read::Format;
    let b = line.as_bytes();
    if !b.is_ascii() {
        return None;
    }
    let (lo, hi) = trim_range(b, 0, b.len());
    let mut f = [(0usize, 0usize); 4];
    let mut n = 0usize;
    match format {
        Format::Tsv => {
            let mut at = lo;
            while at < hi {
                while at < hi && is_space(b[at]) {
                    at += 1;
                }
                if at == hi {
                    break;
                }
                let start = at;
                while at < hi && !is_space(b[at]) {
                    at += 1;
                }
                if n == 3 {
                    return None;
                }
                f[n] = (start, at);
                n += 1;
            }
            (n == 3).then_some(())?;
        }
        Format::Movielens | Format::Csv => {
            let csv = format == Format::Csv;
            let sep = if csv { b',' } else { b'\t' };
            let mut start = lo;
            loop {
                if n == 4 {
                    return None;
                }
                let end = memchr::memchr(sep, &b[start..hi]).map_or(hi, |e| start + e);
                f[n] = if csv {
                    trim_range(b, start, end)
                } else {
                    (start, end)
                };
                n += 1;
                if end == hi {
                    break;
                }
                start = end + 1;
            }
            let ok = if csv { n == 3 || n == 4 } else { n == 4 };
            ok.then_some(())?;
        }
        Format::Dat => {
            let mut start = lo;
            loop {
                if n == 4 {
                    return None;
                }
                match b[start..hi].windows(2).position(|w| w == b"::") {
                    Some(at) => {
                        f[n] = (start, start + at);
                        start += at + 2;
                        n += 1;
                    }
                    None => {
                        f[n] = (start, hi);
                        n += 1;
                        break;
                    }
                }
            }
            (n == 4).then_some(())?;
        }
        Format::Mtx | Format::Parquet | Format::Auto => return None,
    }
    let tok = |(a, e): (usize, usize)| &line[a..e];
    if f[0].0 == f[0].1 || f[1].0 == f[1].1 {
        return None;
    }
    Some((tok(f[0]), tok(f[1]), tok(f[2])))
}

/// Maps keys to dense indices: plain integers through a direct table that caches the id map,
/// everything else through the map itself. New integer ids that the table holds get their index
/// at once but their name (and place in the map's hash table) later, all together and in
/// parallel: `pending` lists them in index order after the map's own.
pub(crate) struct Ids {
    map: IdMap,
    table: Vec<u32>,
    pending: Vec<u64>,
    /// Whether the map may hold a plain integer the table does not (then a new-looking integer
    /// is looked up in the map before it is added).
    uncached: bool,
}

const ABSENT: u32 = u32::MAX;

impl Ids {
    pub fn new(map: IdMap) -> Self {
        let mut ids = Ids {
            map,
            table: Vec::new(),
            pending: Vec::new(),
            uncached: false,
        };
        for k in 0..ids.map.len() {
            if let Some(v) = plain_int(ids.map.name(k as u32)) {
                if !ids.cache(v, k as u32) {
                    ids.uncached = true;
                }
            }
        }
        ids
    }

    /// Ids known, pending ones included.
    fn len(&self) -> usize {
        self.map.len() + self.pending.len()
    }

    /// The map with every id in it.
    pub fn into_map(mut self) -> IdMap {
        self.flush();
        self.map
    }

    /// Names the pending ids and adds them to the map.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let names: Vec<String> = self.pending.par_iter().map(|k| k.to_string()).collect();
        self.pending.clear();
        self.map.extend_new(names);
    }

    /// The largest value the table may grow to hold: 2^20, or four per id known (so a few
    /// sparse large ids do not allocate a huge table).
    fn limit(&self) -> usize {
        (1usize << 20).max(4 * self.len())
    }

    /// Remembers `v → index` when the table may grow that far; whether it did.
    fn cache(&mut self, v: u64, index: u32) -> bool {
        let limit = self.limit();
        if (v as usize) >= limit {
            return false;
        }
        if v as usize >= self.table.len() {
            let want = (v as usize + 1).max(self.table.len() * 2).min(limit);
            self.table.resize(want, ABSENT);
        }
        self.table[v as usize] = index;
        true
    }

    /// The index of a token already known, or [`ABSENT`] (read-only, so the threads share it).
    fn known(&self, key: u64, token: &str) -> u32 {
        if key & STR == 0 {
            match self.table.get(key as usize) {
                Some(&i) if i != ABSENT => i,
                // Not cached: the in-order pass asks the map (and caches what it finds).
                Some(_) if !self.uncached => ABSENT,
                _ => self.map.get(token).unwrap_or(ABSENT),
            }
        } else {
            self.map.get(token).unwrap_or(ABSENT)
        }
    }

    /// The index of a token, added when new.
    pub fn token(&mut self, token: &str) -> u32 {
        if let Some(v) = plain_int(token) {
            self.index(v, &[], &[])
        } else {
            self.flush();
            self.map.get_or_insert(token)
        }
    }

    /// The index of a key ([`key`]), added when new; spans index into `piece`.
    fn index(&mut self, key: u64, piece: &[u8], spans: &[(u32, u32)]) -> u32 {
        if key & STR == 0 {
            if let Some(&i) = self.table.get(key as usize) {
                if i != ABSENT {
                    return i;
                }
            }
            if !self.uncached && (key as usize) < self.limit() {
                let i = self.len() as u32;
                self.pending.push(key);
                self.cache(key, i);
                return i;
            }
            self.flush();
            let i = self.map.get_or_insert(&key.to_string());
            if !self.cache(key, i) {
                self.uncached = true;
            }
            i
        } else {
            self.flush();
            let (s, e) = spans[(key & !STR) as usize];
            let token = std::str::from_utf8(&piece[s as usize..e as usize])
                .expect("spans lie on the boundaries of a parsed token");
            self.map.get_or_insert(token)
        }
    }
}

/// Reads a delimited file (`movielens`, `dat`, `csv`, `tsv`) in chunks of about `chunk` bytes,
/// each parsed by all threads; see the module notes.
pub(crate) fn read_delimited(
    mut reader: impl BufRead,
    path: &Path,
    opts: &ReadOptions,
    size: Option<u64>,
    chunk: usize,
    ds: &mut Dataset,
) -> Result<Ratings> {
    let chunk = chunk.max(1);
    let pieces_per_chunk = rayon::current_num_threads() * 4;
    let mut raw = Raw::default();
    // Grown as the text comes (a small input never allocates a whole chunk).
    let mut buf: Vec<u8> = Vec::with_capacity(chunk.min(1 << 20));
    let mut eof = false;
    // A stream that starts inside a file: its lines are numbered on from the file's.
    let mut lines = opts.first_line.saturating_sub(1);
    raw.skip_lines(lines);
    let mut bytes = 0u64;
    let mut failure = None;
    let mut read_failure: Option<std::io::Error> = None;
    let mut sized = false;
    let mut uids = Ids::new(std::mem::take(&mut ds.users));
    let mut iids = Ids::new(std::mem::take(&mut ds.items));
    let mut pieces: Vec<Piece> = Vec::new();
    let mut want = chunk;
    'chunks: loop {
        while buf.len() < want && !eof {
            let spare = want - buf.len();
            let got = match reader.fill_buf() {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The whole lines before the failure are still read, as line by line.
                    read_failure = Some(e);
                    eof = true;
                    break;
                }
            };
            if got.is_empty() {
                eof = true;
                break;
            }
            let n = got.len().min(spare);
            buf.extend_from_slice(&got[..n]);
            reader.consume(n);
        }
        let cut = if read_failure.is_some() {
            memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1)
        } else if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => i + 1,
                None => {
                    // One line longer than a chunk: read on until it ends.
                    want = buf.len() * 2;
                    continue;
                }
            }
        };
        want = chunk;
        if cut == 0 {
            if let Some(e) = read_failure.take() {
                failure = Some(read_error(path, lines, e));
            }
            break;
        }
        let text = &buf[..cut];
        let bounds = piece_bounds(text, pieces_per_chunk);
        let first_chunk = bytes == 0 && opts.first_line <= 1;
        pieces.resize_with(pieces.len().max(bounds.len()), Piece::default);
        {
            let (u, i) = (&uids, &iids);
            pieces
                .par_iter_mut()
                .zip(&bounds)
                .enumerate()
                .for_each(|(n, (p, r))| {
                    parse_piece(p, &text[r.clone()], first_chunk && n == 0, opts, path, u, i)
                });
        }
        if !sized {
            // Size the arrays from the first chunk's density of entries.
            sized = true;
            if let Some(total) = size {
                let got: usize = pieces[..bounds.len()].iter().map(|p| p.entries.nnz()).sum();
                let est = (got as f64 * total as f64 / cut.max(1) as f64 * 1.01) as usize;
                raw.ratings.users.reserve(est);
                raw.ratings.items.reserve(est);
                raw.ratings.values.reserve(est);
            }
        }
        if let Some(f) = opts.progress {
            f(&Progress {
                phase: "ids",
                bytes,
                total: size,
                lines: lines as u64,
            });
        }
        // New ids get their dense indices in file order, then each piece rewrites its own.
        let mut last = bounds.len();
        for (n, (p, r)) in pieces[..bounds.len()].iter_mut().zip(&bounds).enumerate() {
            let piece = &text[r.clone()];
            for (fresh, ids) in [
                (&mut p.fresh_users, &mut uids),
                (&mut p.fresh_items, &mut iids),
            ] {
                fresh.resolved = fresh
                    .keys
                    .iter()
                    .map(|&k| ids.index(k, piece, &p.spans))
                    .collect();
            }
            if p.error.is_some() {
                last = n + 1;
                break;
            }
        }
        if uids.len() >= FRESH as usize || iids.len() >= FRESH as usize {
            return Err(Error::data(
                path,
                0,
                format!("more than {} distinct user or item ids", FRESH - 1),
            ));
        }
        pieces[..last].par_iter_mut().for_each(|p| {
            for (ids, fresh) in [
                (&mut p.entries.users, &p.fresh_users),
                (&mut p.entries.items, &p.fresh_items),
            ] {
                if !fresh.keys.is_empty() {
                    for x in ids.iter_mut() {
                        if *x & FRESH != 0 {
                            *x = fresh.resolved[(*x & !FRESH) as usize];
                        }
                    }
                }
            }
        });
        for p in &pieces[..last] {
            if let Some(note) = &p.header {
                ds.notes.push(note.clone());
            }
            let mut prev = 0;
            for &(k, n) in &p.skips {
                raw.ratings.extend_from(&p.entries, prev..k as usize);
                raw.skip_lines(n as usize);
                prev = k as usize;
            }
            raw.ratings.extend_from(&p.entries, prev..p.entries.nnz());
            raw.skip_lines(p.trailing_skips);
            if let Some((line, msg)) = &p.error {
                failure = Some(Error::data(path, lines + line, msg.clone()));
                break 'chunks;
            }
            lines += p.lines;
        }
        if let Some(e) = read_failure.take() {
            failure = Some(read_error(path, lines, e));
            break;
        }
        bytes += cut as u64;
        if let Some(f) = opts.progress {
            f(&Progress {
                phase: "parse",
                bytes,
                total: size,
                lines: lines as u64,
            });
        }
        buf.drain(..cut);
    }
    ds.users = uids.into_map();
    ds.items = iids.into_map();
    let any_line = lines > 0 || failure.is_some();
    let out = match (opts.alongside, &failure) {
        (Some(f), None) => {
            let n = raw.ratings.nnz();
            let ds = &*ds;
            let done = || raw.finish_lines(path, opts.dups, ds, None, opts.entry_lines);
            rayon::join(done, || f(n)).0
        }
        _ => raw.finish_lines(path, opts.dups, ds, failure, opts.entry_lines),
    }?;
    // A part of a file may hold no entries; the whole file must.
    if opts.first_line <= 1 && (!any_line || out.nnz() == 0) {
        return Err(Error::data(path, 0, "the file holds no ratings"));
    }
    Ok(out)
}

fn read_error(path: &Path, lines: usize, e: std::io::Error) -> Error {
    Error::data(path, lines + 1, format!("cannot read line: {e}"))
}

/// Cuts `text` into about `n` ranges of whole lines.
fn piece_bounds(text: &[u8], n: usize) -> Vec<std::ops::Range<usize>> {
    let step = text.len().div_ceil(n.max(1)).max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < text.len() {
        let target = (start + step).min(text.len());
        let end = if target == text.len() {
            target
        } else {
            memchr::memchr(b'\n', &text[target..]).map_or(text.len(), |e| target + e + 1)
        };
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::read::{read_from_serial, DuplicatePolicy, Format};

    fn both(text: &str, format: Format, dups: DuplicatePolicy, chunk: usize) {
        let path = Path::new("t.txt");
        let mut a = Dataset::default();
        let ra = read_from_serial(text.as_bytes(), path, format, dups, None, &mut a);
        let mut b = Dataset::default();
        let opts = ReadOptions {
            format,
            dups,
            ..Default::default()
        };
        let rb = read_delimited(text.as_bytes(), path, &opts, None, chunk, &mut b);
        match (ra, rb) {
            (Ok(x), Ok(y)) => {
                assert_eq!(x, y, "{text:?}");
                assert_eq!(a.users, b.users);
                assert_eq!(a.items, b.items);
                assert_eq!(a.notes, b.notes);
            }
            (Err(x), Err(y)) => assert_eq!(x.to_string(), y.to_string(), "{text:?}"),
            (x, y) => panic!("{text:?} chunk {chunk}: serial {x:?}, parallel {y:?}"),
        }
    }

    #[test]
    fn chunked_reader_matches_the_serial_one() {
        let cases = [
            "user item rating\n1 2 3\n\n10 2 4\n1 3 5\n",
            "a b 1\nb a 2\n\n\n007 7 1.5\n7 007 2\n",
            "1 2 3\n1 2 4\n",
            "1 2 3\n2 2 x\n1 2 4\n",
            "1 2 3\n1 2 4\n2 2 x\n",
            "1 2 3\n2 3 4\n1 2 5\n3 3 1\n2 3 9\n",
            "\u{feff}1 2 3\r\n4 5 6\r\n",
            "1 2 3\n\u{feff}4 5 6\n",
            "1 2\n",
            "",
            "\n\n",
            "99999999999999999999 1 1\n1 99999999999999999999 2\n",
        ];
        for text in cases {
            for chunk in [1, 3, 8, 1 << 20] {
                for dups in [DuplicatePolicy::Error, DuplicatePolicy::KeepLast] {
                    both(text, Format::Tsv, dups, chunk);
                    both(&text.replace(' ', ","), Format::Csv, dups, chunk);
                }
            }
        }
        both(
            "1\t2\t3\t4\n\t2\t3\t4\n",
            Format::Movielens,
            DuplicatePolicy::Error,
            4,
        );
        both(
            "1::2::3::4\n1::2::3::5\n",
            Format::Dat,
            DuplicatePolicy::Error,
            4,
        );
    }

    #[test]
    fn invalid_utf8_is_named_like_the_serial_reader_does() {
        let text: &[u8] = b"1 2 3\n1 \xff 3\n";
        let path = Path::new("t.tsv");
        let mut a = Dataset::default();
        let ea = read_from_serial(
            text,
            path,
            Format::Tsv,
            DuplicatePolicy::Error,
            None,
            &mut a,
        )
        .unwrap_err();
        let mut b = Dataset::default();
        let opts = ReadOptions {
            format: Format::Tsv,
            ..Default::default()
        };
        let eb = read_delimited(text, path, &opts, None, 4, &mut b).unwrap_err();
        assert_eq!(ea.to_string(), eb.to_string());
        assert!(ea.to_string().contains("t.tsv:2: cannot read line"), "{ea}");
    }

    #[test]
    fn line_numbers_follow_skipped_lines() {
        let mut r = Raw::default();
        r.skip_line(); // line 1
        r.ratings.push(0, 0, 1.0); // line 2
        r.skip_line();
        r.skip_line(); // lines 3, 4
        r.ratings.push(0, 1, 1.0); // line 5
        r.ratings.push(0, 2, 1.0); // line 6
        assert_eq!((r.line_of(0), r.line_of(1), r.line_of(2)), (2, 5, 6));
    }
}
