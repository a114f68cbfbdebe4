//! One training run, end to end: data → device → solver loop with validation and early stopping →
//! test metrics at the best-validation epoch → summary (and the model, when asked).

pub mod cache;
pub mod checkpoint;
pub mod data;
pub mod observe;
pub mod output;
pub mod ranges;
pub mod report;
pub mod suite;

use crate::backend::{Backend, DeviceInfo, EvalSums};
use crate::comm::Comm;
use crate::config::TrainConfig;
use crate::data::{DataStats, Matrix};
use crate::error::{Error, Result};
use crate::model::rank::{rank_report, RankReport};
use crate::model::{Layout, ModelKind};
use crate::problem::Problem;
use crate::solver::{adam::Adam, gd::Gd, sgd::Sgd, slf::Slf, Solver, SolverKind};
use checkpoint::{Checkpoint, CheckpointMeta};
use data::Prepared;
use observe::Observer;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// `train.max_epochs` epochs ran.
    MaxIters,
    /// No validation gain for `train.patience` epochs (before the first gain, rejected LM steps
    /// do not count), or `train.max_rejected` rejected steps in a row after it.
    Converged,
    /// The loss became NaN or infinite; the best earlier epoch is reported.
    Diverged,
    /// A stop was requested ([`request_stop`], the CLI's Ctrl-C); the epoch in progress finished
    /// and the best epoch so far is reported.
    Interrupted,
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every training loop in the process to stop after its current epoch. Signals are
/// process-wide, so this is a process-wide flag; the CLI sets it on the first Ctrl-C.
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// One line of the learning curve (`metrics.jsonl`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Training objective E (see `IterReport::loss`); epoch 0 is the initial point.
    #[serde(deserialize_with = "output::f64_or_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "output::f64_or_nan")]
    pub grad_norm: f64,
    pub valid_rmse: Option<f64>,
    pub valid_mae: Option<f64>,
    pub cg_iters: usize,
    pub hvp_count: u64,
    pub passes: u64,
    pub damping: Option<f64>,
    pub accepted: bool,
    pub elapsed_s: f64,
}

/// Test metrics at one parameter vector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub count: u64,
    pub rmse: f64,
    pub mae: f64,
    pub rmse_clipped: f64,
    pub mae_clipped: f64,
}

impl From<EvalSums> for Metrics {
    fn from(s: EvalSums) -> Self {
        Metrics {
            count: s.count,
            rmse: s.rmse(),
            mae: s.mae(),
            rmse_clipped: s.rmse_clipped(),
            mae_clipped: s.mae_clipped(),
        }
    }
}

/// The result of a run (`summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub name: String,
    pub solver: String,
    pub model: ModelKind,
    pub rank: usize,
    pub seed: u64,
    pub device: DeviceInfo,
    /// Processes that trained the model (under mpirun; 1 otherwise).
    #[serde(default = "one")]
    pub processes: usize,
    /// What each process ran on, in rank order (one entry per process).
    #[serde(default)]
    pub devices: Vec<DeviceInfo>,
    pub data_source: String,
    pub train_stats: DataStats,
    pub n_valid: usize,
    pub n_test: usize,
    /// Test entries whose user or item has no training entry: their factors stay 0, so they are
    /// predicted from the global mean and the known bias.
    pub cold_test_entries: usize,
    pub stop: Stop,
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_valid_rmse: Option<f64>,
    pub best_valid_mae: Option<f64>,
    /// Test metrics at the best-validation epoch (absent without a test set).
    pub test: Option<Metrics>,
    pub passes_to_best: u64,
    pub seconds_to_best: f64,
    pub total_seconds: f64,
    pub seconds_per_epoch: f64,
    /// Training objective at the last epoch (null in JSON when it is not finite).
    #[serde(deserialize_with = "output::f64_or_nan")]
    pub final_loss: f64,
    /// Spectrum of the learned factor product (P·Qᵀ or U·diag(d)·Vᵀ).
    pub rank_report: RankReport,
    /// With `train.refit`: the retraining on train + validation whose model `test` describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refit: Option<RefitReport>,
}

fn one() -> usize {
    1
}

/// The refit run of `train.refit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefitReport {
    /// Epochs run: the selection run's best epoch.
    pub epochs: usize,
    /// Training entries (train + validation).
    pub train_entries: usize,
    pub passes: u64,
    pub seconds: f64,
    #[serde(deserialize_with = "output::f64_or_nan")]
    pub final_loss: f64,
}

/// An observer that records nothing (the refit run).
struct Silent;

impl Observer for Silent {
    fn epoch(&mut self, _record: &EpochRecord) -> Result<()> {
        Ok(())
    }
}

/// A finished run: its summary and the parameters at the best-validation epoch.
pub struct Trained {
    pub summary: Summary,
    pub layout: Layout,
    pub theta: Vec<f32>,
    /// Rating range of the training data, for clipped predictions.
    pub clip: (f32, f32),
}

fn make_solver<'b, B: Backend + 'b>(
    cfg: &TrainConfig,
    p: &Problem<'b, B>,
    data: &Prepared,
    user_counts: &[u32],
    item_counts: &[u32],
) -> Result<Box<dyn Solver<B> + 'b>> {
    Ok(match cfg.solver.name {
        SolverKind::Slf | SolverKind::Sslf => Box::new(Slf::new(&cfg.solver, p)?),
        SolverKind::Gd => Box::new(Gd::new(&cfg.solver, p)?),
        SolverKind::Adam => Box::new(Adam::new(&cfg.solver, p)?),
        SolverKind::Sgd => {
            // SGD runs on the host: it keeps its own copy of the ridge diagonal and the entries.
            let reg = cfg.model.reg_diag(&p.layout, user_counts, item_counts);
            Box::new(Sgd::new(
                &cfg.solver,
                &p.layout,
                crate::solver::sgd::HostEntries {
                    users: data.train.users.clone(),
                    items: data.train.items.clone(),
                    values: data.train.values.clone(),
                },
                &reg,
                user_counts,
                item_counts,
                cfg.train.seed,
            ))
        }
    })
}

/// Checkpoints of one run: where, how often, and the one to continue from.
pub struct Checkpointing {
    pub path: PathBuf,
    /// Least seconds between two checkpoints (0: after every epoch). One is also written when the
    /// run stops, unless it diverged.
    pub every_secs: f64,
    pub resume: Option<Checkpoint>,
    /// Fingerprints of the data files, stored in every checkpoint.
    pub data_files: Vec<crate::fs::Fingerprint>,
}

/// Trains one model on `backend`, without checkpoints.
pub fn train<B: Backend>(
    backend: &B,
    cfg: &TrainConfig,
    data: &Prepared,
    observer: &mut dyn Observer,
) -> Result<Trained> {
    train_with(backend, cfg, data, observer, None)
}

/// Trains one model on `backend`, writing checkpoints and resuming from one as `ck` says. With
/// `train.refit`, the run selects the epoch count on the validation split without reading the
/// test split, then retrains on train + validation for that many epochs and reports the test
/// metrics of that model.
pub fn train_with<B: Backend>(
    backend: &B,
    cfg: &TrainConfig,
    data: &Prepared,
    observer: &mut dyn Observer,
    ck: Option<Checkpointing>,
) -> Result<Trained> {
    let part = Part::whole(data);
    train_on(backend, &part, cfg, data, observer, ck)
}

/// Which users this process trains, and with which processes: `data` then holds the entries of
/// `users` only (with the ids of the whole data), and every process of `comm` calls
/// [`train_on`] with its own part. The ranks' ranges follow one another in rank order from 0.
#[derive(Clone)]
pub struct Part<'c> {
    pub comm: &'c dyn Comm,
    pub users: std::ops::Range<usize>,
}

impl Part<'static> {
    /// The whole data in one process.
    pub fn whole(data: &Prepared) -> Self {
        Part {
            comm: &crate::comm::SINGLE,
            users: 0..data.n_users(),
        }
    }
}

impl Part<'_> {
    fn sharded(&self) -> bool {
        self.comm.size() > 1
    }
}

/// [`train_with`] for this process's `part` of a run across processes (see [`Part`]). Every
/// process returns the same [`Trained`]; rank 0 is the one to write it.
pub fn train_on<B: Backend>(
    backend: &B,
    part: &Part,
    cfg: &TrainConfig,
    data: &Prepared,
    observer: &mut dyn Observer,
    ck: Option<Checkpointing>,
) -> Result<Trained> {
    if part.sharded() && cfg.solver.name == SolverKind::Sgd {
        crate::comm::single_process_only(part.comm, "sgd (host-side and sequential)")?;
    }
    let mut ck = ck;
    if let Some(r) = ck.as_mut().and_then(|c| c.resume.as_mut()) {
        let layout = cfg.model.layout(part.users.len(), data.n_items(), 0.0);
        checkpoint::restore_shared_rows(part.comm, &layout, r)?;
    }
    if !cfg.train.refit {
        return train_once(backend, part, cfg, data, observer, ck);
    }
    let selection_data = Prepared {
        test: crate::data::Ratings::default(),
        ..data.clone()
    };
    let sel = train_once(backend, part, cfg, &selection_data, observer, ck)?;
    if sel.summary.stop == Stop::Interrupted || sel.summary.stop == Stop::Diverged {
        return Ok(sel);
    }
    let mut rc = cfg.clone();
    rc.train.refit = false;
    rc.train.max_epochs = sel.summary.best_epoch;
    rc.train.patience = usize::MAX;
    rc.train.max_rejected = 0;
    rc.train.min_delta = 0.0;
    let mut all = data.clone();
    for k in 0..data.valid.nnz() {
        all.train.push(
            data.valid.users[k],
            data.valid.items[k],
            data.valid.values[k],
        );
    }
    all.valid = crate::data::Ratings::default();
    let refit = train_once(backend, part, &rc, &all, &mut Silent, None)?;
    let mut summary = sel.summary;
    summary.refit = Some(RefitReport {
        epochs: refit.summary.epochs,
        train_entries: all.train.nnz(),
        passes: refit.summary.passes_to_best,
        seconds: refit.summary.total_seconds,
        final_loss: refit.summary.final_loss,
    });
    summary.total_seconds += refit.summary.total_seconds;
    summary.test = refit.summary.test;
    summary.cold_test_entries = refit.summary.cold_test_entries;
    summary.n_test = refit.summary.n_test;
    summary.rank_report = refit.summary.rank_report;
    Ok(Trained {
        summary,
        layout: refit.layout,
        theta: refit.theta,
        clip: refit.clip,
    })
}

/// A run on the device, ready for its first epoch (or to continue a checkpoint's).
struct Run<'b, B: Backend> {
    problem: Problem<'b, B>,
    solver: Box<dyn Solver<B> + 'b>,
    valid: Option<B::Entries>,
    test: Option<B::Entries>,
    stats: DataStats,
    clip: (f32, f32),
    theta: B::Vector,
    /// θ at the best-validation epoch so far.
    best: B::Vector,
    start: Instant,
    /// Seconds spent before a resumption.
    offset: f64,
    /// Training entries of this process's users (local index) and of every item (whole data).
    counts: (Vec<u32>, Vec<u32>),
}

/// Where the loop stands after an epoch: what a checkpoint keeps besides θ and the solver.
struct Progress {
    last: EpochRecord,
    best: EpochRecord,
    since_best: usize,
    rejected_run: usize,
    stop: Stop,
}

fn train_once<'b, B: Backend>(
    backend: &'b B,
    part: &Part<'b>,
    cfg: &TrainConfig,
    data: &Prepared,
    observer: &mut dyn Observer,
    ck: Option<Checkpointing>,
) -> Result<Trained> {
    let mut run = build(
        backend,
        part,
        cfg,
        data,
        ck.as_ref().and_then(|c| c.resume.as_ref()),
    )?;
    let progress = run_epochs(&mut run, cfg, observer, ck.as_ref())?;
    finish(run, part, cfg, data, progress, observer)
}

/// What the processes of a sharded run agree on about the whole training data.
struct Whole {
    layout: Layout,
    stats: DataStats,
    item_counts: Vec<u32>,
}

impl Whole {
    fn of(part: &Part, cfg: &TrainConfig, data: &Prepared, local: &Matrix) -> Result<Whole> {
        let comm = part.comm;
        let (n_users, n_items) = (data.n_users(), data.n_items());
        let mut ci: Vec<f64> = local
            .by_item
            .row_counts()
            .iter()
            .map(|&c| c as f64)
            .collect();
        let sum: f64 = data.train.values.iter().map(|&v| v as f64).sum();
        ci.push(sum);
        comm.sum_f64(&mut ci)?;
        let sum = ci.pop().expect("pushed above");
        let item_counts: Vec<u32> = ci.iter().map(|&c| c as u32).collect();
        let nnz: u64 = item_counts.iter().map(|&c| c as u64).sum();
        let ls = DataStats::of(local);
        let all = crate::comm::all_gather_f64(
            comm,
            &[ls.min as f64, ls.max as f64, ls.max_user_degree as f64],
        )?;
        let fold =
            |k: usize, f: fn(f64, f64) -> f64, init: f64| all.iter().map(|v| v[k]).fold(init, f);
        let mean = if nnz == 0 { 0.0 } else { sum / nnz as f64 };
        let stats = DataStats {
            n_users,
            n_items,
            nnz: nnz as usize,
            density: nnz as f64 / (n_users as f64 * n_items as f64).max(1.0),
            mean,
            min: fold(0, f64::min, f64::INFINITY) as f32,
            max: fold(1, f64::max, f64::NEG_INFINITY) as f32,
            max_user_degree: fold(2, f64::max, 0.0) as usize,
            max_item_degree: item_counts.iter().copied().max().unwrap_or(0) as usize,
        };
        Ok(Whole {
            layout: cfg.model.layout(n_users, n_items, mean as f32),
            stats,
            item_counts,
        })
    }
}

/// `r` with its users renumbered from `lo` (this process's first user).
fn local_users(r: &crate::data::Ratings, lo: usize) -> crate::data::Ratings {
    let mut out = r.clone();
    for u in out.users.iter_mut() {
        *u -= lo as u32;
    }
    out
}

/// The whole-model θ from every process's slice: each process sends its user rows (factors,
/// then biases); the ranks' users follow one another in rank order.
fn gather_theta(
    comm: &dyn Comm,
    whole: &Layout,
    local: &Layout,
    theta: &[f32],
) -> Result<Vec<f32>> {
    let f = whole.rank;
    let per_user = f + whole.has_biases() as usize;
    let mine = checkpoint::rows_in(local.user_ranges(), theta);
    let mut out = vec![0f32; whole.len()];
    for (w, l) in whole.shared_ranges().into_iter().zip(local.shared_ranges()) {
        out[w].copy_from_slice(&theta[l]);
    }
    let mut lo = 0;
    for vals in crate::comm::all_gather_pod(comm, &mine)? {
        let n = vals.len() / per_user;
        out[lo * f..(lo + n) * f].copy_from_slice(&vals[..n * f]);
        if whole.has_biases() {
            out[whole.b_off() + lo..whole.b_off() + lo + n].copy_from_slice(&vals[n * f..]);
        }
        lo += n;
    }
    Ok(out)
}

/// Uploads the data and the initial (or resumed) θ and makes the solver.
fn build<'b, B: Backend>(
    backend: &'b B,
    part: &Part<'b>,
    cfg: &TrainConfig,
    data: &Prepared,
    resume: Option<&Checkpoint>,
) -> Result<Run<'b, B>> {
    let start = Instant::now();
    let (n_users, n_items) = (data.n_users(), data.n_items());
    let lo = part.users.start;
    let shard = part
        .sharded()
        .then(|| {
            let local =
                Matrix::from_ratings(&local_users(&data.train, lo), part.users.len(), n_items);
            Whole::of(part, cfg, data, &local).map(|w| (w, local))
        })
        .transpose()?;
    let nnz = shard
        .as_ref()
        .map_or(data.train.nnz(), |(w, _)| w.stats.nnz);
    if nnz == 0 {
        return Err(Error::Unsupported("the training set is empty".into()));
    }
    let (layout, whole, matrix, stats, item_counts) = match shard {
        None => {
            let layout = cfg.model.layout(n_users, n_items, data.train.mean() as f32);
            let matrix = Matrix::from_ratings(&data.train, n_users, n_items);
            let stats = DataStats::of(&matrix);
            let ci = matrix.by_item.row_counts();
            (layout, None, matrix, stats, ci)
        }
        Some((w, local)) => {
            let layout = Layout {
                n_users: part.users.len(),
                ..w.layout
            };
            let (stats, ci) = (w.stats.clone(), w.item_counts.clone());
            (layout, Some(w), local, stats, ci)
        }
    };
    let problem = Problem::from_model_counts(
        backend,
        &matrix,
        &cfg.model,
        layout,
        cfg.solver.curvature,
        &item_counts,
    )?
    .with_comm(part.comm)?;
    let cu = matrix.by_user.row_counts();
    drop(matrix);
    let upload = |r: &crate::data::Ratings| {
        let r = if lo > 0 {
            local_users(r, lo)
        } else {
            r.clone()
        };
        (r.nnz() > 0)
            .then(|| backend.upload_entries(&r, &layout))
            .transpose()
    };
    let (valid, test) = (upload(&data.valid)?, upload(&data.test)?);
    let (theta, best) = match resume {
        Some(r) => {
            if r.theta.len() != layout.len() {
                return Err(Error::Unsupported(format!(
                    "the checkpoint holds {} parameters, the model {}",
                    r.theta.len(),
                    layout.len()
                )));
            }
            (problem.upload(&r.theta)?, problem.upload(&r.best)?)
        }
        None => {
            let theta0 = match &whole {
                None => cfg.model.init(&layout, cfg.train.seed, &cu, &item_counts),
                Some(w) => cfg.model.init_part(
                    &w.layout,
                    cfg.train.seed,
                    part.users.clone(),
                    &cu,
                    &item_counts,
                ),
            };
            let mut theta = problem.upload(&theta0)?;
            problem.project(&mut theta)?;
            let mut best = problem.zeros()?;
            backend.copy(&theta, &mut best)?;
            (theta, best)
        }
    };
    let mut solver = make_solver(cfg, &problem, data, &cu, &item_counts)?;
    if let Some(r) = resume {
        solver.load_state(&problem, &r.solver)?;
        problem.set_counters(r.meta.counters);
    }
    Ok(Run {
        problem,
        solver,
        valid,
        test,
        clip: (stats.min, stats.max),
        stats,
        theta,
        best,
        start,
        offset: resume.map_or(0.0, |r| r.meta.last.elapsed_s),
        counts: (cu, item_counts),
    })
}

/// The epochs: a solver step, validation, early stopping and checkpoints, until a stop rule fires.
fn run_epochs<B: Backend>(
    run: &mut Run<'_, B>,
    cfg: &TrainConfig,
    observer: &mut dyn Observer,
    ck: Option<&Checkpointing>,
) -> Result<Progress> {
    let resume = ck.and_then(|c| c.resume.as_ref());
    let (problem, backend) = (&run.problem, run.problem.backend);
    let (clip, valid) = (run.clip, &run.valid);
    let eval_valid = |theta: &B::Vector| -> Result<Option<EvalSums>> {
        valid
            .as_ref()
            .map(|v| problem.evaluate(v, theta, clip))
            .transpose()
    };
    let mut last_saved = Instant::now();
    observer.start(cfg.name(), cfg.train.max_epochs)?;
    let mut pr = match resume {
        Some(r) => Progress {
            last: r.meta.last.clone(),
            best: r.meta.best.clone(),
            since_best: r.meta.since_best,
            rejected_run: r.meta.rejected_run,
            stop: Stop::MaxIters,
        },
        None => {
            let v0 = eval_valid(&run.theta)?;
            let loss0 = problem.loss(&run.theta)?;
            if !loss0.is_finite() || v0.is_some_and(|s| !s.sse.is_finite()) {
                return Err(Error::Input(format!(
                    "{}: the loss at the initial point is {loss0}, not finite; nothing was \
                     trained or written (lower model.init_scale, or check the ratings' range)",
                    cfg.name()
                )));
            }
            let record = EpochRecord {
                epoch: 0,
                loss: loss0,
                grad_norm: 0.0,
                valid_rmse: v0.map(|s| s.rmse()),
                valid_mae: v0.map(|s| s.mae()),
                cg_iters: 0,
                hvp_count: 0,
                passes: problem.counters().passes,
                damping: None,
                accepted: true,
                elapsed_s: run.start.elapsed().as_secs_f64(),
            };
            observer.epoch(&record)?;
            Progress {
                last: record.clone(),
                best: record,
                since_best: 0,
                rejected_run: 0,
                stop: Stop::MaxIters,
            }
        }
    };
    for epoch in pr.last.epoch + 1..=cfg.train.max_epochs {
        let rep = run.solver.next_iter(problem, &mut run.theta)?;
        let v = eval_valid(&run.theta)?;
        let c = problem.counters();
        pr.last = EpochRecord {
            epoch,
            loss: rep.loss,
            grad_norm: rep.grad_norm,
            valid_rmse: v.map(|s| s.rmse()),
            valid_mae: v.map(|s| s.mae()),
            cg_iters: rep.cg_iters,
            hvp_count: c.products,
            passes: c.passes,
            damping: rep.damping,
            accepted: rep.accepted,
            elapsed_s: run.offset + run.start.elapsed().as_secs_f64(),
        };
        observer.epoch(&pr.last)?;
        let finite = rep.loss.is_finite() && v.is_none_or(|s| s.sse.is_finite());
        if !finite {
            pr.stop = Stop::Diverged;
            break;
        }
        let improved = match (pr.last.valid_rmse, pr.best.valid_rmse) {
            (Some(now), Some(b)) => now < b - cfg.train.min_delta,
            _ => pr.last.loss < pr.best.loss - cfg.train.min_delta * pr.best.loss.abs(),
        };
        let mut ends = None;
        if improved {
            backend.copy(&run.theta, &mut run.best)?;
            pr.best = pr.last.clone();
            pr.since_best = 0;
        } else if rep.accepted || pr.best.epoch > 0 {
            // Until the first gain, a rejected step (LM, while the damping adapts to a start far
            // from any minimum, such as UDV's X ≈ 0) left θ where it was and does not use up the
            // patience. After it, rejections count: near a minimum LM keeps rejecting steps
            // that gain nothing, and the run must stop.
            pr.since_best += 1;
            if pr.since_best >= cfg.train.patience {
                ends = Some(Stop::Converged);
            }
        }
        pr.rejected_run = if rep.accepted { 0 } else { pr.rejected_run + 1 };
        let max_rej = cfg.train.max_rejected;
        if ends.is_none() && max_rej > 0 && pr.best.epoch > 0 && pr.rejected_run >= max_rej {
            ends = Some(Stop::Converged);
        }
        if ends.is_none() && problem.any(stop_requested())? {
            ends = Some(Stop::Interrupted);
        }
        if let Some(c) = ck {
            let due = problem.any(last_saved.elapsed().as_secs_f64() >= c.every_secs)?;
            if due || ends.is_some() || epoch == cfg.train.max_epochs {
                Checkpoint {
                    meta: CheckpointMeta {
                        epoch,
                        last: pr.last.clone(),
                        best: pr.best.clone(),
                        since_best: pr.since_best,
                        rejected_run: pr.rejected_run,
                        counters: problem.counters(),
                        fingerprint: checkpoint::fingerprint(cfg),
                        data_files: c.data_files.clone(),
                        processes: problem.comm().map_or(1, |c| c.size()),
                    },
                    theta: backend.download(&run.theta)?,
                    best: backend.download(&run.best)?,
                    solver: run.solver.save_state(problem)?,
                }
                .own_rows_only(problem)
                .save(&c.path)?;
                last_saved = Instant::now();
            }
        }
        if let Some(s) = ends {
            pr.stop = s;
            break;
        }
    }
    Ok(pr)
}

/// Test metrics and the rank report at the best epoch, the summary, and θ brought to the host.
fn finish<B: Backend>(
    run: Run<'_, B>,
    part: &Part,
    cfg: &TrainConfig,
    data: &Prepared,
    pr: Progress,
    observer: &mut dyn Observer,
) -> Result<Trained> {
    let (backend, local) = (run.problem.backend, run.problem.layout);
    let test_metrics = run
        .test
        .as_ref()
        .map(|t| run.problem.evaluate(t, &run.best, run.clip))
        .transpose()?
        .map(Metrics::from);
    let theta_local = backend.download(&run.best)?;
    // Test entries whose user or item has no training entry (this process holds its users'
    // whole rows; the item counts are the whole data's).
    let (cu, ci) = &run.counts;
    let lo = part.users.start;
    let cold = (0..data.test.nnz())
        .filter(|&k| {
            cu[data.test.users[k] as usize - lo] == 0 || ci[data.test.items[k] as usize] == 0
        })
        .count();
    let (layout, theta_best, counts) = if part.sharded() {
        let whole = Layout {
            n_users: data.n_users(),
            ..local
        };
        let theta = gather_theta(part.comm, &whole, &local, &theta_local)?;
        let mut v = [data.valid.nnz() as f64, data.test.nnz() as f64, cold as f64];
        part.comm.sum_f64(&mut v)?;
        (whole, theta, [v[0] as usize, v[1] as usize, v[2] as usize])
    } else {
        (
            local,
            theta_local,
            [data.valid.nnz(), data.test.nnz(), cold],
        )
    };
    let devices = {
        let info = serde_json::to_vec(&backend.info()).expect("serialisable");
        part.comm
            .all_gather_bytes(&info)?
            .iter()
            .map(|b| serde_json::from_slice(b).expect("sent by a rank"))
            .collect()
    };
    let f = layout.rank;
    let (a, b) = (
        &theta_best[layout.p_off()..layout.q_off()],
        &theta_best[layout.q_off()..layout.q_off() + layout.n_items * f],
    );
    let d = (layout.kind == ModelKind::Udv).then(|| &theta_best[layout.d_off()..]);
    let rank = rank_report(a, b, d, f, cfg.model.rank_tol);
    let epochs = pr.last.epoch;
    let summary = Summary {
        name: cfg.name().to_string(),
        solver: run.solver.name(),
        model: layout.kind,
        rank: f,
        seed: cfg.train.seed,
        device: backend.info(),
        processes: part.comm.size(),
        devices,
        data_source: data.source.clone(),
        train_stats: run.stats,
        n_valid: counts[0],
        n_test: counts[1],
        cold_test_entries: counts[2],
        stop: pr.stop,
        epochs,
        best_epoch: pr.best.epoch,
        best_valid_rmse: pr.best.valid_rmse,
        best_valid_mae: pr.best.valid_mae,
        test: test_metrics,
        passes_to_best: pr.best.passes,
        seconds_to_best: pr.best.elapsed_s,
        total_seconds: run.offset + run.start.elapsed().as_secs_f64(),
        seconds_per_epoch: pr.last.elapsed_s / epochs.max(1) as f64,
        final_loss: pr.last.loss,
        rank_report: rank,
        refit: None,
    };
    observer.finish(&summary)?;
    Ok(Trained {
        summary,
        layout,
        theta: theta_best,
        clip: run.clip,
    })
}
