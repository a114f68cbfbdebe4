//! Experiment files: several methods × seeds × a small grid of hyper-parameters, run one after
//! another into one output folder, then summarised as tables (Markdown, CSV) and learning-curve
//! plots (SVG).
//!
//! ```json
//! { "name": "paper-ml100k", "base": "configs/ml100k-slf.json", "seeds": [1, 2, 3],
//!   "set": { "train.backend": "cpu" },
//!   "runs": [ { "label": "slf" },
//!             { "label": "sslf", "config": "configs/ml100k-sslf.json", "grid": { "solver.rho": [0.05, 0.2] } } ] }
//! ```
//!
//! Each run's config is its `config` (or the experiment's `base`) with the experiment's `set`, the
//! run's `set`, one point of its `grid` and `train.seed` applied. Each (run, grid point, seed) is a
//! job writing `runs/<label>/seed-<seed>/{metrics.jsonl,summary.json}`: first into a `.partial`
//! folder, renamed when the job has finished, so an interrupted experiment resumes by skipping the
//! finished jobs and redoing the rest.

use super::data::Prepared;
use super::observe::{JsonlWriter, Observers};
use super::output::{write_atomic, RunDir};
use super::report::{plots, select_by_valid, tables, JobResult};
use crate::backend::any::{self, AnyBackend, BackendChoice};
use crate::config::{apply_override, from_tree, read_json, TrainConfig};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One method of an experiment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Name in tables and plots.
    pub label: String,
    /// Config file of this run (default: the experiment's `base`).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Overrides, `path` → value.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Values to sweep, `path` → list; every combination is a variant.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
}

/// An experiment file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuiteConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Config file every run starts from, unless it names its own.
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// Overrides applied to every run.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    pub runs: Vec<RunSpec>,
    /// Output folder (default runs/NAME).
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Pick, for each run (method), the grid point with the best mean of this validation
    /// figure; only the picked points report test metrics in the tables.
    #[serde(default)]
    pub select: Option<Select>,
    /// The file it was read from (for messages).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// What `select` ranks grid points by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The best validation RMSE, averaged over the seeds.
    ValidRmse,
}

fn default_seeds() -> Vec<u64> {
    vec![1]
}

/// One (variant, seed) job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The run (method) this job is a grid point of.
    pub method: String,
    pub label: String,
    pub seed: u64,
    pub config: TrainConfig,
    pub dir: PathBuf,
}

fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SuiteConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let mut cfg: SuiteConfig = from_tree(&file, read_json(path)?)?;
        if cfg.runs.is_empty() || cfg.seeds.is_empty() {
            return Err(Error::Config {
                file,
                path: "runs".into(),
                message: "an experiment needs at least one run and one seed".into(),
            });
        }
        let mut seeds = cfg.seeds.clone();
        seeds.sort_unstable();
        if let Some(w) = seeds.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Config {
                file,
                path: "seeds".into(),
                message: format!("seed {} is listed twice (each seed is one job)", w[0]),
            });
        }
        for (k, run) in cfg.runs.iter().enumerate() {
            if cfg.runs[..k].iter().any(|r| r.label == run.label) {
                return Err(Error::Config {
                    file,
                    path: format!("runs[{k}].label"),
                    message: format!(
                        "label `{}` is used by an earlier run (labels name the job folders)",
                        run.label
                    ),
                });
            }
        }
        if cfg.name.is_none() {
            cfg.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        cfg.file = Some(path.to_path_buf());
        Ok(cfg)
    }

    pub fn output_dir(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(self.name.as_deref().unwrap_or("experiment"))
        })
    }

    /// Expands runs × grid × seeds into jobs, each with a validated config.
    pub fn jobs(&self, out: &Path, backend: Option<BackendChoice>) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for (r, run) in self.runs.iter().enumerate() {
            let file = run
                .config
                .as_ref()
                .or(self.base.as_ref())
                .ok_or_else(|| Error::Config {
                    file: "experiment".into(),
                    path: format!("runs[{r}].config"),
                    message: "no config: give `base` or the run's `config`".into(),
                })?;
            let base = read_json(file)?;
            // Cartesian product of the grid, in key order.
            let mut points: Vec<Vec<(String, Value)>> = vec![Vec::new()];
            for (key, values) in &run.grid {
                points = points
                    .into_iter()
                    .flat_map(|p| {
                        values.iter().map(move |v| {
                            let mut q = p.clone();
                            q.push((key.clone(), v.clone()));
                            q
                        })
                    })
                    .collect();
            }
            for point in points {
                let label = if point.is_empty() {
                    run.label.clone()
                } else {
                    let parts: Vec<String> = point
                        .iter()
                        .map(|(k, v)| format!("{}={}", k.rsplit('.').next().unwrap_or(k), short(v)))
                        .collect();
                    format!("{}[{}]", run.label, parts.join(","))
                };
                for &seed in &self.seeds {
                    let mut v = base.clone();
                    let assign = |v: &mut Value, k: &str, x: &Value| {
                        apply_override(
                            v,
                            &format!("{k}={}", serde_json::to_string(x).expect("json")),
                        )
                    };
                    for (k, x) in self.set.iter().chain(&run.set) {
                        assign(&mut v, k, x)?;
                    }
                    for (k, x) in &point {
                        assign(&mut v, k, x)?;
                    }
                    let dir = out
                        .join("runs")
                        .join(slug(&label))
                        .join(format!("seed-{seed}"));
                    assign(&mut v, "train.seed", &Value::from(seed))?;
                    assign(&mut v, "name", &Value::from(label.clone()))?;
                    assign(&mut v, "train.save_model", &Value::from(false))?;
                    let blame = format!(
                        "{} (run `{label}`, seed {seed}, base {})",
                        self.file
                            .as_deref()
                            .map_or("experiment".into(), |p| p.display().to_string()),
                        file.display()
                    );
                    let mut config = TrainConfig::from_value(&blame, v)?;
                    if let Some(b) = backend {
                        config.train.backend = b;
                    }
                    jobs.push(Job {
                        method: run.label.clone(),
                        label: label.clone(),
                        seed,
                        config,
                        dir: dir.clone(),
                    });
                }
            }
        }
        Ok(jobs)
    }
}

fn read_result(job: &Job) -> Result<JobResult> {
    let dir = RunDir::new(&job.dir);
    let s = dir.read_summary()?.summary;
    let curve = dir
        .read_curve()?
        .iter()
        .filter_map(|r| r.valid_rmse.map(|v| (r.epoch as f64, r.elapsed_s, v)))
        .collect();
    let test = |f: fn(&super::Metrics) -> f64| s.test.as_ref().map_or(f64::NAN, f);
    Ok(JobResult {
        method: job.method.clone(),
        valid_rmse: s.best_valid_rmse.unwrap_or(f64::NAN),
        label: job.label.clone(),
        seed: job.seed,
        test_rmse: test(|m| m.rmse),
        test_mae: test(|m| m.mae),
        best_epoch: s.best_epoch as f64,
        passes_to_best: s.passes_to_best as f64,
        seconds_to_best: s.seconds_to_best,
        curve,
    })
}

/// Runs one job into `<dir>.partial`, then renames it to `<dir>`.
fn run_job(job: &Job, backends: &mut HashMap<String, AnyBackend>, data: &Prepared) -> Result<()> {
    let partial = job.dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    let key = format!(
        "{:?}/{}/{:?}",
        job.config.train.backend, job.config.train.threads, job.config.cpu.tile_items
    );
    if !backends.contains_key(&key) {
        backends.insert(
            key.clone(),
            any::open(
                job.config.train.backend,
                &job.config.cpu.options(job.config.train.threads),
                &(&job.config.gpu).into(),
                &|s| eprintln!("{s}"),
            )?,
        );
    }
    let backend = &backends[&key];
    let run = RunDir::new(&partial);
    let mut jsonl = JsonlWriter::create(&run.metrics_path())?;
    let mut obs = Observers(vec![&mut jsonl]);
    let trained = crate::with_backend!(backend, b => super::train(b, &job.config, data, &mut obs))?;
    drop(obs);
    drop(jsonl);
    run.write_summary(&trained.summary, &job.config)?;
    if trained.summary.stop == super::Stop::Interrupted {
        // Not finished: left as .partial, so a rerun starts this job again.
        return Err(Error::Interrupted(format!(
            "{} stopped after epoch {} (kept in {}); finished jobs are kept: run the same \
             command again to resume",
            job.dir.display(),
            trained.summary.epochs,
            partial.display()
        )));
    }
    std::fs::rename(&partial, &job.dir).map_err(|e| Error::io(&job.dir, e))
}

/// `sslf experiment`: runs the unfinished jobs, then writes the tables and plots.
pub fn run_cli(
    path: &Path,
    output: Option<&Path>,
    backend: Option<BackendChoice>,
    quiet: bool,
) -> Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    let suite = SuiteConfig::load(path)?;
    let out = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| suite.output_dir());
    let dir = RunDir::create(&out)?;
    let _lock = dir.lock(&|s| eprintln!("{s}"))?;
    let jobs = suite.jobs(&out, backend)?;
    let done = jobs
        .iter()
        .filter(|j| RunDir::new(&j.dir).is_finished())
        .count();
    if !quiet {
        eprintln!(
            "experiment {}: {} jobs ({} finished before, {} to run) into {}",
            suite.name.as_deref().unwrap_or("-"),
            jobs.len(),
            done,
            jobs.len() - done,
            out.display()
        );
    }
    write_atomic(
        &out.join("experiment.json"),
        serde_json::to_string_pretty(&suite)
            .expect("json")
            .as_bytes(),
    )?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(jobs.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} runs {msg} ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut backends = HashMap::new();
    let mut data_cache: HashMap<String, Prepared> = HashMap::new();
    let mut results: Vec<JobResult> = Vec::new();
    for (k, job) in jobs.iter().enumerate() {
        bar.set_position(k as u64);
        bar.set_message(format!("{} seed {}", job.label, job.seed));
        let fresh = !RunDir::new(&job.dir).is_finished();
        if fresh {
            let key = serde_json::to_string(&job.config.data).expect("json");
            if !data_cache.contains_key(&key) {
                let say = |s: &str| bar.println(s);
                let hooks = super::data::LoadHooks {
                    say: &say,
                    progress: None,
                    fingerprints: None,
                };
                let p = super::data::prepare_with(&job.config.data, &hooks)?;
                data_cache.insert(key.clone(), p);
            }
            run_job(job, &mut backends, &data_cache[&key])?;
        }
        let r = read_result(job)?;
        // Under `select`, the test figures of a job are shown only once it is picked.
        let figures = if suite.select.is_some() {
            format!("valid rmse {:.5}", r.valid_rmse)
        } else {
            format!("test rmse {:.5} mae {:.5}", r.test_rmse, r.test_mae)
        };
        let line = format!(
            "[{}/{}] {} seed {}: {figures}, best epoch {} ({:.2} s){}",
            k + 1,
            jobs.len(),
            r.label,
            r.seed,
            r.best_epoch,
            r.seconds_to_best,
            if fresh { "" } else { " (finished before)" }
        );
        if !quiet {
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        results.push(r);
    }
    bar.finish_and_clear();
    if suite.select.is_some() {
        let (picked, table) = select_by_valid(&results);
        let p = out.join("selection.md");
        write_atomic(&p, table.as_bytes())?;
        print!("{table}");
        results.retain(|r| picked.contains(&r.label));
    }
    let (md, csv) = tables(&results);
    for (name, text) in [("summary.md", &md), ("summary.csv", &csv)] {
        let p = out.join(name);
        write_atomic(&p, text.as_bytes())?;
    }
    plots(&results, &out)?;
    print!("{md}");
    println!(
        "wrote {}/{{summary.md,summary.csv,valid_rmse_vs_epoch.svg,valid_rmse_vs_seconds.svg}}",
        out.display()
    );
    Ok(())
}
