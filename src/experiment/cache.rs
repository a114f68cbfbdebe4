//! The prepared-data cache: train / validation / test entries and the id maps of one data config
//! in one safetensors file, with the data files' fingerprints and the settings they were prepared
//! with in its header, so a stale file is known as stale.
//!
//! Tensors: `{train,valid,test}.{users,items}` (U32), `{train,valid,test}.values` (F32),
//! `{users,items}.names` (U8, the ids' UTF-8 spellings end to end) with `{users,items}.offsets`
//! (U64, n + 1 offsets into them). Metadata: `sslf_prepared` (format version), `settings` (the
//! data section that decides the result, as JSON), `fingerprints`, `source`, `notes`.

use super::data::Prepared;
use crate::config::DataConfig;
use crate::data::{IdMap, Ratings};
use crate::error::{Error, Result};
use crate::fs::Fingerprint;
use safetensors::tensor::Dtype;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const VERSION: &str = "1";

/// What a prepared file must match to be used: the settings and the data files' contents.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKey {
    pub settings: String,
    pub fingerprints: Vec<Fingerprint>,
}

impl CacheKey {
    /// The key of `cfg` now (hashes every data file).
    pub fn of(cfg: &DataConfig) -> Result<Self> {
        Ok(Self::with_fingerprints(
            cfg,
            super::data::fingerprints(cfg)?,
        ))
    }

    /// The key of `cfg` with its data files' fingerprints already taken.
    pub fn with_fingerprints(cfg: &DataConfig, fingerprints: Vec<Fingerprint>) -> Self {
        CacheKey {
            settings: settings(cfg),
            fingerprints,
        }
    }
}

/// The data section without the fields that only say where the cache lives.
fn settings(cfg: &DataConfig) -> String {
    let mut c = cfg.clone();
    c.cache = false;
    c.prepared = None;
    serde_json::to_string(&c).expect("the data section serialises")
}

/// Where the prepared data of `cfg` lives: `data.prepared`, or with `data.cache`, beside the
/// first data file as `NAME.prepared.safetensors`; `None` when neither is set.
pub fn cache_path(cfg: &DataConfig) -> Option<PathBuf> {
    if let Some(p) = &cfg.prepared {
        return Some(p.clone());
    }
    if !cfg.cache {
        return None;
    }
    let first = super::data::data_files(cfg).into_iter().next()?;
    let mut name = first.file_name()?.to_os_string();
    name.push(".prepared.safetensors");
    Some(first.with_file_name(name))
}

/// What reading a prepared file found.
#[derive(Debug)]
pub enum Cached {
    /// It matches: the data.
    Fresh(Box<Prepared>),
    /// It was made from other data or settings: why.
    Stale(String),
    /// There is no file.
    Missing,
}

fn names_blob(m: &IdMap) -> (Vec<u8>, Vec<u64>) {
    let mut blob = Vec::new();
    let mut offsets = Vec::with_capacity(m.len() + 1);
    offsets.push(0u64);
    for n in m.names() {
        blob.extend_from_slice(n.as_bytes());
        offsets.push(blob.len() as u64);
    }
    (blob, offsets)
}

/// Writes `p` to `path` (aside, then renamed).
pub fn write(path: &Path, p: &Prepared, key: &CacheKey) -> Result<()> {
    let (ub, uo) = names_blob(&p.users);
    let (ib, io) = names_blob(&p.items);
    let mut parts: Vec<(String, Dtype, usize, &[u8])> = Vec::new();
    for (part, r) in [("train", &p.train), ("valid", &p.valid), ("test", &p.test)] {
        let n = r.nnz();
        parts.push((
            format!("{part}.users"),
            Dtype::U32,
            n,
            bytemuck::cast_slice(&r.users),
        ));
        parts.push((
            format!("{part}.items"),
            Dtype::U32,
            n,
            bytemuck::cast_slice(&r.items),
        ));
        parts.push((
            format!("{part}.values"),
            Dtype::F32,
            n,
            bytemuck::cast_slice(&r.values),
        ));
    }
    parts.push(("users.names".into(), Dtype::U8, ub.len(), &ub));
    parts.push((
        "users.offsets".into(),
        Dtype::U64,
        uo.len(),
        bytemuck::cast_slice(&uo),
    ));
    parts.push(("items.names".into(), Dtype::U8, ib.len(), &ib));
    parts.push((
        "items.offsets".into(),
        Dtype::U64,
        io.len(),
        bytemuck::cast_slice(&io),
    ));
    let meta: HashMap<&str, String> = HashMap::from([
        ("sslf_prepared", VERSION.to_string()),
        ("settings", key.settings.clone()),
        (
            "fingerprints",
            serde_json::to_string(&key.fingerprints).expect("fingerprints serialise"),
        ),
        ("source", p.source.clone()),
        (
            "notes",
            serde_json::to_string(&p.notes).expect("strings serialise"),
        ),
    ]);
    // The safetensors layout, streamed: 8-byte header length, JSON header (padded with spaces to
    // a multiple of 8), then the tensors' bytes in order.
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!(meta));
    let mut offset = 0u64;
    for (name, dtype, n, bytes) in &parts {
        let dtype = match dtype {
            Dtype::U8 => "U8",
            Dtype::U32 => "U32",
            Dtype::U64 => "U64",
            _ => "F32",
        };
        let end = offset + bytes.len() as u64;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": [n], "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = serde_json::to_vec(&header).expect("the header serialises");
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    crate::fs::write_atomic_with(path, |w| {
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(&text)?;
        for (_, _, _, bytes) in &parts {
            w.write_all(bytes)?;
        }
        Ok(())
    })
}

/// One tensor's place in the file.
#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// The tensors of an open safetensors file, by the header's table.
struct Tensors<'p> {
    f: std::fs::File,
    entries: HashMap<String, Entry>,
    /// Where the tensors' bytes start, and the file's length.
    body: u64,
    len: u64,
    path: &'p Path,
}

impl Tensors<'_> {
    /// Tensor `name`, which must be a `dtype` vector, read straight into its typed array.
    fn read<T: bytemuck::Pod>(&mut self, name: &str, dtype: &str) -> Result<Vec<T>> {
        let bad = |m: String| Error::Model {
            file: self.path.to_path_buf(),
            message: m,
        };
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| bad(format!("no tensor {name}")))?;
        let (a, b) = e.data_offsets;
        let size = std::mem::size_of::<T>() as u64;
        if e.dtype != dtype
            || e.shape.len() != 1
            || b < a
            || self.body + b > self.len
            || e.shape[0] as u64 * size != b - a
        {
            return Err(bad(format!(
                "tensor {name} is not a {dtype} vector in the file"
            )));
        }
        let mut out = vec![T::zeroed(); e.shape[0]];
        self.f
            .seek(SeekFrom::Start(self.body + a))
            .and_then(|_| self.f.read_exact(bytemuck::cast_slice_mut(&mut out)))
            .map_err(|e| Error::io(self.path, e))?;
        Ok(out)
    }
}

/// Reads the prepared data at `path` when it matches `key`. Each tensor is read straight into its
/// typed array (no copy of the file in memory).
pub fn read(path: &Path, key: &CacheKey) -> Result<Cached> {
    let bad = |m: String| Error::Model {
        file: path.to_path_buf(),
        message: m,
    };
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Cached::Missing),
        Err(e) => return Err(Error::io(path, e)),
    };
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad("too short to be a safetensors file".into()))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > len {
        return Err(bad(format!("header of {n} bytes does not fit the file")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let mut header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("unreadable header ({e})")))?;
    let meta: HashMap<String, String> = match header.remove("__metadata__") {
        Some(m) => serde_json::from_value(m).map_err(|e| bad(format!("bad metadata ({e})")))?,
        None => HashMap::new(),
    };
    if meta.get("sslf_prepared").map(String::as_str) != Some(VERSION) {
        return Ok(Cached::Stale(
            "not prepared data of this version of sslf".into(),
        ));
    }
    if meta.get("settings") != Some(&key.settings) {
        return Ok(Cached::Stale(
            "the data settings changed since it was written".into(),
        ));
    }
    let fps: Vec<Fingerprint> = meta
        .get("fingerprints")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    if fps != key.fingerprints {
        let changed: Vec<String> = key
            .fingerprints
            .iter()
            .filter(|k| !fps.contains(k))
            .map(|k| k.path.display().to_string())
            .collect();
        return Ok(Cached::Stale(format!(
            "the data changed since it was written ({})",
            changed.join(", ")
        )));
    }
    let entries: HashMap<String, Entry> = header
        .into_iter()
        .map(|(k, v)| {
            serde_json::from_value(v)
                .map(|e| (k.clone(), e))
                .map_err(|e| bad(format!("tensor {k}: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut t = Tensors {
        f,
        entries,
        body: 8 + n,
        len,
        path,
    };
    let mut read_ratings = |part: &str| -> Result<Ratings> {
        let users = t.read::<u32>(&format!("{part}.users"), "U32")?;
        let items = t.read::<u32>(&format!("{part}.items"), "U32")?;
        let values = t.read::<f32>(&format!("{part}.values"), "F32")?;
        if users.len() != items.len() || users.len() != values.len() {
            return Err(bad(format!("the {part} tensors differ in length")));
        }
        Ok(Ratings {
            users,
            items,
            values,
        })
    };
    let train = read_ratings("train")?;
    let valid = read_ratings("valid")?;
    let test = read_ratings("test")?;
    let mut read_map = |side: &str| -> Result<IdMap> {
        let blob = t.read::<u8>(&format!("{side}.names"), "U8")?;
        let offsets = t.read::<u64>(&format!("{side}.offsets"), "U64")?;
        let mut names = Vec::with_capacity(offsets.len().saturating_sub(1));
        for w in offsets.windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            let s = blob
                .get(a..b)
                .and_then(|s| std::str::from_utf8(s).ok())
                .ok_or_else(|| bad(format!("{side} names are not UTF-8 at {a}..{b}")))?;
            names.push(s.to_string());
        }
        let m = IdMap::from_names(names);
        if m.has_duplicates() {
            return Err(bad(format!("{side} names repeat")));
        }
        Ok(m)
    };
    let users = read_map("users")?;
    let items = read_map("items")?;
    for (part, r) in [("train", &train), ("valid", &valid), ("test", &test)] {
        if r.users.iter().any(|&u| u as usize >= users.len())
            || r.items.iter().any(|&i| i as usize >= items.len())
        {
            return Err(bad(format!("{part} holds an index past the id maps")));
        }
        if r.values.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("{part} holds a value that is not finite")));
        }
    }
    Ok(Cached::Fresh(Box::new(Prepared {
        train,
        valid,
        test,
        users,
        items,
        source: meta.get("source").cloned().unwrap_or_default(),
        notes: meta
            .get("notes")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
    })))
}
