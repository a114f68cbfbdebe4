//! Throughput measurement: the ops that dominate training, timed on every available backend with
//! warm-up and the median of repeats, against a bandwidth ceiling measured on the same device
//! with a copy kernel. Used by `sslf bench` and by the criterion benches in `benches/`.
//!
//! Figures per op: milliseconds (median), entries × rank per second (each pass over the known
//! entries counts once), and effective GB/s from a byte model of the minimum traffic:
//! - copy, dot: 8 bytes per element (one read and one write, or two reads);
//! - loss: per user 4 (offset) + 4f (own row), per entry 8 (index, rating) + 4f (the item row);
//! - evaluate: per entry 12 (user, item, rating) + 8f (both factor rows);
//! - gradient, one side: per row 4 (offset) + 8f (own row read, output row written), per entry
//!   8 (index, rating) + 4f (the other factor row);
//! - Gauss–Newton product, one side: per row 4 + 12f (own θ and v rows, output row), per entry
//!   8 + 8f (the other θ and v rows);
//! - CG iteration: one product plus 20 vector passes of θ's length (ridge, damping, two dots, three
//!   axpy-like updates).

use crate::backend::any::{self, BackendChoice};
use crate::backend::{Backend, Curvature};
use crate::config::{DataConfig, GpuConfig};
use crate::data::{synth::SynthConfig, DataStats, Matrix, Ratings};
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ModelKind};
use crate::problem::Problem;
use crate::solver::{slf::Slf, SamMode, Solver, SolverConfig, SolverKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An operation to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchOp {
    /// A device copy of a large vector: the bandwidth ceiling.
    Copy,
    /// A dot product of two θ-sized vectors.
    Dot,
    /// E(θ): the loss pass.
    Loss,
    /// Error sums of θ's predictions on the bench's entries (in user order) held as evaluation
    /// entries.
    Evaluate,
    /// The gradient (both sides).
    Gradient,
    /// The Gauss–Newton product (both sides).
    GnProduct,
    /// One CG iteration on (G + D + γI).
    CgIteration,
    /// One SLF epoch with a fixed number of CG iterations.
    SlfEpoch,
    /// One SSLF epoch (SAM in the curvature) with a fixed number of CG iterations.
    SslfEpoch,
    /// Every user's top-N (`top_n`) of a rank-`rank` LF model on the bench matrix's shape, its
    /// entries left out (CPU).
    #[serde(rename = "topn")]
    TopN,
    /// Reading the data: the file `data` names (synthetic data is first written to a temporary
    /// TSV) parsed, checked and split (`load`), and the same data from a prepared file, its
    /// staleness check included (`load_cached`). Host only.
    Load,
}

impl BenchOp {
    /// The ops run when a config names none (`load` is asked for by name).
    pub const ALL: [BenchOp; 10] = [
        BenchOp::Copy,
        BenchOp::Dot,
        BenchOp::Loss,
        BenchOp::Evaluate,
        BenchOp::Gradient,
        BenchOp::GnProduct,
        BenchOp::CgIteration,
        BenchOp::SlfEpoch,
        BenchOp::SslfEpoch,
        BenchOp::TopN,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BenchOp::Copy => "copy",
            BenchOp::Dot => "dot",
            BenchOp::Loss => "loss",
            BenchOp::Evaluate => "evaluate",
            BenchOp::Gradient => "gradient",
            BenchOp::GnProduct => "gn_product",
            BenchOp::CgIteration => "cg_iteration",
            BenchOp::SlfEpoch => "slf_epoch",
            BenchOp::SslfEpoch => "sslf_epoch",
            BenchOp::TopN => "topn",
            BenchOp::Load => "load",
        }
    }
}

/// The config of `sslf bench` (JSON, unknown fields rejected).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BenchConfig {
    pub name: Option<String>,
    /// Data source; every entry is used (no hold-out).
    pub data: DataConfig,
    pub rank: usize,
    pub biases: bool,
    /// Backends to try; a GPU that cannot be opened is reported and skipped.
    pub backends: Vec<BackendChoice>,
    pub ops: Vec<BenchOp>,
    pub warmup: usize,
    pub repeats: usize,
    /// CG iterations in the epoch ops.
    pub cg_iters: usize,
    /// Elements of the copy op's vectors.
    pub copy_elements: usize,
    pub threads: usize,
    pub cpu: crate::config::CpuConfig,
    /// Where to write the JSON table (default runs/bench-NAME.json).
    pub output: Option<PathBuf>,
    /// N of the `topn` op.
    pub top_n: usize,
    /// Where the `topn` op writes the model it times (for `benches/peers/topn_numpy.py`).
    pub topn_model: Option<PathBuf>,
    pub gpu: GpuConfig,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            name: None,
            data: DataConfig {
                synthetic: Some(SynthConfig {
                    n_users: 100_000,
                    n_items: 10_000,
                    nnz: 2_000_000,
                    rank: 10,
                    ..Default::default()
                }),
                ..Default::default()
            },
            rank: 32,
            biases: false,
            backends: vec![BackendChoice::Cpu, BackendChoice::Gpu],
            ops: BenchOp::ALL.to_vec(),
            warmup: 2,
            repeats: 7,
            cg_iters: 10,
            copy_elements: 1 << 26,
            threads: 0,
            output: None,
            top_n: 10,
            topn_model: None,
            cpu: Default::default(),
            gpu: GpuConfig::default(),
        }
    }
}

impl BenchConfig {
    /// The config at `path`, or the built-in default (named `default`) without one; `--set`
    /// overrides apply to either.
    pub fn load_or_default(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        match path {
            Some(p) => Self::load(p, overrides),
            None => {
                let mut v = serde_json::to_value(BenchConfig::default()).expect("serialises");
                for o in overrides {
                    crate::config::apply_override(&mut v, o)?;
                }
                let mut c: BenchConfig = crate::config::from_tree("--set", v)?;
                c.name.get_or_insert_with(|| "default".into());
                Ok(c)
            }
        }
    }

    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let file = path.display().to_string();
        let mut value = crate::config::read_json(path)?;
        for o in overrides {
            crate::config::apply_override(&mut value, o)?;
        }
        let mut cfg: BenchConfig = crate::config::from_tree(&file, value)?;
        if cfg.name.is_none() {
            cfg.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        if cfg.repeats == 0 || cfg.rank == 0 {
            return Err(Error::Config {
                file,
                path: "repeats".into(),
                message: "repeats and rank must be ≥ 1".into(),
            });
        }
        Ok(cfg)
    }
}

/// One row of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub op: String,
    pub backend: String,
    pub device: String,
    pub nnz: usize,
    pub rank: usize,
    /// Median over the repeats.
    pub ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Known entries × rank per second, in units of 10⁹, counting each pass over K.
    pub gentries_rank_per_s: Option<f64>,
    pub gb_per_s: Option<f64>,
    /// gb_per_s over the copy bandwidth measured on the same device.
    pub copy_fraction: Option<f64>,
    /// `topn`: users per second, the P·Qᵀ FLOP rate it implies (2·users·items·rank per second,
    /// in 10⁹), and that rate over the rate of the same GEMM tiles with no selection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflop_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gemm_fraction: Option<f64>,
}

/// A problem resident on one backend, ready to time ops on.
pub struct Workload<'b, B: Backend> {
    pub problem: Problem<'b, B>,
    pub stats: DataStats,
    theta: B::Vector,
    v: B::Vector,
    out: B::Vector,
    x: B::Vector,
    r: B::Vector,
    p: B::Vector,
    rr: f64,
    cg_iters: usize,
    copy_src: Option<B::Vector>,
    copy_dst: Option<B::Vector>,
    entries: Option<B::Entries>,
}

impl<'b, B: Backend> Workload<'b, B> {
    /// Uploads `m` and a rank-`rank` LF model (biases as asked) to `backend`.
    pub fn new(
        backend: &'b B,
        m: &Matrix,
        rank: usize,
        biases: bool,
        cg_iters: usize,
    ) -> Result<Self> {
        let model = ModelConfig {
            kind: ModelKind::Lf,
            rank,
            biases,
            ..Default::default()
        };
        let stats = DataStats::of(m);
        let layout = model.layout(m.n_users(), m.n_items(), stats.mean as f32);
        let theta0 = model.init(&layout, 1, &m.by_user.row_counts(), &m.by_item.row_counts());
        let problem = Problem::from_model(backend, m, &model, layout, Curvature::GaussNewton)?;
        let rr: f64 = theta0.iter().map(|&x| x as f64 * x as f64).sum();
        Ok(Workload {
            theta: problem.upload(&theta0)?,
            v: problem.upload(&theta0)?,
            out: problem.zeros()?,
            x: problem.zeros()?,
            r: problem.upload(&theta0)?,
            p: problem.upload(&theta0)?,
            rr,
            problem,
            stats,
            cg_iters,
            copy_src: None,
            copy_dst: None,
            entries: None,
        })
    }

    /// Allocates the copy op's vectors.
    pub fn with_copy(mut self, elements: usize) -> Result<Self> {
        let be = self.problem.backend;
        // Write both first: never-touched host pages would read as the shared zero page.
        let mut src = be.zeros(elements)?;
        let mut dst = be.zeros(elements)?;
        be.fill(&mut src, 1.0)?;
        be.fill(&mut dst, 2.0)?;
        self.copy_src = Some(src);
        self.copy_dst = Some(dst);
        Ok(self)
    }

    /// Uploads the matrix's entries, in user order, as the evaluate op's entries.
    pub fn with_entries(mut self, m: &Matrix) -> Result<Self> {
        let c = &m.by_user;
        let mut r = Ratings::with_capacity(c.nnz());
        for u in 0..c.n_rows {
            for k in c.row_range(u) {
                r.push(u as u32, c.index[k], c.values[k]);
            }
        }
        self.entries = Some(
            self.problem
                .backend
                .upload_entries(&r, &self.problem.layout)?,
        );
        Ok(self)
    }

    /// Runs one instance of `op` and waits for the device.
    pub fn run(&mut self, op: BenchOp) -> Result<()> {
        let p = &self.problem;
        let be = p.backend;
        match op {
            BenchOp::Copy => {
                let (s, d) = (
                    self.copy_src.as_ref().expect("with_copy"),
                    self.copy_dst.as_mut().expect("with_copy"),
                );
                be.copy(s, d)?;
            }
            BenchOp::Dot => {
                be.dot(&self.theta, &self.v)?;
            }
            BenchOp::Loss => {
                p.loss(&self.theta)?;
            }
            BenchOp::Evaluate => {
                let e = self.entries.as_ref().expect("with_entries");
                be.evaluate(e, &p.layout, &self.theta, (f32::MIN, f32::MAX))?;
            }
            BenchOp::Gradient => {
                p.gradient(&self.theta, &mut self.out)?;
            }
            BenchOp::GnProduct => {
                be.curvature_product(
                    &p.matrix,
                    &p.layout,
                    &self.theta,
                    &self.v,
                    &mut self.out,
                    Curvature::GaussNewton,
                )?;
            }
            BenchOp::CgIteration => {
                // Ap = (G + D)p + γp (γ = 1); α = rr/pAp; x += αp; r −= αAp; p = r + βp.
                p.curvature_product(&self.theta, &self.p, &mut self.out)?;
                be.axpy(1.0, &self.p, &mut self.out)?;
                let pap = be.dot(&self.p, &self.out)?;
                let alpha = (self.rr / pap) as f32;
                be.axpy(alpha, &self.p, &mut self.x)?;
                be.axpy(-alpha, &self.out, &mut self.r)?;
                let rr = be.dot(&self.r, &self.r)?;
                be.xpby(&self.r, (rr / self.rr) as f32, &mut self.p)?;
                self.rr = rr;
            }
            BenchOp::TopN | BenchOp::Load => {
                return Err(Error::Unsupported(format!(
                    "{} is not a backend op; bench::bench_{} times it",
                    op.name(),
                    op.name()
                )))
            }
            BenchOp::SlfEpoch | BenchOp::SslfEpoch => {
                let cfg = SolverConfig {
                    name: if op == BenchOp::SlfEpoch {
                        SolverKind::Slf
                    } else {
                        SolverKind::Sslf
                    },
                    sam: SamMode::Curvature,
                    cg_iters: self.cg_iters,
                    cg_tol: 1e-12,
                    forcing: crate::solver::Forcing::Fixed,
                    ..Default::default()
                };
                let mut s = Slf::new(&cfg, p)?;
                let mut th = p.zeros()?;
                be.copy(&self.theta, &mut th)?;
                s.next_iter(p, &mut th)?;
            }
        }
        be.sync()
    }

    /// Passes over the known entries made by one instance of `op`.
    pub fn passes(&mut self, op: BenchOp) -> Result<u64> {
        let before = self.problem.counters().passes;
        match op {
            BenchOp::Copy | BenchOp::Dot => return Ok(0),
            BenchOp::Evaluate => return Ok(1),
            BenchOp::GnProduct => return Ok(2),
            _ => self.run(op)?,
        }
        Ok(self.problem.counters().passes - before)
    }

    /// Bytes of the op's byte model (see the module docs), or None for epochs.
    pub fn bytes(&self, op: BenchOp) -> Option<f64> {
        let l = &self.problem.layout;
        let f = l.rank as f64;
        let rows = (l.n_users + l.n_items) as f64;
        let nnz = self.stats.nnz as f64;
        let vec = 4.0 * l.len() as f64;
        let gn = rows * (4.0 + 12.0 * f) + 2.0 * nnz * (8.0 + 8.0 * f);
        match op {
            BenchOp::Copy => self
                .copy_src
                .as_ref()
                .map(|s| 8.0 * self.problem.backend.vec_len(s) as f64),
            BenchOp::Dot => Some(2.0 * vec),
            BenchOp::Loss => Some(l.n_users as f64 * (4.0 + 4.0 * f) + nnz * (8.0 + 4.0 * f)),
            BenchOp::Evaluate => Some(nnz * (12.0 + 8.0 * f)),
            BenchOp::Gradient => Some(rows * (4.0 + 8.0 * f) + 2.0 * nnz * (8.0 + 4.0 * f)),
            BenchOp::GnProduct => Some(gn),
            BenchOp::CgIteration => Some(gn + 20.0 * vec),
            BenchOp::SlfEpoch | BenchOp::SslfEpoch | BenchOp::TopN | BenchOp::Load => None,
        }
    }
}

/// Runs `f` `warmup` times untimed, then `repeats` times timed; returns (median, min, max) in ms.
pub fn time_runs(
    warmup: usize,
    repeats: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, f64, f64)> {
    for _ in 0..warmup {
        f()?;
    }
    let mut t = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok((t[t.len() / 2], t[0], t[t.len() - 1]))
}

/// Times `op` on `w` (see [`time_runs`]).
pub fn time_op<B: Backend>(
    w: &mut Workload<B>,
    op: BenchOp,
    warmup: usize,
    repeats: usize,
) -> Result<(f64, f64, f64)> {
    time_runs(warmup, repeats, || w.run(op))
}

fn bench_backend<B: Backend>(
    b: &B,
    m: &Matrix,
    cfg: &BenchConfig,
    say: &dyn Fn(&str),
) -> Result<Vec<BenchRow>> {
    let info = b.info();
    let mut w = Workload::new(b, m, cfg.rank, cfg.biases, cfg.cg_iters)?;
    if cfg.ops.contains(&BenchOp::Copy) {
        w = w.with_copy(cfg.copy_elements)?;
    }
    if cfg.ops.contains(&BenchOp::Evaluate) {
        w = w.with_entries(m)?;
    }
    let mut rows = Vec::new();
    let mut copy_gbps = None;
    for &op in cfg
        .ops
        .iter()
        .filter(|&&o| o != BenchOp::TopN && o != BenchOp::Load)
    {
        say(&format!("  {} on {} …", op.name(), info.backend));
        let (ms, min_ms, max_ms) = time_op(&mut w, op, cfg.warmup, cfg.repeats)?;
        let passes = w.passes(op)?;
        let gb = w.bytes(op).map(|bytes| bytes / (ms * 1e-3) / 1e9);
        if op == BenchOp::Copy {
            copy_gbps = gb;
        }
        rows.push(BenchRow {
            op: op.name().into(),
            backend: info.backend.clone(),
            device: info.name.clone(),
            nnz: w.stats.nnz,
            rank: cfg.rank,
            ms,
            min_ms,
            max_ms,
            gentries_rank_per_s: (passes > 0)
                .then(|| passes as f64 * w.stats.nnz as f64 * cfg.rank as f64 / (ms * 1e-3) / 1e9),
            gb_per_s: gb,
            copy_fraction: None,
            users_per_s: None,
            gflop_per_s: None,
            gemm_fraction: None,
        });
    }
    if let Some(c) = copy_gbps {
        for r in rows.iter_mut() {
            r.copy_fraction = r.gb_per_s.map(|g| g / c);
        }
    }
    Ok(rows)
}

/// The `topn` op: a rank-`rank` LF model with seeded random factors and biases on the shape of
/// `m`, whose entries are the users' seen items; every user's top `top_n` on the CPU, against the
/// same GEMM tiles with no selection.
pub fn bench_topn(m: &Matrix, cfg: &BenchConfig, say: &dyn Fn(&str)) -> Result<BenchRow> {
    use crate::model::file::ModelFile;
    use crate::model::Layout;
    use rand::{Rng, SeedableRng};
    let layout = Layout {
        kind: ModelKind::Lf,
        n_users: m.n_users(),
        n_items: m.n_items(),
        rank: cfg.rank,
        biases: true,
        mu: 3.5,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let scale = 1.0 / (cfg.rank as f32).sqrt();
    let theta: Vec<f32> = (0..layout.len())
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect();
    let model = ModelFile {
        layout,
        theta,
        users: crate::data::IdMap::identity(m.n_users()),
        items: crate::data::IdMap::identity(m.n_items()),
        clip: (1.0, 5.0),
        config: "{}".into(),
        seen: Some((m.by_user.ptr.clone(), m.by_user.index.clone())),
    };
    if let Some(p) = &cfg.topn_model {
        model.save(p)?;
        say(&format!("bench: topn model written to {}", p.display()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| Error::Device(format!("cannot start the CPU thread pool: {e}")))?;
    let users: Vec<u32> = (0..m.n_users() as u32).collect();
    let time = |f: &(dyn Fn() + Sync)| {
        time_runs(cfg.warmup, cfg.repeats, || {
            pool.install(f);
            Ok(())
        })
    };
    say("  topn on cpu …");
    let (ms, min_ms, max_ms) = time(&|| {
        let mut kept = 0usize;
        model
            .recommend_all(&users, cfg.top_n, |_, l| {
                kept += l.len();
                Ok(())
            })
            .expect("users are in range");
        std::hint::black_box(kept);
    })?;
    say("  topn's GEMM alone on cpu …");
    let (gemm_ms, ..) = time(&|| {
        std::hint::black_box(model.score_pass(&users));
    })?;
    let flop = 2.0 * m.n_users() as f64 * m.n_items() as f64 * cfg.rank as f64;
    Ok(BenchRow {
        op: BenchOp::TopN.name().into(),
        backend: "cpu".into(),
        device: format!("host ({} threads)", pool.current_num_threads()),
        nnz: m.nnz(),
        rank: cfg.rank,
        ms,
        min_ms,
        max_ms,
        gentries_rank_per_s: None,
        gb_per_s: None,
        copy_fraction: None,
        users_per_s: Some(m.n_users() as f64 / (ms * 1e-3)),
        gflop_per_s: Some(flop / (ms * 1e-3) / 1e9),
        gemm_fraction: Some(gemm_ms / ms),
    })
}

/// The `load` op (see [`BenchOp::Load`]): two rows, `load` and `load_cached`, whose `gb_per_s`
/// is the text read per second.
pub fn bench_load(cfg: &BenchConfig, say: &dyn Fn(&str)) -> Result<Vec<BenchRow>> {
    use crate::experiment::cache::{self, CacheKey, Cached};
    use crate::experiment::data::{build, data_files, LoadHooks};
    let dir = std::env::temp_dir().join(format!("sslf-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let mut data_cfg = DataConfig {
        cache: false,
        prepared: None,
        ..cfg.data.clone()
    };
    if data_files(&data_cfg).is_empty() {
        let s = data_cfg.synthetic.take().unwrap_or_default();
        let ds = crate::data::synth::generate(&s);
        let file = dir.join("synthetic.tsv");
        say(&format!(
            "bench: writing the synthetic data to {} …",
            file.display()
        ));
        crate::data::read::write_tsv(&file, &ds.ratings, &ds.users, &ds.items)?;
        data_cfg.path = Some(file);
    }
    let mut bytes = 0u64;
    for f in data_files(&data_cfg) {
        bytes += std::fs::metadata(&f).map_err(|e| Error::io(&f, e))?.len();
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| Error::Device(format!("cannot start the CPU thread pool: {e}")))?;
    say("  load (parse, ids, duplicates, split) …");
    let mut last = None;
    let (ms, min_ms, max_ms) = time_runs(cfg.warmup, cfg.repeats, || {
        last = Some(pool.install(|| build(&data_cfg, &LoadHooks::quiet()))?);
        Ok(())
    })?;
    let data = last.expect("at least one run");
    let nnz = data.train.nnz() + data.valid.nnz() + data.test.nnz();
    let file = dir.join("prepared.safetensors");
    cache::write(&file, &data, &CacheKey::of(&data_cfg)?)?;
    drop(data);
    say("  load_cached (fingerprints, prepared file) …");
    let (c_ms, c_min, c_max) = time_runs(cfg.warmup, cfg.repeats, || {
        let key = pool.install(|| CacheKey::of(&data_cfg))?;
        match cache::read(&file, &key)? {
            Cached::Fresh(p) => {
                std::hint::black_box(p);
                Ok(())
            }
            other => Err(Error::Model {
                file: file.clone(),
                message: format!("the prepared file just written reads as {other:?}"),
            }),
        }
    })?;
    let device = format!("host ({} threads)", pool.current_num_threads());
    let row = |op: &str, ms: f64, min_ms: f64, max_ms: f64| BenchRow {
        op: op.into(),
        backend: "cpu".into(),
        device: device.clone(),
        nnz,
        rank: 0,
        ms,
        min_ms,
        max_ms,
        gentries_rank_per_s: None,
        gb_per_s: Some(bytes as f64 / (ms * 1e-3) / 1e9),
        copy_fraction: None,
        users_per_s: None,
        gflop_per_s: None,
        gemm_fraction: None,
    };
    Ok(vec![
        row("load", ms, min_ms, max_ms),
        row("load_cached", c_ms, c_min, c_max),
    ])
}

/// Runs the benchmark; `say` receives progress lines.
pub fn run(cfg: &BenchConfig, say: &dyn Fn(&str)) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    if cfg.ops.contains(&BenchOp::Load) {
        rows.extend(bench_load(cfg, say)?);
        if cfg.ops.iter().all(|&o| o == BenchOp::Load) {
            return Ok(rows);
        }
    }
    let data_cfg = DataConfig {
        test_fraction: 0.0,
        validation_fraction: 0.0,
        ..cfg.data.clone()
    };
    say("bench: preparing data …");
    let hooks = crate::experiment::data::LoadHooks {
        say,
        progress: None,
        fingerprints: None,
    };
    let data = crate::experiment::data::prepare_with(&data_cfg, &hooks)?;
    let m = Matrix::from_ratings(&data.train, data.n_users(), data.n_items());
    say(&format!(
        "bench: {} | {} users × {} items, {} entries, rank {}",
        data.source,
        m.n_users(),
        m.n_items(),
        m.nnz(),
        cfg.rank
    ));
    drop(data);
    let mut benched: Vec<String> = Vec::new();
    for &choice in &cfg.backends {
        let opened = any::open(
            choice,
            &cfg.cpu.options(cfg.threads),
            &(&cfg.gpu).into(),
            &|s| say(s),
        );
        let backend = match opened {
            Ok(b) => b,
            // An explicit `gpu` that cannot be opened is reported and skipped, so a CPU-only
            // machine still gets its CPU rows.
            Err(e) if choice == BackendChoice::Gpu => {
                say(&format!("bench: gpu skipped: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let info = backend.info();
        let key = format!("{}/{}", info.backend, info.name);
        if benched.contains(&key) {
            say(&format!("bench: {key} already measured; not repeated"));
            continue;
        }
        benched.push(key);
        rows.extend(crate::with_backend!(&backend, b => bench_backend(b, &m, cfg, say))?);
    }
    if cfg.ops.contains(&BenchOp::TopN) {
        rows.push(bench_topn(&m, cfg, say)?);
    }
    Ok(rows)
}

/// The result table as fixed-width text.
pub fn format_table(rows: &[BenchRow]) -> String {
    let opt =
        |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "{:<13} {:<7} {:<34} {:>10} {:>5} {:>10} {:>15} {:>9} {:>9}\n",
        "op", "backend", "device", "nnz", "rank", "ms", "Gentries·rank/s", "GB/s", "of copy"
    );
    for r in rows {
        let dev: String = r.device.chars().take(34).collect();
        s.push_str(&format!(
            "{:<13} {:<7} {:<34} {:>10} {:>5} {:>10.3} {:>15} {:>9} {:>9}\n",
            r.op,
            r.backend,
            dev,
            r.nnz,
            r.rank,
            r.ms,
            opt(r.gentries_rank_per_s, 3),
            opt(r.gb_per_s, 2),
            r.copy_fraction
                .map(|f| format!("{:.0}%", 100.0 * f))
                .unwrap_or_else(|| "-".into()),
        ));
        if let (Some(u), Some(g), Some(q)) = (r.users_per_s, r.gflop_per_s, r.gemm_fraction) {
            s.push_str(&format!(
                "{:<13} {u:.0} users/s, P·Qᵀ at {g:.1} GFLOP/s, {:.0}% of the GEMM-only rate; \
                 ms min {:.1} max {:.1}\n",
                "",
                100.0 * q,
                r.min_ms,
                r.max_ms
            ));
        }
    }
    s
}
