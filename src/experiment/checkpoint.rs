//! Checkpoints of a training run: θ, the best θ so far, the solver's carried state and the loop's
//! bookkeeping, in one safetensors file (`checkpoint.safetensors` in the run's output folder),
//! written aside and renamed so it is whole or absent. `sslf train --resume` continues from it;
//! with the same config the resumed run follows the uninterrupted one exactly, since every
//! reduction has a fixed order and SGD replays its shuffle stream.
//!
//! Tensors: `theta`, `best` and `solver.<name>` (f32, θ-shaped). Metadata: `sslf_checkpoint` = "1"
//! and `state`, a JSON object with the epoch, the best and last epoch records, epochs since the
//! best, the work counters, the config fingerprint and `solver_scalars`.

use super::EpochRecord;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::model::file::{read_safetensors, write_safetensors};
use crate::problem::Counters;
use crate::solver::SolverState;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The state of a run after a finished epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub theta: Vec<f32>,
    pub best: Vec<f32>,
    pub solver: SolverState,
}

/// The scalar part of a checkpoint (the `state` metadata field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The last finished epoch.
    pub epoch: usize,
    pub last: EpochRecord,
    pub best: EpochRecord,
    pub since_best: usize,
    /// Rejected steps in a row at the last finished epoch.
    #[serde(default)]
    pub rejected_run: usize,
    pub counters: Counters,
    /// What must not change between the run and its resumption ([`fingerprint`]).
    pub fingerprint: serde_json::Value,
    /// The data files the run read, by size and content hash: a resumption refuses changed data.
    #[serde(default)]
    pub data_files: Vec<crate::fs::Fingerprint>,
    /// Processes of the run (each held its own users' rows): a resumption needs as many.
    #[serde(default = "one")]
    pub processes: usize,
}

fn one() -> usize {
    1
}

/// The parts of a config a resumed run must share with the checkpoint: data, model, solver and
/// seed. `train.max_epochs`, `patience`, the backend and the output may change.
pub fn fingerprint(cfg: &TrainConfig) -> serde_json::Value {
    serde_json::json!({
        "data": cfg.data,
        "model": cfg.model,
        "solver": cfg.solver,
        "seed": cfg.train.seed,
    })
}

/// Where a run keeps its checkpoint.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

/// The checkpoint file of this process: `path` itself for one process or rank 0, and
/// `checkpoint.rank{r}.safetensors` beside it for rank r > 0 of a run across processes (each
/// rank keeps its own user rows; rank 0's file also holds the shared rows every rank has).
pub fn path_of_rank(path: &Path, comm: &dyn crate::comm::Comm) -> PathBuf {
    if comm.size() <= 1 || comm.rank() == 0 {
        return path.to_path_buf();
    }
    path.with_file_name(format!("checkpoint.rank{}.safetensors", comm.rank()))
}

/// Refuses to resume from checkpoints of different epochs (a run killed between two ranks'
/// writes).
pub fn check_same_epoch(comm: &dyn crate::comm::Comm, epoch: usize) -> Result<()> {
    let all = crate::comm::all_gather_u64(comm, &[epoch as u64])?;
    if all.iter().any(|e| e[0] != epoch as u64) {
        let list: Vec<String> = all
            .iter()
            .enumerate()
            .map(|(r, e)| format!("rank {r}: epoch {}", e[0]))
            .collect();
        return Err(Error::Input(format!(
            "the ranks' checkpoints are of different epochs ({}); the run was stopped while \
             they were written, so it cannot be resumed: train again without --resume",
            list.join(", ")
        )));
    }
    Ok(())
}

/// The coordinates of `ranges` of `v`, one range after another.
pub(super) fn rows_in(ranges: Vec<std::ops::Range<usize>>, v: &[f32]) -> Vec<f32> {
    ranges
        .into_iter()
        .flat_map(|r| v[r].iter().copied())
        .collect()
}

/// The user rows of a θ-shaped vector (what a rank other than 0 keeps in its checkpoint).
fn user_rows(layout: &crate::model::Layout, v: &[f32]) -> Vec<f32> {
    rows_in(layout.user_ranges(), v)
}

/// A θ-shaped vector from its user rows and its shared rows.
fn join_rows(layout: &crate::model::Layout, users: &[f32], shared: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; layout.len()];
    let (mut a, mut b) = (0, 0);
    for r in layout.user_ranges() {
        out[r.clone()].copy_from_slice(&users[a..a + r.len()]);
        a += r.len();
    }
    for r in layout.shared_ranges() {
        out[r.clone()].copy_from_slice(&shared[b..b + r.len()]);
        b += r.len();
    }
    out
}

/// Completes the checkpoints of a run across processes after they are loaded: ranks other than
/// 0 kept only their user rows; rank 0 sends the shared rows (items, d) of θ, the best θ and
/// every θ-shaped solver vector. A no-op in one process.
pub fn restore_shared_rows(
    comm: &dyn crate::comm::Comm,
    layout: &crate::model::Layout,
    ck: &mut Checkpoint,
) -> Result<()> {
    if comm.size() <= 1 {
        return Ok(());
    }
    let n_user = layout.user_ranges().iter().map(|r| r.len()).sum::<usize>();
    let n_shared = layout.len() - n_user;
    // Rank 0 sends the names of its θ-shaped solver vectors, then the shared rows of θ, of the
    // best θ and of those vectors; the others send nothing.
    let root = comm.rank() == 0;
    let names: Vec<String> = ck
        .solver
        .vectors
        .iter()
        .filter(|(_, v)| root && v.len() == layout.len())
        .map(|(k, _)| k.clone())
        .collect();
    let mut shared = Vec::new();
    if root {
        for v in [&ck.theta, &ck.best]
            .into_iter()
            .chain(names.iter().map(|k| &ck.solver.vectors[k]))
        {
            shared.extend(rows_in(layout.shared_ranges(), v));
        }
    }
    let names = super::ranges::gather_names(comm, &names)?.swap_remove(0);
    let floats = crate::comm::all_gather_pod(comm, &shared)?.swap_remove(0);
    if root {
        return Ok(());
    }
    let bad = |what: &str| Error::Unsupported(format!("the ranks' checkpoints do not fit: {what}"));
    if floats.len() != (2 + names.len()) * n_shared {
        return Err(bad("rank 0's shared rows"));
    }
    let mut parts = floats.chunks(n_shared);
    let mut join = |v: &[f32]| -> Result<Vec<f32>> {
        if v.len() != n_user {
            return Err(bad(&format!(
                "{} values where this rank's rows are {n_user}",
                v.len()
            )));
        }
        Ok(join_rows(layout, v, parts.next().expect("counted above")))
    };
    ck.theta = join(&ck.theta)?;
    ck.best = join(&ck.best)?;
    for k in names {
        let v = ck
            .solver
            .vectors
            .get(&k)
            .ok_or_else(|| bad(&format!("no `{k}` here")))?;
        let full = join(v)?;
        ck.solver.vectors.insert(k, full);
    }
    Ok(())
}

impl Checkpoint {
    /// What this process keeps of a run across processes: rank 0 everything, the others their
    /// user rows only (the shared rows are rank 0's, sent at `--resume`).
    pub fn own_rows_only<B: crate::backend::Backend>(
        mut self,
        p: &crate::problem::Problem<B>,
    ) -> Self {
        let Some(comm) = p.comm() else {
            return self;
        };
        if comm.rank() == 0 {
            return self;
        }
        let l = &p.layout;
        self.theta = user_rows(l, &self.theta);
        self.best = user_rows(l, &self.best);
        for v in self.solver.vectors.values_mut() {
            if v.len() == l.len() {
                *v = user_rows(l, v);
            }
        }
        self
    }

    /// Writes the checkpoint aside, then renames it over `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let err = |m: String| Error::Model {
            file: path.to_path_buf(),
            message: m,
        };
        let mut named: Vec<(String, &[f32])> =
            vec![("theta".into(), &self.theta), ("best".into(), &self.best)];
        for (k, v) in &self.solver.vectors {
            named.push((format!("solver.{k}"), v));
        }
        let mut views = Vec::new();
        for (name, v) in &named {
            let view = TensorView::new(Dtype::F32, vec![v.len()], bytemuck::cast_slice(v))
                .map_err(|e| err(format!("tensor {name}: {e}")))?;
            views.push((name.clone(), view));
        }
        let mut state = serde_json::to_value(&self.meta).expect("checkpoint state serialises");
        state["solver_scalars"] =
            serde_json::to_value(&self.solver.scalars).expect("scalars serialise");
        let mut header = HashMap::new();
        header.insert("sslf_checkpoint".to_string(), "1".to_string());
        header.insert("state".to_string(), state.to_string());
        write_safetensors(path, views, header)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses and checks the bytes of a checkpoint; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let err = |m: String| Error::Model {
            file: path.to_path_buf(),
            message: m,
        };
        let (st, meta) = read_safetensors(path, bytes)?;
        if meta.get("sslf_checkpoint").map(String::as_str) != Some("1") {
            return Err(err("not an sslf checkpoint (format 1)".into()));
        }
        let mut state: serde_json::Value = serde_json::from_str(
            meta.get("state")
                .ok_or_else(|| err("metadata field `state` is missing".into()))?,
        )
        .map_err(|e| err(format!("metadata field `state`: {e}")))?;
        let scalars: BTreeMap<String, f64> = state
            .as_object_mut()
            .and_then(|o| o.remove("solver_scalars"))
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| err(format!("metadata field `state.solver_scalars`: {e}")))?
            .unwrap_or_default();
        let state: CheckpointMeta = serde_json::from_value(state)
            .map_err(|e| err(format!("metadata field `state`: {e}")))?;
        let tensor = |name: &str| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| err(format!("tensor `{name}` is missing")))?;
            if t.dtype() != Dtype::F32 {
                return Err(err(format!("tensor `{name}` is not f32")));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let theta = tensor("theta")?;
        let best = tensor("best")?;
        if best.len() != theta.len() {
            return Err(err("tensors `theta` and `best` differ in length".into()));
        }
        for (name, v) in [("theta", &theta), ("best", &best)] {
            if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                return Err(err(format!(
                    "tensor `{name}` holds a non-finite value at {k} ({}); it cannot be resumed",
                    v[k]
                )));
            }
        }
        for (what, x) in [
            ("last.loss", state.last.loss),
            ("best.loss", state.best.loss),
        ] {
            if !x.is_finite() {
                return Err(err(format!(
                    "`state.{what}` is not finite ({x}); it cannot be resumed"
                )));
            }
        }
        let mut solver = SolverState {
            scalars,
            ..Default::default()
        };
        for name in st.names() {
            if let Some(k) = name.strip_prefix("solver.") {
                solver.vectors.insert(k.to_string(), tensor(name)?);
            }
        }
        Ok(Checkpoint {
            meta: state,
            theta,
            best,
            solver,
        })
    }

    /// Fails unless every data file the checkpoint records still has the same size and contents,
    /// naming the first that changed.
    pub fn check_data(&self, now: &[crate::fs::Fingerprint]) -> Result<()> {
        for then in &self.meta.data_files {
            let same = now
                .iter()
                .find(|f| f.path == then.path)
                .is_some_and(|f| f == then);
            if !same {
                return Err(Error::data(
                    &then.path,
                    0,
                    format!(
                        "changed since the checkpoint was written ({} bytes, xxh3 {} then); \
                         resume with the same data, or start afresh with --overwrite",
                        then.bytes, then.xxh3
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Fails unless `cfg` matches the config the checkpoint was written with (see
    /// [`fingerprint`]), naming the first section that differs.
    /// Refuses a checkpoint of a run with another process count (its rows are another cut).
    pub fn check_processes(&self, processes: usize, path: &Path) -> Result<()> {
        if self.meta.processes != processes {
            return Err(Error::Model {
                file: path.to_path_buf(),
                message: format!(
                    "the checkpoint was written by {} process(es) and this run has {processes}; \
                     resume with mpirun -np {} (or without mpirun for 1)",
                    self.meta.processes, self.meta.processes
                ),
            });
        }
        Ok(())
    }

    pub fn check_config(&self, cfg: &TrainConfig, path: &Path) -> Result<()> {
        let now = fingerprint(cfg);
        for key in ["data", "model", "solver", "seed"] {
            if now[key] != self.meta.fingerprint[key] {
                return Err(Error::Model {
                    file: path.to_path_buf(),
                    message: format!(
                        "the checkpoint was written with a different `{key}` section: {} now, {} \
                         then; resume with the config it was written with",
                        now[key], self.meta.fingerprint[key]
                    ),
                });
            }
        }
        Ok(())
    }
}
