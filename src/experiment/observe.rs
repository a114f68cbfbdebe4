//! Observers watch a training run: one record per epoch and a summary at the end. The JSONL writer
//! lives here; the terminal table lives in the CLI.

use super::{EpochRecord, Summary};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Receives progress from the training loop.
pub trait Observer {
    /// Before the first epoch; `max_epochs` bounds the count.
    fn start(&mut self, _name: &str, _max_epochs: usize) -> Result<()> {
        Ok(())
    }
    /// After every epoch (epoch 0 is the initial point).
    fn epoch(&mut self, record: &EpochRecord) -> Result<()>;
    /// Once at the end.
    fn finish(&mut self, _summary: &Summary) -> Result<()> {
        Ok(())
    }
}

/// Writes one JSON object per epoch to a file (`metrics.jsonl`).
pub struct JsonlWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(f),
        })
    }

    /// Continues an existing curve after `epoch`: keeps its records up to that epoch (dropping any
    /// written after the checkpoint) and appends from there.
    pub fn resume(path: &Path, epoch: usize) -> Result<Self> {
        let old = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut kept = String::new();
        for (k, line) in old.lines().enumerate() {
            let rec: EpochRecord = serde_json::from_str(line)
                .map_err(|e| Error::data(path, k + 1, format!("not an epoch record: {e}")))?;
            if rec.epoch <= epoch {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        let mut w = Self::create(path)?;
        w.out
            .write_all(kept.as_bytes())
            .and_then(|_| w.out.flush())
            .map_err(|e| Error::io(path, e))?;
        Ok(w)
    }
}

impl Observer for JsonlWriter {
    fn epoch(&mut self, record: &EpochRecord) -> Result<()> {
        let line = serde_json::to_string(record).expect("records serialise");
        writeln!(self.out, "{line}").map_err(|e| Error::io(&self.path, e))?;
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Forwards to several observers in order.
#[derive(Default)]
pub struct Observers<'a>(pub Vec<&'a mut dyn Observer>);

impl Observer for Observers<'_> {
    fn start(&mut self, name: &str, max_epochs: usize) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|o| o.start(name, max_epochs))
    }
    fn epoch(&mut self, record: &EpochRecord) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.epoch(record))
    }
    fn finish(&mut self, summary: &Summary) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.finish(summary))
    }
}

/// Collects the records in memory (tests, experiment tables).
#[derive(Default)]
pub struct Recorder {
    pub records: Vec<EpochRecord>,
}

impl Observer for Recorder {
    fn epoch(&mut self, record: &EpochRecord) -> Result<()> {
        self.records.push(record.clone());
        Ok(())
    }
}
