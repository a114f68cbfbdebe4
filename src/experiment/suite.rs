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

use super::data::{prepare, Prepared};
use super::observe::{JsonlWriter, Observers};
use crate::cli::AnyBackend;
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

/// The figures of one finished job, read back from its folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    #[serde(default)]
    pub method: String,
    pub label: String,
    /// Best validation RMSE (NaN without validation).
    #[serde(default)]
    pub valid_rmse: f64,
    pub seed: u64,
    pub test_rmse: f64,
    pub test_mae: f64,
    pub best_epoch: f64,
    pub passes_to_best: f64,
    pub seconds_to_best: f64,
    /// (epoch, elapsed_s, valid_rmse) per epoch.
    pub curve: Vec<(f64, f64, f64)>,
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
        if cfg.name.is_none() {
            cfg.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(cfg)
    }

    pub fn output_dir(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(self.name.as_deref().unwrap_or("experiment"))
        })
    }

    /// Expands runs × grid × seeds into jobs, each with a validated config.
    pub fn jobs(&self, out: &Path, backend: Option<&str>) -> Result<Vec<Job>> {
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
                    if let Some(b) = backend {
                        assign(&mut v, "train.backend", &Value::from(b))?;
                    }
                    let config = TrainConfig::from_value(&file.display().to_string(), v)?;
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
    let sp = job.dir.join("summary.json");
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(&sp).map_err(|e| Error::io(&sp, e))?)
            .map_err(|e| Error::data(&sp, e.line(), e.to_string()))?;
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mp = job.dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&mp).map_err(|e| Error::io(&mp, e))?;
    let mut curve = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let r: Value =
            serde_json::from_str(line).map_err(|e| Error::data(&mp, k + 1, e.to_string()))?;
        if let Some(v) = r["valid_rmse"].as_f64() {
            curve.push((num(&r["epoch"]), num(&r["elapsed_s"]), v));
        }
    }
    Ok(JobResult {
        method: job.method.clone(),
        valid_rmse: num(&s["best_valid_rmse"]),
        label: job.label.clone(),
        seed: job.seed,
        test_rmse: num(&s["test"]["rmse"]),
        test_mae: num(&s["test"]["mae"]),
        best_epoch: num(&s["best_epoch"]),
        passes_to_best: num(&s["passes_to_best"]),
        seconds_to_best: num(&s["seconds_to_best"]),
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
        "{:?}/{}",
        job.config.train.backend, job.config.train.threads
    );
    if !backends.contains_key(&key) {
        backends.insert(
            key.clone(),
            AnyBackend::open(&job.config, &|s| eprintln!("{s}"))?,
        );
    }
    let backend = &backends[&key];
    let mut jsonl = JsonlWriter::create(&partial.join("metrics.jsonl"))?;
    let mut obs = Observers(vec![&mut jsonl]);
    let trained = crate::with_backend!(backend, b => super::train(b, &job.config, data, &mut obs))?;
    drop(obs);
    drop(jsonl);
    let mut v = serde_json::to_value(&trained.summary).expect("summary serialises");
    v["config"] = serde_json::to_value(&job.config).expect("config serialises");
    let sp = partial.join("summary.json");
    std::fs::write(&sp, serde_json::to_string_pretty(&v).expect("json"))
        .map_err(|e| Error::io(&sp, e))?;
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

/// Mean and sample standard deviation.
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// (method, seeds, mean ± std of test RMSE, test MAE, best epoch, passes and seconds to best).
pub type Aggregate = (String, usize, [(f64, f64); 5]);

/// A method's mean curve: (label, [(epoch, mean seconds, mean validation RMSE)]).
pub type Curve = (String, Vec<(f64, f64, f64)>);

/// Per-method aggregates over seeds, in the order methods first appear.
pub fn aggregate(results: &[JobResult]) -> Vec<Aggregate> {
    let mut order: Vec<String> = Vec::new();
    for r in results {
        if !order.contains(&r.label) {
            order.push(r.label.clone());
        }
    }
    order
        .into_iter()
        .map(|label| {
            let rs: Vec<&JobResult> = results.iter().filter(|r| r.label == label).collect();
            let col = |f: &dyn Fn(&JobResult) -> f64| {
                mean_std(&rs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let stats = [
                col(&|r| r.test_rmse),
                col(&|r| r.test_mae),
                col(&|r| r.best_epoch),
                col(&|r| r.passes_to_best),
                col(&|r| r.seconds_to_best),
            ];
            (label, rs.len(), stats)
        })
        .collect()
}

/// The summary table as Markdown and as CSV.
pub fn tables(results: &[JobResult]) -> (String, String) {
    let agg = aggregate(results);
    let mut md = String::from(
        "| method | seeds | test RMSE | test MAE | best epoch | passes to best | seconds to best |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut csv = String::from(
        "method,seeds,test_rmse_mean,test_rmse_std,test_mae_mean,test_mae_std,best_epoch_mean,best_epoch_std,passes_mean,passes_std,seconds_mean,seconds_std\n",
    );
    for (label, n, s) in agg {
        md.push_str(&format!(
            "| {label} | {n} | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.1} ± {:.1} | {:.0} ± {:.0} | {:.2} ± {:.2} |\n",
            s[0].0, s[0].1, s[1].0, s[1].1, s[2].0, s[2].1, s[3].0, s[3].1, s[4].0, s[4].1
        ));
        csv.push_str(&format!(
            "{},{n},{},{},{},{},{},{},{},{},{},{}\n",
            if label.contains(',') {
                format!("\"{label}\"")
            } else {
                label.clone()
            },
            s[0].0,
            s[0].1,
            s[1].0,
            s[1].1,
            s[2].0,
            s[2].1,
            s[3].0,
            s[3].1,
            s[4].0,
            s[4].1
        ));
    }
    (md, csv)
}

/// For each method, the variant with the lowest mean validation RMSE over its seeds; returns the
/// picked labels and a Markdown table of every variant's validation figure (no test figures).
pub fn select_by_valid(results: &[JobResult]) -> (Vec<String>, String) {
    let mut variants: Vec<(String, String)> = Vec::new();
    for r in results {
        let key = (r.method.clone(), r.label.clone());
        if !variants.contains(&key) {
            variants.push(key);
        }
    }
    let stats: Vec<(String, String, usize, (f64, f64))> = variants
        .into_iter()
        .map(|(m, l)| {
            let v: Vec<f64> = results
                .iter()
                .filter(|r| r.label == l)
                .map(|r| r.valid_rmse)
                .collect();
            let n = v.len();
            (m, l, n, mean_std(&v))
        })
        .collect();
    let mut picked: Vec<String> = Vec::new();
    let mut methods: Vec<&String> = Vec::new();
    for (m, ..) in &stats {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    for m in methods {
        let best = stats
            .iter()
            .filter(|s| &s.0 == m)
            .min_by(|a, b| a.3 .0.total_cmp(&b.3 .0))
            .expect("a method has a variant");
        picked.push(best.1.clone());
    }
    let mut md = String::from(
        "| method | variant | seeds | mean valid RMSE | picked |\n| --- | --- | ---: | ---: | --- |\n",
    );
    for (m, l, n, (mean, std)) in &stats {
        md.push_str(&format!(
            "| {m} | {l} | {n} | {mean:.5} ± {std:.5} | {} |\n",
            if picked.contains(l) { "yes" } else { "" }
        ));
    }
    (picked, md)
}

/// Mean validation curve of each method over its seeds: (label, [(epoch, mean seconds, mean rmse)]).
fn mean_curves(results: &[JobResult]) -> Vec<Curve> {
    let agg = aggregate(results);
    agg.into_iter()
        .map(|(label, _, _)| {
            let mut by_epoch: BTreeMap<u64, (f64, f64, f64)> = BTreeMap::new();
            for r in results.iter().filter(|r| r.label == label) {
                for &(e, t, v) in &r.curve {
                    let s = by_epoch.entry(e as u64).or_insert((0.0, 0.0, 0.0));
                    s.0 += t;
                    s.1 += v;
                    s.2 += 1.0;
                }
            }
            let pts = by_epoch
                .into_iter()
                .map(|(e, (t, v, n))| (e as f64, t / n, v / n))
                .collect();
            (label, pts)
        })
        .collect()
}

/// Writes `valid_rmse_vs_epoch.svg` and `valid_rmse_vs_seconds.svg` into `out`.
pub fn plots(results: &[JobResult], out: &Path) -> Result<()> {
    use plotters::prelude::*;
    let curves = mean_curves(results);
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.2))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min);
    // Leave the first epochs' high errors out of the view so the differences show.
    let hi = all
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max)
        .min(lo * 1.06 + 1e-3);
    for (file, by_time, xlabel) in [
        ("valid_rmse_vs_epoch.svg", false, "epoch"),
        ("valid_rmse_vs_seconds.svg", true, "seconds"),
    ] {
        let path = out.join(file);
        let x_of = |p: &(f64, f64, f64)| if by_time { p.1 } else { p.0 };
        let xmax = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(x_of))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let plot_err = |e: String| Error::io(&path, std::io::Error::other(e));
        let root = SVGBackend::new(&path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("validation RMSE against {xlabel}"),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax, (lo - 0.002)..hi)
            .map_err(|e| plot_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc("validation RMSE")
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
        for (k, (label, pts)) in curves.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            let series: Vec<(f64, f64)> = pts.iter().map(|p| (x_of(p), p.2.min(hi))).collect();
            chart
                .draw_series(LineSeries::new(series, color.stroke_width(2)))
                .map_err(|e| plot_err(e.to_string()))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    Ok(())
}

/// `sslf experiment`: runs the unfinished jobs, then writes the tables and plots.
pub fn run_cli(
    path: &Path,
    output: Option<&Path>,
    backend: Option<&str>,
    quiet: bool,
) -> Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    let suite = SuiteConfig::load(path)?;
    let out = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| suite.output_dir());
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let jobs = suite.jobs(&out, backend)?;
    let done = jobs
        .iter()
        .filter(|j| j.dir.join("summary.json").exists())
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
    std::fs::write(
        out.join("experiment.json"),
        serde_json::to_string_pretty(&suite).expect("json"),
    )
    .map_err(|e| Error::io(out.join("experiment.json"), e))?;
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
        let fresh = !job.dir.join("summary.json").exists();
        if fresh {
            let key = serde_json::to_string(&job.config.data).expect("json");
            if !data_cache.contains_key(&key) {
                data_cache.insert(key.clone(), prepare(&job.config.data)?);
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
        std::fs::write(&p, &table).map_err(|e| Error::io(&p, e))?;
        print!("{table}");
        results.retain(|r| picked.contains(&r.label));
    }
    let (md, csv) = tables(&results);
    for (name, text) in [("summary.md", &md), ("summary.csv", &csv)] {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    }
    plots(&results, &out)?;
    print!("{md}");
    println!(
        "wrote {}/{{summary.md,summary.csv,valid_rmse_vs_epoch.svg,valid_rmse_vs_seconds.svg}}",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }
}
