//! Industrial ingest: the parallel reader against the serial reference (bitwise, errors with the
//! exact file:line), every input format giving the same matrix, and the prepared-data cache
//! (fresh files used, stale ones rebuilt and said).

use proptest::prelude::*;
use sslf::config::DataConfig;
use sslf::data::read::{
    read_file, read_from_serial, read_from_with, Columns, DuplicatePolicy, Format, ReadOptions,
};
use sslf::data::{Dataset, Ratings};
use sslf::experiment::data::{build, prepare_with, LoadHooks, Prepared};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Reads `text` with the serial reader and with the parallel one in chunks of `chunk` bytes, and
/// checks they agree bit for bit: entries, id maps and notes, or the error message.
fn agree(text: &[u8], format: Format, dups: DuplicatePolicy, header: Option<bool>, chunk: usize) {
    let path = Path::new("in.txt");
    let mut a = Dataset::default();
    let ra = read_from_serial(text, path, format, dups, header, &mut a);
    let mut b = Dataset::default();
    let opts = ReadOptions {
        format,
        dups,
        header,
        chunk,
        ..Default::default()
    };
    let rb = read_from_with(text, path, &opts, None, &mut b);
    match (ra, rb) {
        (Ok(x), Ok(y)) => {
            assert_eq!(bits(&x), bits(&y), "chunk {chunk}");
            assert_eq!(a.users.names(), b.users.names());
            assert_eq!(a.items.names(), b.items.names());
            assert_eq!(a.notes, b.notes);
        }
        (Err(x), Err(y)) => assert_eq!(x.to_string(), y.to_string(), "chunk {chunk}"),
        (x, y) => panic!("chunk {chunk}: serial {x:?}, parallel {y:?}"),
    }
}

fn bits(r: &Ratings) -> Vec<(u32, u32, u32)> {
    (0..r.nnz())
        .map(|k| (r.users[k], r.items[k], r.values[k].to_bits()))
        .collect()
}

/// One line of a generated file in `format`: ids of several spellings (plain integers, leading
/// zeros, words, non-ASCII, past 64 bits), ratings of several spellings, separators the format
/// accepts (runs of spaces and tabs, no-break spaces for `tsv`, spaces around CSV fields), and
/// now and then a blank, header-like, short or broken line.
fn line(format: Format) -> impl Strategy<Value = String> {
    let id = prop_oneof![
        6 => (0u32..40).prop_map(|v| v.to_string()),
        1 => (0u32..40).prop_map(|v| format!("0{v}")),
        2 => "[a-c]{1,3}",
        1 => Just("é".to_string()),
        1 => Just("99999999999999999999".to_string()),
    ];
    let value = prop_oneof![
        30 => (0u32..50).prop_map(|v| format!("{}", v as f32 / 10.0)),
        3 => Just("3".to_string()),
        1 => Just("1e0".to_string()),
        1 => Just("x".to_string()),
        1 => Just("inf".to_string()),
    ];
    let seps: Vec<&'static str> = match format {
        Format::Tsv => vec![" ", "\t", "  ", " \t", "\u{a0}"],
        Format::Csv => vec![",", ", ", " ,"],
        Format::Movielens => vec!["\t"],
        _ => vec!["::"],
    };
    let sep = proptest::sample::select(seps);
    let four = matches!(format, Format::Movielens | Format::Dat);
    prop_oneof![
        40 => (id.clone(), sep.clone(), id, sep, value, any::<bool>())
            .prop_map(move |(u, s1, i, s2, v, ts)| {
                if four || (ts && format == Format::Csv) {
                    format!("{u}{s1}{i}{s2}{v}{s2}0")
                } else {
                    format!("{u}{s1}{i}{s2}{v}")
                }
            }),
        2 => Just(String::new()),
        1 => Just("  \r".to_string()),
        1 => Just("user item rating".to_string()),
        1 => Just("1 2".to_string()),
    ]
}

fn file() -> impl Strategy<Value = (Format, Vec<String>)> {
    prop_oneof![
        Just(Format::Tsv),
        Just(Format::Csv),
        Just(Format::Movielens),
        Just(Format::Dat)
    ]
    .prop_flat_map(|f| (Just(f), proptest::collection::vec(line(f), 0..80)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_parallel_reader_is_the_serial_one_to_the_bit(
        (format, lines) in file(),
        crlf in any::<bool>(),
        bom in any::<bool>(),
        trailing_newline in any::<bool>(),
        keep_last in any::<bool>(),
        header in prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
        chunk in 1usize..64,
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut text = if bom { "\u{feff}".to_string() } else { String::new() };
        text.push_str(&lines.join(eol));
        if trailing_newline {
            text.push_str(eol);
        }
        let dups = if keep_last { DuplicatePolicy::KeepLast } else { DuplicatePolicy::Error };
        agree(text.as_bytes(), format, dups, header, chunk);
        agree(text.as_bytes(), format, dups, header, 1 << 20);
    }
}

/// A file of many chunks with one problem deep inside.
fn long_file(bad_line: usize, bad: &str) -> String {
    let mut s = String::from("user\titem\trating\n");
    for k in 2..=5000usize {
        if k == bad_line {
            s.push_str(bad);
        } else {
            s.push_str(&format!("u{}\t{}\t{}", k % 97, k, (k % 5) as f32 + 0.5));
        }
        s.push('\n');
        if k % 700 == 0 {
            s.push('\n'); // blank lines shift the line numbers of what follows
        }
    }
    s
}

#[test]
fn parallel_errors_name_the_exact_line_deep_in_the_file() {
    for (bad_line, bad, want) in [
        (3001, "u1\t7\tseven", "rating `seven` is not a number"),
        (4500, "u1\t7", "expected 3 columns"),
        (2222, "u5\t2\t1e99", "is not finite"),
        (4999, "u9\t9\t1\textra", "found 4"),
    ] {
        let text = long_file(bad_line, bad);
        // The file's line number of the bad line, counted by hand.
        let line = text.lines().position(|l| l == bad).unwrap() + 1;
        let path = Path::new("deep.tsv");
        for chunk in [97usize, 4096, 1 << 20] {
            let opts = ReadOptions {
                format: Format::Tsv,
                chunk,
                ..Default::default()
            };
            let e = read_from_with(text.as_bytes(), path, &opts, None, &mut Dataset::default())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("deep.tsv:{line}: ")), "{e}");
            assert!(e.contains(want), "{e}");
            agree(
                text.as_bytes(),
                Format::Tsv,
                DuplicatePolicy::Error,
                None,
                chunk,
            );
        }
    }
    // A duplicate far from its first occurrence names both lines.
    let mut text = long_file(0, "");
    text.push_str("u3\t3\t1\n");
    let opts = ReadOptions {
        format: Format::Tsv,
        chunk: 1000,
        ..Default::default()
    };
    let e = read_from_with(
        text.as_bytes(),
        Path::new("d.tsv"),
        &opts,
        None,
        &mut Dataset::default(),
    )
    .unwrap_err()
    .to_string();
    let last = text.lines().count();
    let first = text.lines().position(|l| l.starts_with("u3\t3\t")).unwrap() + 1;
    assert!(
        e.starts_with(&format!(
            "d.tsv:{last}: duplicate pair (user u3, item 3), first seen on line {first}"
        )),
        "{e}"
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

/// `user item rating` rows with string users, integer items and fractional ratings.
fn rows() -> Vec<(String, i64, f64)> {
    (0..3000)
        .map(|k| {
            (
                (format!("user{}", k % 211), (k * 7 % 509) as i64),
                (k % 9) as f64 * 0.5,
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .map(|((u, i), v)| (u, i, v))
        .collect()
}

fn write_parquet(path: &Path, rows: &[(String, i64, f64)], names: [&str; 3], nulls: bool) {
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = format!(
        "message ratings {{ REQUIRED BYTE_ARRAY {} (UTF8); REQUIRED INT64 {}; {} DOUBLE {}; }}",
        names[0],
        names[1],
        if nulls { "OPTIONAL" } else { "REQUIRED" },
        names[2]
    );
    let schema = Arc::new(parquet::schema::parser::parse_message_type(&schema).unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(file, schema, props).unwrap();
    // Two row groups, so rows are numbered across groups.
    for part in rows.chunks(rows.len().div_ceil(2)) {
        let mut g = w.next_row_group().unwrap();
        let users: Vec<ByteArray> = part.iter().map(|r| ByteArray::from(r.0.as_str())).collect();
        let items: Vec<i64> = part.iter().map(|r| r.1).collect();
        let values: Vec<f64> = part.iter().map(|r| r.2).collect();
        let mut c = g.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&users, None, None)
            .unwrap();
        c.close().unwrap();
        let mut c = g.next_column().unwrap().unwrap();
        c.typed::<Int64Type>()
            .write_batch(&items, None, None)
            .unwrap();
        c.close().unwrap();
        let mut c = g.next_column().unwrap().unwrap();
        if nulls {
            // The third row of the group is null.
            let defs: Vec<i16> = (0..part.len()).map(|k| (k != 2) as i16).collect();
            let vals: Vec<f64> = values
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != 2)
                .map(|(_, &v)| v)
                .collect();
            c.typed::<DoubleType>()
                .write_batch(&vals, Some(&defs), None)
                .unwrap();
        } else {
            c.typed::<DoubleType>()
                .write_batch(&values, None, None)
                .unwrap();
        }
        c.close().unwrap();
        g.close().unwrap();
    }
    w.close().unwrap();
}

#[test]
fn every_format_gives_the_same_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows();
    let tsv: String = rows
        .iter()
        .map(|(u, i, v)| format!("{u}\t{i}\t{v}\n"))
        .collect();
    let plain = write(dir.path(), "r.tsv", tsv.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tsv.as_bytes()).unwrap();
    let gz = write(dir.path(), "r.tsv.gz", &gz.finish().unwrap());
    let zst = write(
        dir.path(),
        "r.tsv.zst",
        &zstd::encode_all(tsv.as_bytes(), 3).unwrap(),
    );
    let csv: String = std::iter::once("user,item,rating\n".to_string())
        .chain(rows.iter().map(|(u, i, v)| format!("{u},{i},{v}\n")))
        .collect();
    let csv = write(dir.path(), "r.csv", csv.as_bytes());
    let pq = dir.path().join("r.parquet");
    write_parquet(&pq, &rows, ["user", "item", "rating"], false);
    let want = read_file(&plain, Format::Auto, DuplicatePolicy::Error).unwrap();
    assert_eq!(want.ratings.nnz(), rows.len());
    for p in [&gz, &zst, &csv, &pq] {
        let got = read_file(p, Format::Auto, DuplicatePolicy::Error).unwrap();
        assert_eq!(bits(&got.ratings), bits(&want.ratings), "{}", p.display());
        assert_eq!(got.users.names(), want.users.names(), "{}", p.display());
        assert_eq!(got.items.names(), want.items.names(), "{}", p.display());
    }
    // Parquet under a plain name is told by its magic bytes.
    let disguised = dir.path().join("ratings.bin");
    std::fs::copy(&pq, &disguised).unwrap();
    let got = read_file(&disguised, Format::Auto, DuplicatePolicy::Error).unwrap();
    assert_eq!(bits(&got.ratings), bits(&want.ratings));
    // Other column names, through data.columns; a missing column is named with what there is.
    let renamed = dir.path().join("renamed.parquet");
    write_parquet(&renamed, &rows, ["uid", "iid", "stars"], false);
    let cols = Columns {
        user: "uid".into(),
        item: "iid".into(),
        rating: "stars".into(),
    };
    let opts = ReadOptions {
        columns: Some(&cols),
        ..Default::default()
    };
    let mut ds = Dataset::default();
    let r = sslf::data::read::read_into_opts(&renamed, &opts, &mut ds).unwrap();
    assert_eq!(bits(&r), bits(&want.ratings));
    let e = read_file(&renamed, Format::Auto, DuplicatePolicy::Error)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "no column `user` for the user (set data.columns; the file has: uid, iid, stars)"
        ),
        "{e}"
    );
    // A null rating names its row, counted across row groups.
    let nulls = dir.path().join("nulls.parquet");
    write_parquet(&nulls, &rows, ["user", "item", "rating"], true);
    let e = read_file(&nulls, Format::Auto, DuplicatePolicy::Error)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nulls.parquet: row 3: column `rating` is null"),
        "{e}"
    );
    // A duplicate in Parquet is named by rows.
    let mut dup = rows.clone();
    dup.push(dup[5].clone());
    let dupp = dir.path().join("dup.parquet");
    write_parquet(&dupp, &dup, ["user", "item", "rating"], false);
    let e = read_file(&dupp, Format::Auto, DuplicatePolicy::Error)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("row {}: duplicate pair", dup.len()))
            && e.contains("first seen on row 6"),
        "{e}"
    );
}

/// Loads `cfg` through the cache, returning the data and what was said.
fn load(cfg: &DataConfig) -> (Prepared, Vec<String>) {
    let said = Mutex::new(Vec::new());
    let say = |s: &str| said.lock().unwrap().push(s.to_string());
    let hooks = LoadHooks {
        say: &say,
        progress: None,
        fingerprints: None,
    };
    let p = prepare_with(cfg, &hooks).unwrap();
    (p, said.into_inner().unwrap())
}

fn same(a: &Prepared, b: &Prepared) {
    for (x, y) in [
        (&a.train, &b.train),
        (&a.valid, &b.valid),
        (&a.test, &b.test),
    ] {
        assert_eq!(bits(x), bits(y));
    }
    assert_eq!(a.users, b.users);
    assert_eq!(a.items, b.items);
    assert_eq!(a.notes, b.notes);
    assert_eq!(a.source, b.source);
}

#[test]
fn a_fresh_cache_is_used_and_a_stale_one_rebuilt_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows();
    let text: String = std::iter::once("u i r\n".to_string())
        .chain(rows.iter().map(|(u, i, v)| format!("{u} {i} {v}\n")))
        .collect();
    let data = write(dir.path(), "r.tsv", text.as_bytes());
    let cfg = DataConfig {
        path: Some(data.clone()),
        cache: true,
        ..Default::default()
    };
    let cache = dir.path().join("r.tsv.prepared.safetensors");
    let direct = build(&cfg, &LoadHooks::quiet()).unwrap();
    let (first, said) = load(&cfg);
    same(&first, &direct);
    assert!(
        said.iter().any(|s| s.contains("no prepared data at")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|s| s.contains("wrote prepared data")),
        "{said:?}"
    );
    assert!(cache.exists());
    let (second, said) = load(&cfg);
    same(&second, &direct);
    assert!(
        said.iter().any(|s| s.contains("read prepared data from")),
        "{said:?}"
    );
    // The header note survives the cache.
    assert!(second.notes.iter().any(|n| n.contains("read as a header")));

    // Other split settings: stale, rebuilt, and the new split is the one built directly.
    let reseeded = DataConfig {
        split_seed: 7,
        ..cfg.clone()
    };
    let (third, said) = load(&reseeded);
    assert!(
        said.iter()
            .any(|s| s.contains("is stale (the data settings changed")),
        "{said:?}"
    );
    same(&third, &build(&reseeded, &LoadHooks::quiet()).unwrap());

    // The data changed (same size, one rating different): stale, rebuilt.
    let changed = text.replacen(" 0.5\n", " 1.5\n", 1);
    assert_eq!(changed.len(), text.len());
    std::fs::write(&data, &changed).unwrap();
    let (fourth, said) = load(&reseeded);
    assert!(
        said.iter()
            .any(|s| s.contains("is stale (the data changed since it was written")),
        "{said:?}"
    );
    same(&fourth, &build(&reseeded, &LoadHooks::quiet()).unwrap());
    let all = |p: &Prepared| [bits(&p.train), bits(&p.valid), bits(&p.test)].concat();
    assert!(all(&fourth) != all(&third), "the changed rating is read");

    // A damaged cache is said and rebuilt, never used.
    let bytes = std::fs::read(&cache).unwrap();
    std::fs::write(&cache, &bytes[..bytes.len() / 2]).unwrap();
    let (fifth, said) = load(&reseeded);
    assert!(said.iter().any(|s| s.contains("rebuilding it")), "{said:?}");
    same(&fifth, &fourth);
    let (_, said) = load(&reseeded);
    assert!(
        said.iter().any(|s| s.contains("read prepared data from")),
        "{said:?}"
    );

    // `data.prepared` names the file; the input is never written to.
    let elsewhere = DataConfig {
        prepared: Some(dir.path().join("elsewhere.safetensors")),
        cache: false,
        ..reseeded.clone()
    };
    let before = std::fs::read(&data).unwrap();
    let (sixth, _) = load(&elsewhere);
    same(&sixth, &fourth);
    assert!(dir.path().join("elsewhere.safetensors").exists());
    assert_eq!(std::fs::read(&data).unwrap(), before);
}
