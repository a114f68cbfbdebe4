//! Model files in the safetensors format, so Python can open them
//! (`safetensors.numpy.load_file`). Layout:
//!
//! - tensors (f32, little-endian, row-major): LF `P` [m, f], `Q` [n, f], and with biases `b` [m],
//!   `c` [n]; UDV^T `U` [m, f], `V` [n, f], `d` [f];
//! - optional `seen_ptr` (u64, [m + 1]) and `seen_items` (u32, [entries]): the items each user
//!   rated in training, as CSR, so `sslf recommend` can leave them out;
//! - metadata (string → string): `sslf_format` = "1", `kind` (`lf`|`udv`), `rank`, `biases`, `mu`,
//!   `clip_min`, `clip_max`, `users` and `items` (JSON arrays of the original ids, in dense
//!   order), `config` (the training config as JSON).
//!
//! Loading checks every shape against the metadata and never trusts a length it has not checked:
//! a truncated or corrupted file gives an error naming the file, never a panic.

use super::{EvalSums, Layout, ModelKind};
use crate::data::read::DuplicatePolicy;
use crate::data::{Dataset, IdMap};
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// A trained model with what is needed to use it: the layout, θ, the id maps and the rating range.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    pub layout: Layout,
    pub theta: Vec<f32>,
    pub users: IdMap,
    pub items: IdMap,
    pub clip: (f32, f32),
    /// The training config, as JSON text.
    pub config: String,
    /// Items each user rated in training (CSR: offsets, item indices), if stored.
    pub seen: Option<(Vec<u64>, Vec<u32>)>,
}

fn blocks(l: &Layout) -> Vec<(&'static str, usize, Vec<usize>)> {
    let f = l.rank;
    match l.kind {
        ModelKind::Lf => {
            let mut v = vec![
                ("P", l.p_off(), vec![l.n_users, f]),
                ("Q", l.q_off(), vec![l.n_items, f]),
            ];
            if l.biases {
                v.push(("b", l.b_off(), vec![l.n_users]));
                v.push(("c", l.c_off(), vec![l.n_items]));
            }
            v
        }
        ModelKind::Udv => vec![
            ("U", l.p_off(), vec![l.n_users, f]),
            ("V", l.q_off(), vec![l.n_items, f]),
            ("d", l.d_off(), vec![f]),
        ],
    }
}

impl ModelFile {
    /// Writes the model; the file appears whole or not at all (written aside, then renamed).
    pub fn save(&self, path: &Path) -> Result<()> {
        let l = &self.layout;
        let model_err = |m: String| Error::Model {
            file: path.to_path_buf(),
            message: m,
        };
        let mut views = Vec::new();
        for (name, off, shape) in blocks(l) {
            let n: usize = shape.iter().product();
            let bytes: &[u8] = bytemuck::cast_slice(&self.theta[off..off + n]);
            let view = TensorView::new(Dtype::F32, shape, bytes)
                .map_err(|e| model_err(format!("tensor {name}: {e}")))?;
            views.push((name, view));
        }
        if let Some((ptr, items)) = &self.seen {
            let p = TensorView::new(Dtype::U64, vec![ptr.len()], bytemuck::cast_slice(ptr))
                .map_err(|e| model_err(format!("tensor seen_ptr: {e}")))?;
            let i = TensorView::new(Dtype::U32, vec![items.len()], bytemuck::cast_slice(items))
                .map_err(|e| model_err(format!("tensor seen_items: {e}")))?;
            views.push(("seen_ptr", p));
            views.push(("seen_items", i));
        }
        let mut meta = HashMap::new();
        meta.insert("sslf_format".into(), "1".into());
        meta.insert(
            "kind".into(),
            match l.kind {
                ModelKind::Lf => "lf",
                ModelKind::Udv => "udv",
            }
            .into(),
        );
        meta.insert("rank".into(), l.rank.to_string());
        meta.insert("biases".into(), l.biases.to_string());
        meta.insert("mu".into(), l.mu.to_string());
        meta.insert("clip_min".into(), self.clip.0.to_string());
        meta.insert("clip_max".into(), self.clip.1.to_string());
        meta.insert(
            "users".into(),
            serde_json::to_string(self.users.names()).expect("strings serialise"),
        );
        meta.insert(
            "items".into(),
            serde_json::to_string(self.items.names()).expect("strings serialise"),
        );
        meta.insert("config".into(), self.config.clone());
        write_safetensors(path, views, meta)
    }

    /// Reads and checks a model file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses and checks the bytes of a model file; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let err = |m: String| Error::Model {
            file: path.to_path_buf(),
            message: m,
        };
        let (st, meta) = read_safetensors(path, bytes)?;
        if meta.is_empty() {
            return Err(err("no sslf metadata in the header".into()));
        }
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| err(format!("metadata field `{k}` is missing")))
        };
        if get("sslf_format")? != "1" {
            return Err(err(format!(
                "unsupported sslf_format `{}` (this build reads 1)",
                get("sslf_format")?
            )));
        }
        let kind = match get("kind")?.as_str() {
            "lf" => ModelKind::Lf,
            "udv" => ModelKind::Udv,
            k => return Err(err(format!("unknown model kind `{k}`"))),
        };
        let parse_f32 = |k: &str| -> Result<f32> {
            get(k)?
                .parse()
                .map_err(|_| err(format!("metadata field `{k}` is not a number")))
        };
        let rank: usize = get("rank")?
            .parse()
            .map_err(|_| err("metadata field `rank` is not a count".into()))?;
        let biases = get("biases")? == "true";
        let ids = |k: &str| -> Result<IdMap> {
            let names: Vec<String> = serde_json::from_str(get(k)?)
                .map_err(|e| err(format!("metadata field `{k}` is not a list of ids: {e}")))?;
            Ok(IdMap::from_names(names))
        };
        let (users, items) = (ids("users")?, ids("items")?);
        for (k, m) in [("users", &users), ("items", &items)] {
            if m.has_duplicates() {
                return Err(err(format!("metadata field `{k}` lists an id twice")));
            }
        }
        let layout = Layout {
            kind,
            n_users: users.len(),
            n_items: items.len(),
            rank,
            biases: biases && kind == ModelKind::Lf,
            mu: parse_f32("mu")?,
        };
        if rank == 0 || rank > 1024 {
            return Err(err(format!("rank {rank} is out of range")));
        }
        // Shapes first: θ is allocated only once the file is known to hold all of it.
        let mut tensors = Vec::new();
        for (name, off, shape) in blocks(&layout) {
            let t = st
                .tensor(name)
                .map_err(|_| err(format!("tensor `{name}` is missing")))?;
            if t.dtype() != Dtype::F32 {
                return Err(err(format!(
                    "tensor `{name}` is {:?}, expected F32",
                    t.dtype()
                )));
            }
            if t.shape() != shape.as_slice() {
                return Err(err(format!(
                    "tensor `{name}` has shape {:?}, expected {:?} from the id lists and rank",
                    t.shape(),
                    shape
                )));
            }
            tensors.push((t, off, shape.iter().product::<usize>()));
        }
        let mut theta = vec![0f32; layout.len()];
        for (t, off, n) in tensors {
            for (k, c) in t.data().chunks_exact(4).enumerate().take(n) {
                theta[off + k] = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        if let Some(k) = theta.iter().position(|x| !x.is_finite()) {
            return Err(err(format!(
                "parameter {k} is not finite ({}); the model cannot predict",
                theta[k]
            )));
        }
        let mu = layout.mu;
        let clip = (parse_f32("clip_min")?, parse_f32("clip_max")?);
        if !mu.is_finite() {
            return Err(err(format!("metadata field `mu` is not finite ({mu})")));
        }
        if !(clip.0.is_finite() && clip.1.is_finite() && clip.0 <= clip.1) {
            return Err(err(format!(
                "metadata fields `clip_min` {} and `clip_max` {} do not form a finite range",
                clip.0, clip.1
            )));
        }
        let seen = match (st.tensor("seen_ptr"), st.tensor("seen_items")) {
            (Ok(p), Ok(i)) => {
                if p.dtype() != Dtype::U64 || i.dtype() != Dtype::U32 {
                    return Err(err("seen_ptr must be U64 and seen_items U32".into()));
                }
                let ptr: Vec<u64> = p
                    .data()
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                let idx: Vec<u32> = i
                    .data()
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                let ok = ptr.len() == layout.n_users + 1
                    && ptr.first() == Some(&0)
                    && ptr.windows(2).all(|w| w[0] <= w[1])
                    && ptr.last() == Some(&(idx.len() as u64))
                    && idx.iter().all(|&x| (x as usize) < layout.n_items);
                if !ok {
                    return Err(err(
                        "seen_ptr/seen_items do not form a valid user → items list".into(),
                    ));
                }
                Some((ptr, idx))
            }
            (Err(_), Err(_)) => None,
            _ => return Err(err("only one of seen_ptr and seen_items is present".into())),
        };
        Ok(ModelFile {
            layout,
            theta,
            users,
            items,
            clip,
            config: get("config")?.clone(),
            seen,
        })
    }
}

impl ModelFile {
    /// r̂ for a (user, item) pair in dense ids; an unknown side contributes zero factors and zero
    /// bias, so a wholly unknown pair is predicted as μ.
    pub fn predict(&self, user: Option<u32>, item: Option<u32>) -> f32 {
        let l = &self.layout;
        let f = l.rank;
        let row = |off: usize, r: Option<u32>| {
            r.map(|r| &self.theta[off + r as usize * f..off + (r as usize + 1) * f])
        };
        let (a, b) = (row(l.p_off(), user), row(l.q_off(), item));
        let mut s = 0f32;
        if let (Some(a), Some(b)) = (a, b) {
            for k in 0..f {
                s += match l.kind {
                    ModelKind::Lf => a[k] * b[k],
                    ModelKind::Udv => a[k] * self.theta[l.d_off() + k] * b[k],
                };
            }
        }
        if l.has_biases() {
            s += l.mu;
            if let Some(u) = user {
                s += self.theta[l.b_off() + u as usize];
            }
            if let Some(i) = item {
                s += self.theta[l.c_off() + i as usize];
            }
        }
        s
    }
}

/// [`ModelFile::evaluate`]'s result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub sums: EvalSums,
    /// Entries whose user or item the model does not know (predicted from the known parts).
    pub cold: usize,
}

impl ModelFile {
    /// Error sums of the model's predictions on `ds`, whose ids are matched to the model's by
    /// their original spelling.
    pub fn evaluate(&self, ds: &Dataset) -> Evaluation {
        let mut sums = EvalSums::default();
        let mut cold = 0usize;
        let r = &ds.ratings;
        for k in 0..r.nnz() {
            let u = self.users.get(ds.users.name(r.users[k]));
            let i = self.items.get(ds.items.name(r.items[k]));
            cold += (u.is_none() || i.is_none()) as usize;
            let pred = self.predict(u, i);
            sums.add(r.values[k], pred, pred.clamp(self.clip.0, self.clip.1));
        }
        Evaluation { sums, cold }
    }

    /// The duplicate policy of the data the model was trained on (as its stored config says;
    /// the default when it says nothing), so evaluation reads files the way training did.
    pub fn duplicate_policy(&self) -> DuplicatePolicy {
        serde_json::from_str::<serde_json::Value>(&self.config)
            .ok()
            .and_then(|v| serde_json::from_value(v["data"]["duplicates"].clone()).ok())
            .unwrap_or_default()
    }
}

impl ModelFile {
    /// The `n` best-scored items for dense user `u`, leaving out the items it rated in training
    /// (when the file records them); (item, score) pairs, best first, ties by item index.
    pub fn recommend(&self, u: u32, n: usize) -> Vec<(u32, f32)> {
        let mut seen = vec![false; self.layout.n_items];
        for &i in self.seen_items(u) {
            seen[i as usize] = true;
        }
        let mut scored: Vec<(u32, f32)> = (0..self.layout.n_items as u32)
            .filter(|&i| !seen[i as usize])
            .map(|i| (i, self.predict(Some(u), Some(i))))
            .collect();
        let by_score = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if n < scored.len() {
            scored.select_nth_unstable_by(n, by_score);
            scored.truncate(n);
        }
        scored.sort_by(by_score);
        scored
    }
}

/// Serialises tensors and header metadata to `path`: written aside, then renamed, so the file is
/// whole or absent.
pub(crate) fn write_safetensors<N: AsRef<str> + Ord + std::fmt::Display>(
    path: &Path,
    views: Vec<(N, TensorView<'_>)>,
    meta: HashMap<String, String>,
) -> Result<()> {
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Model {
        file: path.to_path_buf(),
        message: format!("cannot serialise: {e}"),
    })?;
    crate::fs::write_atomic(path, &bytes)
}

/// Parses the bytes of a safetensors file read from `path`: its tensors and header metadata
/// (empty when the header has none).
pub(crate) fn read_safetensors<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let err = |m: String| Error::Model {
        file: path.to_path_buf(),
        message: m,
    };
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| err(format!("not a readable safetensors file ({e})")))?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| err(format!("unreadable header ({e})")))?;
    Ok((st, header.metadata().clone().unwrap_or_default()))
}
