//! Readers for rating files. Every error names the file, the 1-based line and what was wrong; no
//! reader panics on bad input.
//!
//! Formats:
//! - `movielens`: MovieLens-100k `u.data`, `user<TAB>item<TAB>rating<TAB>timestamp`;
//! - `dat`: MovieLens `ratings.dat`, `user::item::rating::timestamp`;
//! - `csv`: comma-separated `user,item,rating[,timestamp]`, with an optional header line (the
//!   first line is a header when none of its fields reads as a number; `data.header` forces it);
//! - `tsv`: whitespace- or tab-separated `user item rating` triplets;
//! - `mtx`: Matrix Market `coordinate real|integer general`, 1-based indices;
//! - `parquet`: Apache Parquet, the user, item and rating columns named by `data.columns`;
//! - `auto`: chosen from the file name (`u.data`, `*.dat`, `*.csv`, `*.mtx`, `*.parquet`, else
//!   `tsv`); a file that starts with Parquet's magic bytes is read as Parquet whatever its name.
//!
//! gzip and zstd files are decompressed on the fly (told by their magic bytes; `auto` looks at the
//! name without `.gz`/`.zst`). A UTF-8 byte-order mark at the start of a file is dropped in every
//! format. Messages quote at
//! most 80 characters of an offending token.

use super::{Dataset, IdMap, Ratings};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::Path;

/// File format of a rating file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Auto,
    Movielens,
    Dat,
    Csv,
    Tsv,
    Mtx,
    /// Apache Parquet, columns named by `data.columns`.
    Parquet,
}

/// Which Parquet columns hold the user id, the item id and the rating.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Columns {
    pub user: String,
    pub item: String,
    pub rating: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            user: "user".into(),
            item: "item".into(),
            rating: "rating".into(),
        }
    }
}

/// What to do when a (user, item) pair appears twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// Stop with an error naming both lines.
    #[default]
    Error,
    /// Keep the value on the later line.
    KeepLast,
}

impl Format {
    /// The concrete format for `path` when `self` is `Auto`.
    pub fn resolve(self, path: &Path) -> Format {
        if self != Format::Auto {
            return self;
        }
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        // A compressed file is named by what it holds: `ratings.csv.gz` is a CSV.
        let name = [".gz", ".zst", ".zstd"]
            .iter()
            .find_map(|ext| name.strip_suffix(ext))
            .unwrap_or(&name)
            .to_string();
        if name == "u.data" {
            Format::Movielens
        } else if name.ends_with(".dat") {
            Format::Dat
        } else if name.ends_with(".csv") {
            Format::Csv
        } else if name.ends_with(".mtx") {
            Format::Mtx
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            Format::Parquet
        } else {
            Format::Tsv
        }
    }
}

/// Reads a file of `user item` pairs (whitespace- or comma-separated; further columns, blank
/// lines and `#` comments are ignored), in the original ids' spelling. The whole file is read
/// before anything is returned, so an error on any line leaves nothing half-done downstream.
pub fn read_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    read_pairs_from(open_text(path)?, path)
}

/// [`read_pairs`] from any reader; `path` names it in errors.
pub fn read_pairs_from(reader: impl BufRead, path: &Path) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (k, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::data(path, k + 1, format!("cannot read line: {e}")))?;
        let t = if k == 0 {
            line.trim_start_matches('\u{feff}').trim()
        } else {
            line.trim()
        };
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut f = t
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty());
        match (f.next(), f.next()) {
            (Some(u), Some(i)) => pairs.push((u.to_string(), i.to_string())),
            _ => {
                return Err(Error::data(
                    path,
                    k + 1,
                    "expected `user item`, found 1 field",
                ))
            }
        }
    }
    Ok(pairs)
}

/// Reads one rating file into a new data set with fresh id maps.
pub fn read_file(path: &Path, format: Format, dups: DuplicatePolicy) -> Result<Dataset> {
    let mut ds = Dataset::default();
    ds.ratings = read_into(path, format, dups, &mut ds)?;
    Ok(ds)
}

/// Reads one rating file, extending the id maps of `ds` (so a test file shares the train ids) and
/// returning the entries read. The entries are not appended to `ds.ratings`.
pub fn read_into(
    path: &Path,
    format: Format,
    dups: DuplicatePolicy,
    ds: &mut Dataset,
) -> Result<Ratings> {
    read_into_with(path, format, dups, None, ds)
}

/// A token as quoted in a message: at most 80 characters, cut with `…`.
pub(crate) fn quote(token: &str) -> String {
    const MAX: usize = 80;
    match token.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &token[..cut]),
        None => token.to_string(),
    }
}

/// [`read_into`] with the header rule given: `Some(true)` skips the first line, `Some(false)`
/// reads it as data, `None` skips it (CSV and TSV only) when none of its fields reads as a
/// number. A skipped header is recorded in `ds.notes`.
pub fn read_into_with(
    path: &Path,
    format: Format,
    dups: DuplicatePolicy,
    header: Option<bool>,
    ds: &mut Dataset,
) -> Result<Ratings> {
    read_into_opts(path, &ReadOptions::new(format, dups, header), ds)
}

/// [`read_into_with`] with all its options.
pub fn read_into_opts(path: &Path, opts: &ReadOptions, ds: &mut Dataset) -> Result<Ratings> {
    let format = opts.format.resolve(path);
    if format == Format::Parquet
        || (opts.format == Format::Auto && super::parquet::is_parquet(path))
    {
        let default = Columns::default();
        let columns = opts.columns.unwrap_or(&default);
        return super::parquet::read_parquet(path, columns, opts.dups, ds);
    }
    let (reader, size) = open_text_sized(path)?;
    read_from_with(reader, path, opts, size, ds)
}

/// Opens a text file for reading, decompressing gzip and zstd, which are told by their magic
/// bytes (not by the name).
pub fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    Ok(open_text_sized(path)?.0)
}

/// [`open_text`], with the text's size in bytes when the file is not compressed.
pub fn open_text_sized(path: &Path) -> Result<(Box<dyn BufRead>, Option<u64>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().ok().map(|m| m.len());
    let mut raw = BufReader::with_capacity(1 << 20, file);
    let magic = raw.fill_buf().map_err(|e| Error::io(path, e))?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        (
            Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::bufread::MultiGzDecoder::new(raw),
            )),
            None,
        )
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let z = zstd::stream::read::Decoder::with_buffer(raw)
            .map_err(|e| Error::data(path, 0, format!("cannot start the zstd decoder: {e}")))?;
        (Box::new(BufReader::with_capacity(1 << 20, z)), None)
    } else {
        (Box::new(raw), size)
    })
}

/// How to read one rating file.
#[derive(Clone, Copy, Default)]
pub struct ReadOptions<'a> {
    pub format: Format,
    pub dups: DuplicatePolicy,
    /// The header rule of [`read_into_with`].
    pub header: Option<bool>,
    /// Told how far the read has come, after every chunk.
    pub progress: Option<&'a (dyn Fn(&super::ingest::Progress) + Sync)>,
    /// Parquet column names (default [`Columns::default`]).
    pub columns: Option<&'a Columns>,
    /// Called with the number of entries parsed, while the duplicate check runs (delimited
    /// formats; so work that needs only the count, such as drawing a random split, overlaps it).
    pub alongside: Option<&'a (dyn Fn(usize) + Sync)>,
    /// Bytes of text parsed at once by the parallel reader (0: 32 MiB). Tests make it small to
    /// cut every line boundary.
    pub chunk: usize,
    /// The line number of the stream's first line (0 or 1: the start of the file). A stream
    /// that starts inside a file (a byte range of it, one process's share) names the file's own
    /// lines in its errors, and its first line is never a header.
    pub first_line: usize,
    /// Filled with each kept entry's line (delimited formats).
    pub entry_lines: Option<&'a std::sync::Mutex<Vec<u64>>>,
}

impl ReadOptions<'_> {
    /// The options of [`read_into_with`]: format, duplicate policy and header rule; no progress,
    /// default columns and chunk size.
    pub fn new(format: Format, dups: DuplicatePolicy, header: Option<bool>) -> Self {
        ReadOptions {
            format,
            dups,
            header,
            ..Default::default()
        }
    }
}

/// [`read_into_with`] from any reader; `path` names it in errors (and picks the format when
/// `format` is `Auto`). Delimited formats go through the chunked parallel reader
/// ([`super::ingest`]); Matrix Market files through [`read_from_serial`].
pub fn read_from(
    reader: impl BufRead,
    path: &Path,
    format: Format,
    dups: DuplicatePolicy,
    header: Option<bool>,
    ds: &mut Dataset,
) -> Result<Ratings> {
    read_from_with(
        reader,
        path,
        &ReadOptions::new(format, dups, header),
        None,
        ds,
    )
}

/// [`read_from`] with its options, and the input's size in bytes where known (for progress and
/// to size the arrays).
pub fn read_from_with(
    reader: impl BufRead,
    path: &Path,
    opts: &ReadOptions,
    size: Option<u64>,
    ds: &mut Dataset,
) -> Result<Ratings> {
    let format = opts.format.resolve(path);
    if format == Format::Parquet {
        return Err(Error::data(
            path,
            0,
            "Parquet is read from a file (a stream cannot be)",
        ));
    }
    if format == Format::Mtx {
        return read_from_serial(reader, path, format, opts.dups, opts.header, ds);
    }
    let chunk = match opts.chunk {
        0 => super::ingest::DEFAULT_CHUNK,
        c => c,
    };
    let opts = ReadOptions { format, ..*opts };
    super::ingest::read_delimited(reader, path, &opts, size, chunk, ds)
}

/// The text of one line as the readers see it: trimmed, and on line 1 without byte-order marks.
pub(crate) fn line_text(line: &str, first: bool) -> &str {
    if first {
        line.trim_start_matches('\u{feff}').trim()
    } else {
        line.trim()
    }
}

/// What one line of a delimited file holds.
pub(crate) enum Line<'a> {
    /// A blank line.
    Blank,
    /// Line 1 read as a header and skipped (the note to give).
    Header(String),
    /// One rating.
    Entry {
        user: &'a str,
        item: &'a str,
        value: f32,
    },
}

/// Parses the text of one line ([`line_text`]) of a delimited format (not `mtx`): the message of
/// the first thing wrong, without the file and line.
pub(crate) fn parse_line<'a>(
    text: &'a str,
    first: bool,
    format: Format,
    header: Option<bool>,
    path: &Path,
) -> std::result::Result<Line<'a>, String> {
    if text.is_empty() {
        return Ok(Line::Blank);
    }
    if first {
        let is_header = header.unwrap_or_else(|| {
            matches!(format, Format::Csv | Format::Tsv)
                && text
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|f| !f.is_empty())
                    .all(|f| f.trim().parse::<f64>().is_err())
        });
        if is_header {
            return Ok(Line::Header(format!(
                "{}: line 1 `{}` read as a header and skipped (set data.header to change this)",
                path.display(),
                quote(text)
            )));
        }
    }
    // Up to five fields are kept; more are only counted.
    let mut fields = [""; 5];
    let mut n = 0usize;
    let mut keep = |f: &'a str| {
        if n < fields.len() {
            fields[n] = f;
        }
        n += 1;
    };
    match format {
        Format::Movielens => text.split('\t').for_each(&mut keep),
        Format::Dat => text.split("::").for_each(&mut keep),
        Format::Csv => text.split(',').map(str::trim).for_each(&mut keep),
        Format::Tsv | Format::Mtx | Format::Parquet | Format::Auto => {
            text.split_whitespace().for_each(&mut keep)
        }
    }
    let (expected, optional_extra) = match format {
        Format::Movielens | Format::Dat => (4, 0),
        Format::Csv => (3, 1),
        _ => (3, 0),
    };
    if n < expected || n > expected + optional_extra {
        let want = if optional_extra > 0 {
            format!("{expected} or {}", expected + optional_extra)
        } else {
            expected.to_string()
        };
        return Err(format!(
            "expected {want} columns (user, item, rating{}), found {n}",
            if expected == 4 { ", timestamp" } else { "" },
        ));
    }
    let value = parse_rating(fields[2])?;
    if fields[0].is_empty() || fields[1].is_empty() {
        return Err("empty user or item id".into());
    }
    Ok(Line::Entry {
        user: fields[0],
        item: fields[1],
        value,
    })
}

/// A rating value: a finite `f32`.
pub(crate) fn parse_rating(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("rating `{}` is not finite ({v})", quote(s))),
        Err(_) => Err(format!("rating `{}` is not a number", quote(s))),
    }
}

/// The reference reader: one line at a time, one thread. Reads every format; `read_from` uses
/// it for Matrix Market files, and the tests and fuzz targets hold the parallel reader to it.
pub fn read_from_serial(
    reader: impl BufRead,
    path: &Path,
    format: Format,
    dups: DuplicatePolicy,
    header: Option<bool>,
    ds: &mut Dataset,
) -> Result<Ratings> {
    let format = format.resolve(path);
    let mut raw = super::ingest::Raw::default();
    let mut mtx_header: Option<(usize, usize, usize)> = None;
    let mut any_line = false;
    let mut failure: Option<Error> = None;
    for (k, line) in reader.lines().enumerate() {
        let line_no = k + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                failure = Some(Error::data(path, line_no, format!("cannot read line: {e}")));
                break;
            }
        };
        let text = line_text(&line, line_no == 1);
        any_line = true;
        if format != Format::Mtx {
            match parse_line(text, line_no == 1, format, header, path) {
                Ok(Line::Blank) => raw.skip_line(),
                Ok(Line::Header(note)) => {
                    ds.notes.push(note);
                    raw.skip_line();
                }
                Ok(Line::Entry { user, item, value }) => {
                    let u = ds.users.get_or_insert(user);
                    let i = ds.items.get_or_insert(item);
                    raw.ratings.push(u, i, value);
                }
                Err(m) => {
                    failure = Some(Error::data(path, line_no, m));
                    break;
                }
            }
            continue;
        }
        match mtx_line(text, line_no, &mut mtx_header, path, ds) {
            Ok(Some((u, i, v))) => raw.ratings.push(u, i, v),
            Ok(None) => raw.skip_line(),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let out = raw.finish(path, dups, ds, failure)?;
    if !any_line || out.nnz() == 0 {
        return Err(Error::data(path, 0, "the file holds no ratings"));
    }
    if let Some((_, _, entries)) = mtx_header {
        if entries != out.nnz() && dups == DuplicatePolicy::Error {
            return Err(Error::data(
                path,
                0,
                format!(
                    "the size line promises {entries} entries but the file holds {}",
                    out.nnz()
                ),
            ));
        }
    }
    Ok(out)
}

/// One line of a Matrix Market file: an entry, or `None` for the banner, comments, blank lines
/// and the size line (which it records).
fn mtx_line(
    text: &str,
    line_no: usize,
    mtx_header: &mut Option<(usize, usize, usize)>,
    path: &Path,
    ds: &mut Dataset,
) -> Result<Option<(u32, u32, f32)>> {
    if text.is_empty() {
        return Ok(None);
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if text.starts_with('%') {
        if line_no == 1 {
            check_mtx_banner(path, text)?;
        }
        return Ok(None);
    }
    let Some((rows, cols, _)) = *mtx_header else {
        if line_no == 1 {
            return Err(Error::data(
                path,
                1,
                "expected the banner `%%MatrixMarket matrix coordinate real general`",
            ));
        }
        if fields.len() != 3 {
            return Err(Error::data(
                path,
                line_no,
                format!(
                    "expected the size line `rows cols entries`, found {} fields",
                    fields.len()
                ),
            ));
        }
        let parse = |s: &str, what: &str| {
            s.parse::<usize>().map_err(|_| {
                Error::data(
                    path,
                    line_no,
                    format!("{what} `{}` is not a count", quote(s)),
                )
            })
        };
        *mtx_header = Some((
            parse(fields[0], "rows")?,
            parse(fields[1], "columns")?,
            parse(fields[2], "entries")?,
        ));
        return Ok(None);
    };
    if fields.len() != 3 {
        return Err(Error::data(
            path,
            line_no,
            format!(
                "expected 3 columns (user, item, rating), found {}",
                fields.len()
            ),
        ));
    }
    let value = parse_rating(fields[2]).map_err(|m| Error::data(path, line_no, m))?;
    let parse = |s: &str, n: usize, what: &str| -> Result<u32> {
        match s.parse::<usize>() {
            Ok(i) if i >= 1 && i <= n => Ok((i - 1) as u32),
            _ => Err(Error::data(
                path,
                line_no,
                format!("{what} index `{}` is not in 1..={n}", quote(s)),
            )),
        }
    };
    let u = parse(fields[0], rows, "row")?;
    let i = parse(fields[1], cols, "column")?;
    Ok(Some((
        ds.users.get_or_insert(&(u + 1).to_string()),
        ds.items.get_or_insert(&(i + 1).to_string()),
        value,
    )))
}

fn check_mtx_banner(path: &Path, text: &str) -> Result<()> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    if words.first() != Some(&"%%matrixmarket") {
        return Err(Error::data(
            path,
            1,
            "expected the banner `%%MatrixMarket ...`",
        ));
    }
    if words.get(1) != Some(&"matrix") || words.get(2) != Some(&"coordinate") {
        return Err(Error::data(
            path,
            1,
            "only `matrix coordinate` Matrix Market files hold sparse ratings",
        ));
    }
    match words.get(3) {
        Some(&"real") | Some(&"integer") => {}
        other => {
            return Err(Error::data(
                path,
                1,
                format!(
                    "field type `{}` is not supported (use real or integer)",
                    other.unwrap_or(&"")
                ),
            ))
        }
    }
    if words.get(4) != Some(&"general") {
        return Err(Error::data(path, 1, "only `general` symmetry is supported"));
    }
    Ok(())
}

/// Writes ratings as `user<TAB>item<TAB>rating` lines with the original ids, whole or not at all.
pub fn write_tsv(path: &Path, r: &Ratings, users: &IdMap, items: &IdMap) -> Result<()> {
    crate::fs::write_atomic_with(path, |w| {
        for k in 0..r.nnz() {
            writeln!(
                w,
                "{}\t{}\t{}",
                users.name(r.users[k]),
                items.name(r.items[k]),
                r.values[k]
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (dir, p)
    }

    fn err(name: &str, text: &str, dups: DuplicatePolicy) -> String {
        let (_d, p) = file_with(name, text);
        read_file(&p, Format::Auto, dups).unwrap_err().to_string()
    }

    #[test]
    fn reads_every_format() {
        for (name, text) in [
            ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n"),
            (
                "ratings.dat",
                "1::1193::5::978300760\n1::661::3::978302109\n",
            ),
            (
                "ratings.csv",
                "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,9\n",
            ),
            ("x.tsv", "0 1 2.5\n1\t0\t3\n"),
            (
                "x.mtx",
                "%%MatrixMarket matrix coordinate real general\n% c\n2 2 2\n1 2 2.5\n2 1 3\n",
            ),
        ] {
            let (_d, p) = file_with(name, text);
            let ds = read_file(&p, Format::Auto, DuplicatePolicy::Error).unwrap();
            assert_eq!(ds.ratings.nnz(), 2, "{name}");
        }
    }

    #[test]
    fn bad_lines_name_file_line_and_problem() {
        let e = err("x.tsv", "0 1 2\n0 2 abc\n", DuplicatePolicy::Error);
        assert!(e.ends_with("x.tsv:2: rating `abc` is not a number"), "{e}");
        let e = err("x.tsv", "0 1 2\n0 2 NaN\n", DuplicatePolicy::Error);
        assert!(e.contains("x.tsv:2: rating `NaN` is not finite"), "{e}");
        let e = err("x.tsv", "0 1 inf\n", DuplicatePolicy::Error);
        assert!(e.contains("x.tsv:1: rating `inf` is not finite"), "{e}");
        let e = err("u.data", "1\t2\t3\n", DuplicatePolicy::Error);
        assert!(e.contains("u.data:1: expected 4 columns"), "{e}");
        let e = err("x.tsv", "", DuplicatePolicy::Error);
        assert!(e.ends_with("x.tsv: the file holds no ratings"), "{e}");
        let e = err("x.tsv", "0 1 2\n\n0 1 3\n", DuplicatePolicy::Error);
        assert!(
            e.contains("x.tsv:3: duplicate pair (user 0, item 1), first seen on line 1"),
            "{e}"
        );
        let e = err(
            "x.mtx",
            "%%MatrixMarket matrix coordinate real general\n2 2 1\n3 1 1\n",
            DuplicatePolicy::Error,
        );
        assert!(e.contains("x.mtx:3: row index `3` is not in 1..=2"), "{e}");
    }

    #[test]
    fn keep_last_keeps_the_later_value() {
        let (_d, p) = file_with("x.tsv", "0 1 2\n0 2 1\n0 1 5\n");
        let ds = read_file(&p, Format::Auto, DuplicatePolicy::KeepLast).unwrap();
        assert_eq!(ds.ratings.values, vec![5.0, 1.0]);
    }

    #[test]
    fn gzip_and_zstd_inputs_read_as_the_plain_file() {
        use std::io::Write as _;
        let text = "u1\ti1\t4\nu2\ti1\t3.5\nu1\ti7\t1\n";
        let (dir, plain) = file_with("r.tsv", text);
        let gz = dir.path().join("r.tsv.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let zst = dir.path().join("r.tsv.zst");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        // Told by content: a gzip file under a plain name reads too.
        let disguised = dir.path().join("z.tsv");
        std::fs::copy(&gz, &disguised).unwrap();
        let want = read_file(&plain, Format::Auto, DuplicatePolicy::Error).unwrap();
        for p in [&gz, &zst, &disguised] {
            let got = read_file(p, Format::Auto, DuplicatePolicy::Error).unwrap();
            assert_eq!(got.ratings, want.ratings, "{}", p.display());
            assert_eq!(got.users.names(), want.users.names());
            assert_eq!(got.items.names(), want.items.names());
        }
        assert_eq!(Format::Auto.resolve(Path::new("x.csv.gz")), Format::Csv);
        assert_eq!(
            Format::Auto.resolve(Path::new("ratings.dat.zst")),
            Format::Dat
        );
        // A bad line inside a compressed file keeps its line number.
        let bad = dir.path().join("bad.tsv.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"u1 i1 4\nu2 i2 x\n").unwrap();
        std::fs::write(&bad, e.finish().unwrap()).unwrap();
        let err = read_file(&bad, Format::Auto, DuplicatePolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.tsv.gz:2: rating `x`"), "{err}");
        // A truncated gzip stream is an error naming the file, not a panic or a silent cut.
        let trunc = dir.path().join("t.tsv.gz");
        let all = std::fs::read(&gz).unwrap();
        std::fs::write(&trunc, &all[..all.len() - 6]).unwrap();
        let err = read_file(&trunc, Format::Auto, DuplicatePolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.tsv.gz"), "{err}");
    }
}
