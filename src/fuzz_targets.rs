//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), shared with
//! `tests/fuzz_corpus.rs`, which replays their seed corpus and every input that once crashed on
//! the stable toolchain. Each takes arbitrary bytes and may fail with an error, but must never
//! panic, hang or abort.

use crate::config::TrainConfig;
use crate::data::read::{
    read_from, read_from_serial, read_from_with, read_pairs_from, DuplicatePolicy, Format,
    ReadOptions,
};
use crate::data::split::{split, SplitMode};
use crate::data::{Dataset, Matrix};
use crate::experiment::checkpoint::Checkpoint;
use crate::model::file::ModelFile;
use std::path::Path;

/// Every rating reader: the first byte picks the format, the header rule and the duplicate
/// policy; the rest is the file. What reads is also split and compressed.
pub fn ratings(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let formats = [
        Format::Movielens,
        Format::Dat,
        Format::Csv,
        Format::Tsv,
        Format::Mtx,
    ];
    let format = formats[sel as usize % formats.len()];
    let header = [None, Some(true), Some(false)][(sel as usize / 5) % 3];
    let dups = if sel & 0x80 != 0 {
        DuplicatePolicy::KeepLast
    } else {
        DuplicatePolicy::Error
    };
    let mut ds = Dataset::default();
    let path = Path::new("fuzz.input");
    let parsed = read_from(body, path, format, dups, header, &mut ds);
    // The parallel reader (small chunks, so every boundary is cut) is the serial one to the bit.
    let mut serial_ds = Dataset::default();
    let serial = read_from_serial(body, path, format, dups, header, &mut serial_ds);
    let opts = ReadOptions {
        format,
        dups,
        header,
        chunk: 1 + body.len() / 7,
        ..Default::default()
    };
    let mut small_ds = Dataset::default();
    let small = read_from_with(body, path, &opts, None, &mut small_ds);
    for (other, other_ds) in [(&parsed, &ds), (&small, &small_ds)] {
        match (&serial, other) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "entries differ from the serial reader's");
                assert_eq!(serial_ds.users, other_ds.users);
                assert_eq!(serial_ds.items, other_ds.items);
                assert_eq!(serial_ds.notes, other_ds.notes);
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("serial {a:?}, parallel {b:?}"),
        }
    }
    if let Ok(r) = parsed {
        let m = Matrix::from_ratings(&r, ds.users.len(), ds.items.len());
        assert_eq!(m.nnz(), r.nnz());
        let (a, b) = split(&r, 0.3, SplitMode::PerUser, 1);
        assert_eq!(a.nnz() + b.nnz(), r.nnz());
    }
}

/// The config loader with overrides: the input up to the first NUL is the JSON text, each later
/// NUL-separated piece one `--set KEY=VALUE`.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let json = parts.next().unwrap_or_default();
    let overrides: Vec<String> = parts.map(str::to_string).collect();
    if let Ok(c) = TrainConfig::from_json("fuzz.json", json, &overrides) {
        let _ = c.output_dir();
    }
}

/// The model-file loader; a model that loads is asked for predictions and a top-N list.
pub fn model_file(data: &[u8]) {
    if let Ok(m) = ModelFile::from_bytes(Path::new("fuzz.safetensors"), data) {
        let (nu, ni) = (m.users.len() as u32, m.items.len() as u32);
        let _ = m.predict(nu.checked_sub(1), ni.checked_sub(1));
        let _ = m.predict(None, None);
        if nu > 0 {
            let _ = m.recommend(0, 3);
        }
    }
}

/// The checkpoint loader.
pub fn checkpoint(data: &[u8]) {
    let _ = Checkpoint::from_bytes(Path::new("fuzz.safetensors"), data);
}

/// The `user item` pairs parser of `sslf predict`.
pub fn pairs(data: &[u8]) {
    let _ = read_pairs_from(data, Path::new("fuzz.pairs"));
}
