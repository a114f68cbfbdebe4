//! Parquet input: the user, item and rating columns named by `data.columns`, read row group by
//! row group through the `parquet` crate's column readers (no Arrow). Ids may be integers or
//! strings; ratings any integer or floating type. Errors name the file, the row and the column.

use super::ingest::{Ids, Raw};
use super::read::{quote, Columns, DuplicatePolicy};
use super::{Dataset, Ratings};
use crate::error::{Error, Result};
use parquet::basic::Type as Physical;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArrayType, DataType, DoubleType, FloatType, Int32Type, Int64Type};
use parquet::file::reader::{FileReader, RowGroupReader, SerializedFileReader};
use std::path::Path;

/// Records read per batch.
const BATCH: usize = 1 << 16;

/// Whether the file at `path` starts with Parquet's magic bytes.
pub fn is_parquet(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"PAR1"
}

/// One column's values as read: ids as text, ratings as f64.
enum Cells {
    Text(Vec<String>),
    Num(Vec<f64>),
}

/// Reads `path`, extending the id maps of `ds`, and returns the entries.
pub fn read_parquet(
    path: &Path,
    columns: &Columns,
    dups: DuplicatePolicy,
    ds: &mut Dataset,
) -> Result<Ratings> {
    let err = |m: String| Error::data(path, 0, m);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| err(format!("not a readable Parquet file ({e})")))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let find = |name: &str, role: &str| -> Result<usize> {
        (0..schema.num_columns())
            .find(|&c| schema.column(c).path().string() == name)
            .ok_or_else(|| {
                let have: Vec<String> = (0..schema.num_columns())
                    .map(|c| schema.column(c).path().string())
                    .collect();
                err(format!(
                    "no column `{}` for the {role} (set data.columns; the file has: {})",
                    quote(name),
                    have.join(", ")
                ))
            })
    };
    let cols = [
        find(&columns.user, "user")?,
        find(&columns.item, "item")?,
        find(&columns.rating, "rating")?,
    ];
    let names = [&columns.user, &columns.item, &columns.rating];
    let mut raw = Raw::default();
    raw.rows = true;
    let mut uids = Ids::new(std::mem::take(&mut ds.users));
    let mut iids = Ids::new(std::mem::take(&mut ds.items));
    let mut row0 = 0usize;
    let mut failure = None;
    'groups: for g in 0..reader.num_row_groups() {
        let rg = reader
            .get_row_group(g)
            .map_err(|e| err(format!("row group {g}: {e}")))?;
        let n = rg.metadata().num_rows() as usize;
        let mut cells = Vec::with_capacity(3);
        for (k, &c) in cols.iter().enumerate() {
            cells.push(read_column(&*rg, c, n, row0, names[k], k == 2, path)?);
        }
        let (Cells::Text(us), Cells::Text(is), Cells::Num(vs)) = (&cells[0], &cells[1], &cells[2])
        else {
            unreachable!("ids are read as text and ratings as numbers")
        };
        for r in 0..n {
            let v = vs[r] as f32;
            if !v.is_finite() {
                failure = Some(err(format!(
                    "row {}: rating {} in column `{}` is not a finite f32",
                    row0 + r + 1,
                    vs[r],
                    quote(&columns.rating)
                )));
                break 'groups;
            }
            if us[r].is_empty() || is[r].is_empty() {
                failure = Some(err(format!("row {}: empty user or item id", row0 + r + 1)));
                break 'groups;
            }
            let u = uids.token(&us[r]);
            let i = iids.token(&is[r]);
            raw.ratings.push(u, i, v);
        }
        row0 += n;
    }
    ds.users = uids.into_map();
    ds.items = iids.into_map();
    let out = raw.finish(path, dups, ds, failure)?;
    if out.nnz() == 0 {
        return Err(err("the file holds no ratings".into()));
    }
    Ok(out)
}

/// Reads all `n` rows of column `c` of one row group; a null is an error naming its row.
fn read_column(
    rg: &dyn RowGroupReader,
    c: usize,
    n: usize,
    row0: usize,
    name: &str,
    numeric: bool,
    path: &Path,
) -> Result<Cells> {
    let err = |m: String| Error::data(path, 0, m);
    let reader = rg
        .get_column_reader(c)
        .map_err(|e| err(format!("column `{}`: {e}", quote(name))))?;
    let physical = rg.metadata().column(c).column_type();
    let bad_type = || {
        err(format!(
            "column `{}` holds {physical:?} values; {} (set data.columns)",
            quote(name),
            if numeric {
                "a rating must be an integer or floating type"
            } else {
                "an id must be an integer or a string"
            }
        ))
    };
    Ok(match reader {
        ColumnReader::Int32ColumnReader(_) | ColumnReader::Int64ColumnReader(_)
            if numeric || matches!(physical, Physical::INT32 | Physical::INT64) =>
        {
            let v: Vec<i64> = match reader {
                ColumnReader::Int32ColumnReader(r) => all::<Int32Type>(r, n, row0, name, path)?
                    .into_iter()
                    .map(i64::from)
                    .collect(),
                ColumnReader::Int64ColumnReader(r) => all::<Int64Type>(r, n, row0, name, path)?,
                _ => unreachable!(),
            };
            if numeric {
                Cells::Num(v.into_iter().map(|x| x as f64).collect())
            } else {
                Cells::Text(v.into_iter().map(|x| x.to_string()).collect())
            }
        }
        ColumnReader::FloatColumnReader(r) if numeric => Cells::Num(
            all::<FloatType>(r, n, row0, name, path)?
                .into_iter()
                .map(f64::from)
                .collect(),
        ),
        ColumnReader::DoubleColumnReader(r) if numeric => {
            Cells::Num(all::<DoubleType>(r, n, row0, name, path)?)
        }
        ColumnReader::ByteArrayColumnReader(r) if !numeric => {
            let v = all::<ByteArrayType>(r, n, row0, name, path)?;
            let mut out = Vec::with_capacity(v.len());
            for (k, b) in v.iter().enumerate() {
                match std::str::from_utf8(b.data()) {
                    Ok(s) => out.push(s.to_string()),
                    Err(_) => {
                        return Err(err(format!(
                            "row {}: column `{}` holds bytes that are not UTF-8 text",
                            row0 + k + 1,
                            quote(name)
                        )))
                    }
                }
            }
            Cells::Text(out)
        }
        _ => return Err(bad_type()),
    })
}

/// Every value of one column chunk of `n` rows.
fn all<T: DataType>(
    mut r: ColumnReaderImpl<T>,
    n: usize,
    row0: usize,
    name: &str,
    path: &Path,
) -> Result<Vec<T::T>> {
    let err = |m: String| Error::data(path, 0, m);
    let mut values = Vec::with_capacity(n);
    let mut defs = Vec::new();
    let mut done = 0usize;
    while done < n {
        defs.clear();
        let before = values.len();
        let (records, got, levels) = r
            .read_records(BATCH.min(n - done), Some(&mut defs), None, &mut values)
            .map_err(|e| err(format!("column `{}`: {e}", quote(name))))?;
        if records == 0 {
            return Err(err(format!(
                "column `{}` ends after {} of {n} rows",
                quote(name),
                row0 + done
            )));
        }
        if levels > 0 && got < levels {
            let max = defs.iter().copied().max().unwrap_or(0);
            let k = defs.iter().position(|&d| d < max).unwrap_or(0);
            return Err(err(format!(
                "row {}: column `{}` is null",
                row0 + done + k + 1,
                quote(name)
            )));
        }
        debug_assert_eq!(values.len() - before, got);
        done += records;
    }
    Ok(values)
}
