//! A run's output folder and every file in it: `summary.json` (typed both ways), `metrics.jsonl`,
//! `model.safetensors` and `checkpoint.safetensors`. `sslf train` and `sslf experiment` write
//! through [`RunDir`], so there is one place that decides names, formats and how a file is made
//! visible: written aside under a temporary name, then renamed over the final one.

use super::checkpoint;
use super::data::Prepared;
use super::{EpochRecord, Summary, Trained};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
pub use crate::fs::write_atomic;
use crate::model::file::ModelFile;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// The exclusive lock of an output folder, released when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

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

    /// The files a run leaves here, those that exist, in the order they are removed (the summary,
    /// a finished run's marker, first).
    pub fn results(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = [
            self.summary_path(),
            self.model_path(),
            self.checkpoint_path(),
        ]
        .into_iter()
        .filter(|p| p.exists())
        .collect();
        // The other ranks' checkpoints of a run across processes.
        out.extend(
            (1..)
                .map(|r| self.root.join(format!("checkpoint.rank{r}.safetensors")))
                .take_while(|p| p.exists()),
        );
        out.extend(Some(self.metrics_path()).filter(|p| p.exists()));
        out
    }

    /// Removes an earlier run's files, summary first, so an interruption never leaves a summary
    /// beside a half-removed run.
    pub fn clear_results(&self) -> Result<()> {
        for p in self.results() {
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
        Ok(())
    }

    /// Takes the folder's lock (`.sslf.lock`) for this process, or says which process holds it.
    /// A lock left by a process that no longer runs (killed) is taken over, and said so to `say`.
    pub fn lock(&self, say: &dyn Fn(&str)) -> Result<RunLock> {
        let path = self.root.join(".sslf.lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    writeln!(f, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid: Option<u32> = text.trim().parse().ok();
                    let alive = match pid {
                        Some(p) if Path::new("/proc/self").exists() => {
                            Path::new(&format!("/proc/{p}")).exists()
                        }
                        // Without /proc the holder cannot be checked: treat it as running.
                        _ => true,
                    };
                    if alive {
                        return Err(Error::Config {
                            file: self.root.display().to_string(),
                            path: "output folder".into(),
                            message: format!(
                                "another sslf run ({}) is writing here; wait for it or choose \
                                 another output folder (if no such run exists, remove {})",
                                pid.map_or("unknown process".into(), |p| format!("process {p}")),
                                path.display()
                            ),
                        });
                    }
                    say(&format!(
                        "sslf: taking over {} from process {} (no longer running)",
                        path.display(),
                        pid.unwrap_or(0)
                    ));
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::io(
            &path,
            std::io::Error::other("the lock was taken by another process meanwhile"),
        ))
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
