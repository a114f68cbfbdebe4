//! Experiment configuration: the serde mirror of `configs/*.json`. Unknown fields are rejected and
//! every error names the JSON path. Defaults live here and in the section types, once each.
//!
//! Relative paths inside a config are taken relative to the working directory.

use crate::data::read::{Columns, DuplicatePolicy, Format};
use crate::data::split::SplitMode;
use crate::data::synth::SynthConfig;
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::solver::SolverConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub use crate::backend::any::BackendChoice;

/// The `data` section: one source (synthetic, one file to split, or a train/test pair) and how to
/// hold out validation and test entries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Generate synthetic data with these parameters (the default when no file is named).
    pub synthetic: Option<SynthConfig>,
    /// One rating file, split into train and test by `test_fraction`.
    pub path: Option<PathBuf>,
    /// A training file (with `test`, a fixed split).
    pub train: Option<PathBuf>,
    /// A test file read with the training file's id maps.
    pub test: Option<PathBuf>,
    /// Rating files split by user (`sslf shard` writes them), as a pattern with `{rank}`:
    /// `part-{rank}.tsv` names part-0.tsv, part-1.tsv, … (as many as exist). Under mpirun each
    /// process reads its own part only; one process reads them all, in order. Split like `path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<PathBuf>,
    pub format: Format,
    pub duplicates: DuplicatePolicy,
    /// Whether the first line of a CSV or TSV file is a header: `true` skips it, `false` reads it
    /// as data; absent, it is a header when none of its fields reads as a number (and the run
    /// says it skipped it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// Fraction held out for test when the source is not already split.
    pub test_fraction: f64,
    /// Fraction of the training entries held out for validation and early stopping (0: none).
    pub validation_fraction: f64,
    pub split: SplitMode,
    /// Seed of the test and validation splits.
    pub split_seed: u64,
    /// Keep the prepared data (the three parts and the id maps) in a safetensors file beside the
    /// first data file (`NAME.prepared.safetensors`), or at `prepared`, and load it from there
    /// while the data files and these settings are unchanged; a stale file is rebuilt and said.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
    /// Where the prepared data lives (written by `sslf prepare`); implies `cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared: Option<PathBuf>,
    /// The column names of a Parquet input (default `user`, `item`, `rating`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Columns>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            synthetic: None,
            path: None,
            train: None,
            test: None,
            shards: None,
            format: Format::Auto,
            duplicates: DuplicatePolicy::Error,
            header: None,
            test_fraction: 0.2,
            validation_fraction: 0.1,
            split: SplitMode::Random,
            split_seed: 42,
            cache: false,
            prepared: None,
            columns: None,
        }
    }
}

/// The `train` section: the loop around the solver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub max_epochs: usize,
    /// Epochs without a validation gain of at least `min_delta` before stopping (before the first
    /// gain, epochs whose step the solver rejected, leaving θ unchanged, do not count).
    pub patience: usize,
    pub min_delta: f64,
    /// After the first validation gain, stop once this many steps in a row were rejected (the
    /// solver is at a minimum of its model and further epochs only pay for rejections); 0 never.
    pub max_rejected: usize,
    /// After early stopping picks the epoch count on the validation split, retrain from the same
    /// seed on train + validation for that many epochs; the test split is then read once, for
    /// the refitted model.
    pub refit: bool,
    /// Seed of the initialisation (and of SGD's shuffles).
    pub seed: u64,
    pub backend: BackendChoice,
    /// CPU worker threads (0: one per core).
    pub threads: usize,
    /// Output folder for metrics.jsonl, summary.json and model.safetensors (default runs/NAME).
    pub output: Option<PathBuf>,
    /// Save the trained model (at the best-validation epoch) into the output folder.
    pub save_model: bool,
    /// Least seconds between two checkpoints (`checkpoint.safetensors` in the output folder, for
    /// `sslf train --resume`); 0 writes one after every epoch, null none. One is also written
    /// when the run stops.
    pub checkpoint_secs: Option<f64>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            max_epochs: 50,
            patience: 10,
            min_delta: 1e-5,
            max_rejected: 5,
            refit: false,
            seed: 1,
            backend: BackendChoice::Cpu,
            threads: 0,
            output: None,
            save_model: true,
            checkpoint_secs: Some(60.0),
        }
    }
}

/// The `gpu` section: device choices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// Largest storage binding to use, in bytes (default: the adapter's limit). θ and the ratings
    /// are split to fit it; a small value forces those paths, as the tests do on lavapipe.
    pub max_chunk_bytes: Option<u64>,
    /// Use subgroup operations when the adapter has them (default true).
    pub subgroups: Option<bool>,
    /// Most bytes of rating data kept on the device (default: all of it); the rest is streamed
    /// from host memory before each pass, for data sets larger than the device's memory.
    pub max_resident_bytes: Option<u64>,
}

impl From<&GpuConfig> for crate::backend::gpu::GpuOptions {
    fn from(c: &GpuConfig) -> Self {
        let d = Self::default();
        Self {
            max_chunk_bytes: c.max_chunk_bytes,
            subgroups: c.subgroups.unwrap_or(d.subgroups),
            max_resident_bytes: c.max_resident_bytes,
            backends: d.backends,
        }
    }
}

/// The `cpu` section: how the CPU backend walks the ratings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CpuConfig {
    /// Tile size of the sparse passes, in items: the fused gradient and curvature passes, the
    /// Jacobi build and (where it pays, `plan_pays_for_loss`) the loss walk a tile plan of
    /// `backend::cpu::PLAN_ROWS` users × n items computed once per matrix, and evaluation
    /// predicts in the same tiles' order; the other
    /// passes walk n rows × n columns of whichever side they reduce over. A tile's rows of
    /// every array a pass touches stay in L2. `null` picks n from the rank to fill 1 MiB of L2
    /// (`backend::cpu::auto_tile`: 2,624 at rank 32, 640 at rank 128) where it pays
    /// (`plan_pays`, `tiles_pay`); 0 walks row by row. Results are the same to the bit for
    /// every n.
    pub tile_items: Option<usize>,
}

impl CpuConfig {
    /// The CPU backend's options, with `threads` from the `train` section.
    pub fn options(&self, threads: usize) -> crate::backend::cpu::CpuOptions {
        crate::backend::cpu::CpuOptions {
            threads,
            tile_items: self.tile_items,
        }
    }
}

/// A whole training configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Run name (default: the config file's stem).
    pub name: Option<String>,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub solver: SolverConfig,
    pub train: RunConfig,
    pub cpu: CpuConfig,
    pub gpu: GpuConfig,
}

fn config_err(file: &str, path: &str, message: impl Into<String>) -> Error {
    Error::Config {
        file: file.to_string(),
        path: path.to_string(),
        message: message.into(),
    }
}

/// Sets `path` (dotted, e.g. `solver.rho`) in a JSON tree to `value`; `value` is read as JSON, or as
/// a string when it is not valid JSON.
pub fn apply_override(root: &mut Value, assignment: &str) -> Result<()> {
    let (path, raw) = assignment.split_once('=').ok_or_else(|| {
        config_err(
            "--set",
            assignment,
            "expected KEY=VALUE, for example solver.rho=0.1",
        )
    })?;
    let value: Value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut node = root;
    let keys: Vec<&str> = path.split('.').collect();
    for (k, key) in keys.iter().enumerate() {
        if key.is_empty() {
            return Err(config_err("--set", path, "empty key in the path"));
        }
        let obj = match node {
            Value::Object(o) => o,
            Value::Null => {
                *node = Value::Object(Default::default());
                node.as_object_mut().expect("just set")
            }
            _ => {
                return Err(config_err(
                    "--set",
                    &keys[..k].join("."),
                    "is not an object, so it has no fields",
                ))
            }
        };
        if k + 1 == keys.len() {
            obj.insert(key.to_string(), value);
            return Ok(());
        }
        node = obj.entry(key.to_string()).or_insert(Value::Null);
    }
    Ok(())
}

/// Parses JSON text into a tree; a syntax error names the file, line and column.
pub fn parse_json(file: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        config_err(
            file,
            &format!("line {} column {}", e.line(), e.column()),
            e.to_string().split(" at line").next().unwrap_or_default(),
        )
    })
}

/// Reads a JSON file into a tree.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_json(&path.display().to_string(), &text)
}

/// Deserialises a tree (unknown fields rejected by the target type); an error names the JSON path.
pub fn from_tree<T: serde::de::DeserializeOwned>(file: &str, value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| config_err(file, &e.path().to_string(), e.into_inner().to_string()))
}

impl TrainConfig {
    /// Parses a config from JSON text; `file` names it in errors. An error that only the
    /// overrides bring in is blamed on the first `--set KEY=VALUE` that brings it.
    pub fn from_json(file: &str, text: &str, overrides: &[String]) -> Result<Self> {
        let base = parse_json(file, text)?;
        let mut value = base.clone();
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        match Self::from_value(file, value) {
            Ok(c) => Ok(c),
            Err(e) if overrides.is_empty() => Err(e),
            Err(e) => {
                Self::from_value(file, base.clone())?;
                let mut v = base;
                for o in overrides {
                    apply_override(&mut v, o)?;
                    Self::from_value(&format!("--set {o}"), v.clone())?;
                }
                Err(e)
            }
        }
    }

    /// Reads and validates a config file, with `--set` overrides applied before parsing.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file = path.display().to_string();
        let mut cfg = Self::from_json(&file, &text, overrides)?;
        if cfg.name.is_none() {
            cfg.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(cfg)
    }

    /// Deserialises and validates a JSON tree.
    pub fn from_value(file: &str, value: Value) -> Result<Self> {
        let cfg: TrainConfig = from_tree(file, value)?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks every range and combination; errors name the JSON path.
    pub fn validate(&self, file: &str) -> Result<()> {
        let d = &self.data;
        let n_sources = d.synthetic.is_some() as u8
            + d.path.is_some() as u8
            + d.train.is_some() as u8
            + d.shards.is_some() as u8;
        if n_sources > 1 {
            return Err(config_err(
                file,
                "data",
                "give one source: `synthetic`, `path`, `train` (with `test`), or `shards`",
            ));
        }
        if let Some(s) = &d.shards {
            if !s.to_string_lossy().contains("{rank}") {
                return Err(config_err(
                    file,
                    "data.shards",
                    "must hold `{rank}` where the part number goes (e.g. `parts/part-{rank}.tsv`)",
                ));
            }
            if d.split != crate::data::split::SplitMode::Random {
                return Err(config_err(
                    file,
                    "data.split",
                    "sharded data is split at random (`random`): a per-user split would need \
                     every part's users at once",
                ));
            }
            if d.cache || d.prepared.is_some() {
                return Err(config_err(
                    file,
                    "data.cache",
                    "sharded data is read part by part; it has no prepared-data cache",
                ));
            }
        }
        if d.test.is_some() && d.train.is_none() {
            return Err(config_err(
                file,
                "data.test",
                "needs `data.train` beside it",
            ));
        }
        if !(0.0..1.0).contains(&d.test_fraction) {
            return Err(config_err(file, "data.test_fraction", "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&d.validation_fraction) {
            return Err(config_err(
                file,
                "data.validation_fraction",
                "must be in [0, 1)",
            ));
        }
        if d.cache && d.prepared.is_none() && d.path.is_none() && d.train.is_none() {
            return Err(config_err(
                file,
                "data.cache",
                "synthetic data has no file to keep the cache beside: name one with \
                 `data.prepared`",
            ));
        }
        if let Some(s) = &d.synthetic {
            s.validate()
                .map_err(|m| config_err(file, "data.synthetic", m))?;
        }
        self.model
            .validate()
            .map_err(|(f, m)| config_err(file, &format!("model.{f}"), m))?;
        self.solver
            .validate()
            .map_err(|(f, m)| config_err(file, &format!("solver.{f}"), m))?;
        if self.train.max_epochs == 0 {
            return Err(config_err(file, "train.max_epochs", "must be ≥ 1"));
        }
        if !crate::data::finite_nonneg(self.train.min_delta) {
            return Err(config_err(file, "train.min_delta", "must be ≥ 0"));
        }
        if self
            .train
            .checkpoint_secs
            .is_some_and(|s| !crate::data::finite_nonneg(s))
        {
            return Err(config_err(
                file,
                "train.checkpoint_secs",
                "must be a number ≥ 0, or null for no checkpoints",
            ));
        }
        if let Some(b) = self.gpu.max_chunk_bytes {
            if b < 4096 {
                return Err(config_err(file, "gpu.max_chunk_bytes", "must be ≥ 4096"));
            }
        }
        Ok(())
    }

    /// The run name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("run")
    }

    /// The output folder.
    pub fn output_dir(&self) -> PathBuf {
        self.train
            .output
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_json_path() {
        let e = TrainConfig::from_json("c.json", r#"{"solver": {"cg_iter": 3}}"#, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.json: solver.cg_iter: unknown field `cg_iter`"),
            "{e}"
        );
        let e = TrainConfig::from_json("c.json", r#"{"model": {"rank": "x"}}"#, &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.json: model.rank: invalid type"), "{e}");
        let e = TrainConfig::from_json("c.json", r#"{"model": {"rank": 0}}"#, &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "c.json: model.rank: must be in 1..=1024");
        let e = TrainConfig::from_json("c.json", "{\n\"model\": }", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.json: line 2 column"), "{e}");
    }

    #[test]
    fn overrides_set_nested_values() {
        let cfg = TrainConfig::from_json(
            "c.json",
            "{}",
            &[
                "solver.rho=0.3".into(),
                "solver.name=sslf".into(),
                "train.max_epochs=3".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.solver.rho, Some(0.3));
        assert_eq!(cfg.solver.name, crate::solver::SolverKind::Sslf);
        assert_eq!(cfg.train.max_epochs, 3);
        let e = TrainConfig::from_json("c.json", "{}", &["solver.rhoo=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("solver.rhoo: unknown field `rhoo`"), "{e}");
    }
}
