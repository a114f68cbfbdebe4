//! A run's output folder and every file in it: `summary.json` (typed both ways), `metrics.jsonl`,
//! `model.safetensors` and `checkpoint.safetensors`. `sslf train` and `sslf experiment` write
//! through [`RunDir`], so there is one place that decides names, formats and how a file is made
//! visible: written aside under a temporary name, then renamed over the final one.

use super::checkpoint;
use super::data::Prepared;
use super::{EpochRecord, Summary, Trained};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
pub use crate::fs::{temp_name, write_atomic};
use crate::model::file::ModelFile;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// `summary.json`: the run's [`Summary`] with the config it ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SummaryFile {
    #[serde(flatten)]
    pub summary: Summary,
    pub config: TrainConfig,
}

/// The output folder of one training run.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The folder at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// The folder at `root`, created with its parents.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let d = Self::new(root);
        std::fs::create_dir_all(&d.root).map_err(|e| Error::io(&d.root, e))?;
        Ok(d)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn summary_path(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn model_path(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }
    pub fn checkpoint_path(&self) -> PathBuf {
        checkpoint::path_in(&self.root)
    }

    /// Whether the run in this folder finished (its summary exists).
    pub fn is_finished(&self) -> bool {
        self.summary_path().exists()
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary, config: &TrainConfig) -> Result<()> {
        let file = SummaryFile {
            summary: summary.clone(),
            config: config.clone(),
        };
        let text = serde_json::to_string_pretty(&file).expect("a summary serialises");
        write_atomic(&self.summary_path(), text.as_bytes())
    }

    /// Reads `summary.json` back, typed.
    pub fn read_summary(&self) -> Result<SummaryFile> {
        let p = self.summary_path();
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| Error::data(&p, e.line(), e.to_string()))
    }

    /// Reads `metrics.jsonl`, one record per epoch.
    pub fn read_curve(&self) -> Result<Vec<EpochRecord>> {
        let p = self.metrics_path();
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        text.lines()
            .enumerate()
            .map(|(k, line)| {
                serde_json::from_str(line)
                    .map_err(|e| Error::data(&p, k + 1, format!("not an epoch record: {e}")))
            })
            .collect()
    }

    /// Writes `model.safetensors`: the trained parameters with the data's ids, the config and the
    /// items each user rated in training (train and validation parts).
    pub fn write_model(
        &self,
        trained: &Trained,
        data: &Prepared,
        config: &TrainConfig,
    ) -> Result<()> {
        ModelFile {
            layout: trained.layout,
            theta: trained.theta.clone(),
            users: data.users.clone(),
            items: data.items.clone(),
            clip: trained.clip,
            config: serde_json::to_string(config).expect("a config serialises"),
            seen: Some(data.seen_by_user()),
        }
        .save(&self.model_path())
    }
}

/// Reads an f64 that JSON may hold as `null` (serde_json writes NaN and ±∞ as `null`).
pub(crate) fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
