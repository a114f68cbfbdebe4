//! The command line: parsing, wiring and printing. No numerics live here.

pub mod progress;

use crate::backend::any::{self, AnyBackend, BackendChoice};
use crate::backend::gpu;
use crate::comm::Comm;
use crate::config::TrainConfig;
use crate::data::read::{read_file, read_pairs, write_tsv, Format};
use crate::data::synth::{generate, SynthConfig};
use crate::error::{Error, Result};
use crate::experiment::checkpoint::Checkpoint;
use crate::experiment::data::{LoadHooks, Prepared};
use crate::experiment::observe::{JsonlWriter, Observers};
use crate::experiment::output::{write_atomic, RunDir};
use crate::experiment::{self, Checkpointing, Summary};
use crate::model::file::ModelFile;
use crate::with_backend;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Second-order and sharpness-aware latent-factor training on sparse HDI data.
#[derive(Debug, Parser)]
#[command(name = "sslf", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model from a JSON config (defaults: synthetic data, LF with biases, slf, CPU).
    Train(TrainArgs),
    /// Write a synthetic data set as `user<TAB>item<TAB>rating` lines.
    Gen(GenArgs),
    /// Evaluate a saved model on a rating file (RMSE and MAE, raw and clipped).
    Eval(EvalArgs),
    /// List the wgpu adapters with their limits.
    Devices,
    /// Time the training ops on every available backend (GPU and CPU) and print a table.
    Bench(BenchArgs),
    /// Predict ratings for (user, item) pairs with a saved model, in the original ids.
    Predict(PredictArgs),
    /// Top-N items for one user, every user, a list of users, or users folded in from their
    /// ratings, leaving out the items each rated.
    Recommend(RecommendArgs),
    /// Add (or refit) users from their ratings with the items held fixed, into a new model file.
    FoldIn(FoldInArgs),
    /// Run an experiment file: several methods × seeds × a grid, with tables and plots.
    Experiment(ExperimentArgs),
    /// Read, check and split a config's data once, into a safetensors file that `train`,
    /// `experiment` and `bench` load in well under a second (`data.cache` / `data.prepared`).
    Prepare(PrepareArgs),
    /// Split a config's ratings by user into `part-{rank}.tsv` files, for `data.shards` under
    /// mpirun (balanced by entry count).
    Shard(ShardArgs),
}

#[derive(Debug, Args)]
pub struct ShardArgs {
    /// Training config whose data (`data.path`, or synthetic) is split.
    #[arg(long, short)]
    pub config: PathBuf,
    /// How many parts (one per process).
    #[arg(long)]
    pub parts: usize,
    /// Folder to write `part-0.tsv` … into (it must not hold parts already).
    #[arg(long)]
    pub out: PathBuf,
    /// Override config values: `--set data.path=ratings.tsv`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// No progress.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Training config whose `data` section is prepared (default: the defaults).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where to write (default: `data.prepared`, else `NAME.prepared.safetensors` beside the
    /// first data file).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override config values: `--set data.split_seed=7`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// No progress.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model file written by `sslf train`.
    #[arg(long, short)]
    pub model: PathBuf,
    /// File of `user item` pairs (whitespace or comma separated; further columns are ignored).
    #[arg(long, short)]
    pub pairs: PathBuf,
    /// Output file (default: standard output), `user<TAB>item<TAB>prediction` lines.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Clip predictions to the training rating range.
    #[arg(long)]
    pub clip: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["user", "all", "users", "ratings"])))]
pub struct RecommendArgs {
    /// Model file written by `sslf train`.
    #[arg(long, short)]
    pub model: PathBuf,
    /// One user, by its original id (prints a ranked table).
    #[arg(long, short)]
    pub user: Option<String>,
    /// Every user of the model.
    #[arg(long)]
    pub all: bool,
    /// A file of user ids, one per line (original ids).
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// A rating file (`user item rating`): its users are folded in (new users added, known ones
    /// refit from these ratings, items held fixed), then recommended for.
    #[arg(long)]
    pub ratings: Option<PathBuf>,
    /// How many items per user.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub top: usize,
    /// Output file of `user<TAB>item<TAB>score` lines, best first (default: standard output).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Where the lists are computed: cpu, gpu (at most 32 items per user) or auto.
    #[arg(long, value_parser = parse_backend, default_value = "cpu")]
    pub backend: BackendChoice,
}

#[derive(Debug, Args)]
pub struct FoldInArgs {
    /// Model file written by `sslf train`.
    #[arg(long, short)]
    pub model: PathBuf,
    /// A rating file (`user item rating`) of the users to fold in.
    #[arg(long, short)]
    pub ratings: PathBuf,
    /// The model file to write, with the users added.
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Experiment file (JSON).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Output folder (overrides `output`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Backend for every run: cpu, gpu or auto (overrides each run's).
    #[arg(long, value_parser = parse_backend)]
    pub backend: Option<BackendChoice>,
    /// Print only the table.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Bench config (JSON); without it, 100k users × 10k items × 2M entries at rank 32.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. `--set rank=64` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Where to write the JSON table (overrides `output`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print only the table.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Config file (JSON); without it, the built-in defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. `--set solver.rho=0.1` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Backend: cpu, gpu or auto (overrides train.backend).
    #[arg(long, value_parser = parse_backend)]
    pub backend: Option<BackendChoice>,
    /// Most epochs (overrides train.max_epochs).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub epochs: Option<usize>,
    /// Seed of the initialisation (overrides train.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder (overrides train.output).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Continue from `checkpoint.safetensors` in the output folder (same config; `--epochs` may
    /// raise the limit).
    #[arg(long)]
    pub resume: bool,
    /// Replace an earlier run in the output folder (without it, such a folder is refused).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Output file.
    #[arg(long, short)]
    pub out: PathBuf,
    #[arg(long, default_value_t = SynthConfig::default().n_users)]
    pub users: usize,
    #[arg(long, default_value_t = SynthConfig::default().n_items)]
    pub items: usize,
    /// Target number of known entries.
    #[arg(long, default_value_t = SynthConfig::default().nnz)]
    pub nnz: usize,
    /// Rank of the signal.
    #[arg(long, default_value_t = SynthConfig::default().rank)]
    pub rank: usize,
    /// Standard deviation of the noise.
    #[arg(long, default_value_t = SynthConfig::default().noise)]
    pub noise: f64,
    /// Power-law exponent of the users' degrees (0: uniform).
    #[arg(long, default_value_t = SynthConfig::default().user_exponent)]
    pub user_exponent: f64,
    /// Power-law exponent of the items' degrees (1.0: skewed, as in rating data).
    #[arg(long, default_value_t = SynthConfig::default().item_exponent)]
    pub item_exponent: f64,
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model file written by `sslf train`.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Rating file to evaluate on.
    #[arg(long, short)]
    pub data: PathBuf,
    /// Format of the rating file.
    #[arg(long, default_value = "auto")]
    pub format: String,
}

/// Opens the backend a training config asks for (see [`any::open`]).
pub fn open_backend(cfg: &TrainConfig, say: &dyn Fn(&str)) -> Result<AnyBackend> {
    any::open(
        cfg.train.backend,
        &cfg.cpu.options(cfg.train.threads),
        &(&cfg.gpu).into(),
        say,
    )
}

/// Parses the arguments and runs the command.
pub fn run(cli: Cli) -> Result<()> {
    run_with(cli, &crate::comm::SINGLE)
}

/// [`run`] as one process of `comm` (under mpirun): `train` is sharded across the processes;
/// the other commands run in one process only.
pub fn run_with(cli: Cli, comm: &dyn Comm) -> Result<()> {
    if matches!(cli.command, Command::Train(_) | Command::Experiment(_)) {
        stop_on_ctrl_c();
    }
    if !matches!(cli.command, Command::Train(_)) {
        crate::comm::single_process_only(
            comm,
            "this command (only `sslf train` runs under mpirun)",
        )?;
    }
    match cli.command {
        Command::Train(a) => train(a, comm),
        Command::Gen(a) => gen(a),
        Command::Eval(a) => eval(a),
        Command::Devices => devices(),
        Command::Bench(a) => bench(a),
        Command::Predict(a) => predict(a),
        Command::Recommend(a) => recommend(a),
        Command::FoldIn(a) => fold_in(a),
        Command::Prepare(a) => prepare_cmd(a),
        Command::Shard(a) => shard_cmd(a),
        Command::Experiment(a) => {
            crate::experiment::suite::run_cli(&a.config, a.output.as_deref(), a.backend, a.quiet)
        }
    }
}

/// First Ctrl-C: finish the epoch in progress, then write the summary, the curve and the best
/// model as usual (exit 130). Second Ctrl-C: quit at once.
fn stop_on_ctrl_c() {
    let installed = ctrlc::set_handler(|| {
        if experiment::stop_requested() {
            eprintln!("\nsslf: second interrupt: quitting without saving");
            std::process::exit(130);
        }
        eprintln!(
            "\nsslf: interrupt: finishing the current epoch, then saving the best epoch so far \
             (Ctrl-C again to quit at once)"
        );
        experiment::request_stop();
    });
    if let Err(e) = installed {
        eprintln!("sslf: warning: Ctrl-C will stop at once, without saving ({e})");
    }
}

/// Loads a config (or the defaults) with `--set` applied, then the typed flags.
pub fn load_config(a: &TrainArgs) -> Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::load(p, &a.overrides)?,
        None => {
            let mut c = TrainConfig::from_json("(defaults)", "{}", &a.overrides)?;
            c.name.get_or_insert_with(|| "default".into());
            c
        }
    };
    if let Some(b) = a.backend {
        c.train.backend = b;
    }
    if let Some(e) = a.epochs {
        c.train.max_epochs = e;
    }
    if let Some(s) = a.seed {
        c.train.seed = s;
    }
    if let Some(o) = &a.output {
        c.train.output = Some(o.clone());
    }
    Ok(c)
}

/// Parses `--backend`.
fn parse_backend(s: &str) -> std::result::Result<BackendChoice, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("`{s}` is not a backend (cpu, gpu or auto)"))
}

fn train(a: TrainArgs, comm: &dyn Comm) -> Result<()> {
    let cfg = load_config(&a)?;
    // Rank 0 prints, keeps the folder's lock and writes the run's files; every rank writes its
    // own checkpoint.
    let root = comm.is_root();
    let quiet = a.quiet || !root;
    let say = |s: &str| {
        if !quiet {
            eprintln!("{s}")
        }
    };
    let dir = RunDir::create(cfg.output_dir())?;
    // Said even with --quiet: it is about another run.
    let _lock = root.then(|| dir.lock(&|s| eprintln!("{s}"))).transpose()?;
    let inputs = crate::experiment::data::data_files(&cfg.data);
    for out in [
        dir.summary_path(),
        dir.model_path(),
        dir.metrics_path(),
        dir.checkpoint_path(),
    ] {
        refuse_overwriting_input(
            &out,
            &inputs.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        )?;
    }
    let ck_path = crate::experiment::checkpoint::path_of_rank(&dir.checkpoint_path(), comm);
    let data_files = match cfg.train.checkpoint_secs {
        Some(_) => crate::experiment::data::fingerprints_of(
            &crate::experiment::data::data_files_of_rank(&cfg.data, comm.rank(), comm.size()),
        )?,
        None => Vec::new(),
    };
    let resume = if a.resume {
        if cfg.train.checkpoint_secs.is_none() {
            return Err(Error::Unsupported(
                "--resume needs checkpoints: train.checkpoint_secs is null".into(),
            ));
        }
        if !ck_path.exists() {
            return Err(Error::Unsupported(format!(
                "--resume: there is no checkpoint at {} (train without --resume first)",
                ck_path.display()
            )));
        }
        let c = Checkpoint::load(&ck_path)?;
        c.check_processes(comm.size(), &ck_path)?;
        c.check_config(&cfg, &ck_path)?;
        c.check_data(&data_files)?;
        crate::experiment::checkpoint::check_same_epoch(comm, c.meta.epoch)?;
        say(&format!(
            "resuming after epoch {} from {}",
            c.meta.epoch,
            ck_path.display()
        ));
        Some(c)
    } else {
        let old = if root { dir.results() } else { Vec::new() };
        if !old.is_empty() {
            if !a.overwrite {
                let names: Vec<String> = old
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                return Err(Error::Config {
                    file: "command line".into(),
                    path: "--output".into(),
                    message: format!(
                        "{} holds an earlier run ({}); pass --resume to continue it, --overwrite \
                         to replace it, or choose another output folder",
                        dir.root().display(),
                        names.join(", ")
                    ),
                });
            }
            say(&format!(
                "sslf: --overwrite: removing the earlier run in {}",
                dir.root().display()
            ));
            dir.clear_results()?;
        }
        None
    };
    // Every rank waits for rank 0's checks of the folder before it writes there.
    comm.barrier()?;
    let fingerprints = (!data_files.is_empty()).then_some(&data_files[..]);
    let (data, users, load_bar) = load_part(&cfg.data, quiet, fingerprints, comm)?;
    load_bar.finish();
    let n = comm.size();
    say(&format!(
        "data: {} | {} users × {} items | train {} valid {} test {}{}",
        data.source,
        data.n_users(),
        data.n_items(),
        data.train.nnz(),
        data.valid.nnz(),
        data.test.nnz(),
        if n > 1 { " (rank 0's users)" } else { "" }
    ));
    for n in &data.notes {
        say(&format!("sslf: {n}"));
    }
    if n > 1 {
        say(&format!(
            "mpi: {n} processes; rank 0 trains users {}..{} of {}",
            users.start,
            users.end,
            data.n_users()
        ));
    }
    let backend = open_backend(&cfg, &say)?;
    let info = backend.info();
    say(&format!(
        "model: {:?} rank {} | solver: {:?} | backend: {} ({})",
        cfg.model.kind, cfg.model.rank, cfg.solver.name, info.backend, info.name
    ));
    let curve = dir.metrics_path();
    let mut jsonl = match (&resume, root) {
        (_, false) => None,
        (Some(c), true) => Some(JsonlWriter::resume(&curve, c.meta.epoch)?),
        (None, true) => Some(JsonlWriter::create(&curve)?),
    };
    let ck = cfg.train.checkpoint_secs.map(|every_secs| Checkpointing {
        path: ck_path.clone(),
        every_secs,
        resume,
        data_files,
    });
    // The CSR/CSC build and upload happen before the first epoch: shown as the load's last phase.
    let load_bar = progress::LoadBar::new(quiet);
    load_bar.show(&crate::data::ingest::Progress {
        phase: "matrix",
        bytes: 0,
        total: None,
        lines: data.train.nnz() as u64,
    });
    let mut table = progress::TablePrinter::new(quiet).after_load(load_bar);
    let mut obs = Observers(vec![&mut table]);
    if let Some(j) = jsonl.as_mut() {
        obs.0.push(j);
    }
    let part = experiment::Part { comm, users };
    let trained =
        with_backend!(&backend, b => experiment::train_on(b, &part, &cfg, &data, &mut obs, ck))?;
    if !root {
        return Ok(());
    }
    let s = &trained.summary;
    // The model before the summary: a summary marks a finished run, so it is written last.
    if cfg.train.save_model {
        dir.write_model(&trained, &data, &cfg)?;
    }
    dir.write_summary(s, &cfg)?;
    print_summary(s);
    let out = dir.root();
    println!("wrote {}", out.display());
    if s.stop == experiment::Stop::Interrupted {
        return Err(Error::Interrupted(format!(
            "stopped after epoch {}; the best epoch ({}) is saved in {}; `--resume` continues",
            s.epochs,
            s.best_epoch,
            out.display()
        )));
    }
    Ok(())
}

/// Prints the end-of-run lines.
pub fn print_summary(s: &Summary) {
    println!(
        "stop: {:?} after {} epochs in {:.2} s ({:.4} s/epoch); best epoch {} after {} passes and {:.2} s",
        s.stop, s.epochs, s.total_seconds, s.seconds_per_epoch, s.best_epoch, s.passes_to_best, s.seconds_to_best
    );
    if let (Some(r), Some(m)) = (s.best_valid_rmse, s.best_valid_mae) {
        println!("valid: rmse {r:.5} mae {m:.5} ({} entries)", s.n_valid);
    }
    if let Some(r) = &s.refit {
        println!(
            "refit: {} epochs on train + validation ({} entries), {} passes, {:.2} s; the test \
             line is the refitted model's",
            r.epochs, r.train_entries, r.passes, r.seconds
        );
    }
    if let Some(t) = &s.test {
        println!(
            "test:  rmse {:.5} mae {:.5} | clipped rmse {:.5} mae {:.5} ({} entries, {} cold)",
            t.rmse, t.mae, t.rmse_clipped, t.mae_clipped, t.count, s.cold_test_entries
        );
    }
    let sv: Vec<String> = s
        .rank_report
        .singular_values
        .iter()
        .take(8)
        .map(|x| format!("{x:.3e}"))
        .collect();
    println!(
        "rank: {} of {} at tol {:e}; σ = [{}{}]",
        s.rank_report.rank,
        s.rank,
        s.rank_report.tol,
        sv.join(", "),
        if s.rank_report.singular_values.len() > 8 {
            ", …"
        } else {
            ""
        }
    );
}

/// Loads a config's data with a progress bar (through the prepared-data cache when set).
/// The bar is left up: the caller shows the `matrix` phase on it and finishes it.
/// `fingerprints`: the data files' fingerprints when already taken.
pub fn load_data(
    cfg: &crate::config::DataConfig,
    quiet: bool,
    fingerprints: Option<&[crate::fs::Fingerprint]>,
) -> Result<(Prepared, progress::LoadBar)> {
    load_part(cfg, quiet, fingerprints, &crate::comm::SINGLE).map(|(d, _, bar)| (d, bar))
}

/// [`load_data`] for one process of `comm`: its share of the data and its users
/// ([`crate::experiment::data::prepare_part`]).
pub fn load_part(
    cfg: &crate::config::DataConfig,
    quiet: bool,
    fingerprints: Option<&[crate::fs::Fingerprint]>,
    comm: &dyn Comm,
) -> Result<(Prepared, std::ops::Range<usize>, progress::LoadBar)> {
    let bar = progress::LoadBar::new(quiet);
    let show = |p: &crate::data::ingest::Progress| bar.show(p);
    let say = |s: &str| {
        if !quiet {
            eprintln!("{s}")
        }
    };
    let hooks = LoadHooks {
        say: &say,
        progress: Some(&show),
        fingerprints,
    };
    match crate::experiment::data::prepare_part(cfg, &hooks, comm) {
        Ok((data, users)) => Ok((data, users, bar)),
        Err(e) => {
            bar.finish();
            Err(e)
        }
    }
}

fn shard_cmd(a: ShardArgs) -> Result<()> {
    let cfg = TrainConfig::load(&a.config, &a.overrides)?;
    let bar = progress::LoadBar::new(a.quiet);
    let show = |p: &crate::data::ingest::Progress| bar.show(p);
    let hooks = LoadHooks {
        say: &|_| {},
        progress: Some(&show),
        fingerprints: None,
    };
    let out = crate::experiment::data::shard(&cfg.data, a.parts, &a.out, &hooks);
    bar.finish();
    let out = out?;
    for (k, f) in out.files.iter().enumerate() {
        println!(
            "{}: {} users, {} entries",
            f.display(),
            out.users[k],
            out.entries[k]
        );
    }
    println!(
        "use them with \"data\": {{\"shards\": \"{}\"}} and mpirun -np {}",
        a.out.join("part-{rank}.tsv").display(),
        a.parts
    );
    Ok(())
}

fn prepare_cmd(a: PrepareArgs) -> Result<()> {
    let cfg = match &a.config {
        Some(p) => TrainConfig::load(p, &a.overrides)?,
        None => TrainConfig::from_json("(defaults)", "{}", &a.overrides)?,
    };
    let mut data_cfg = cfg.data.clone();
    if let Some(o) = &a.out {
        data_cfg.prepared = Some(o.clone());
    }
    let Some(out) = crate::experiment::cache::cache_path(&data_cfg).or_else(|| {
        // Neither set: beside the first data file.
        let mut c = data_cfg.clone();
        c.cache = true;
        crate::experiment::cache::cache_path(&c)
    }) else {
        return Err(Error::Config {
            file: "command line".into(),
            path: "--out".into(),
            message: "synthetic data has no file to write beside: pass --out FILE".into(),
        });
    };
    let t = std::time::Instant::now();
    let bar = progress::LoadBar::new(a.quiet);
    let show = |p: &crate::data::ingest::Progress| bar.show(p);
    let hooks = LoadHooks {
        say: &|_| {},
        progress: Some(&show),
        fingerprints: None,
    };
    // The files are hashed for the header while they are parsed.
    let (key, data) = std::thread::scope(|s| {
        let key = s.spawn(|| crate::experiment::cache::CacheKey::of(&data_cfg));
        let data = crate::experiment::data::build(&data_cfg, &hooks);
        (key.join().expect("hashing does not panic"), data)
    });
    let (key, data) = (key?, data?);
    bar.finish();
    for n in &data.notes {
        eprintln!("sslf: {n}");
    }
    crate::experiment::cache::write(&out, &data, &key)?;
    println!(
        "prepared {} entries in {:.2} s: {} users × {} items | train {} valid {} test {} | {}",
        data.train.nnz() + data.valid.nnz() + data.test.nnz(),
        t.elapsed().as_secs_f64(),
        data.n_users(),
        data.n_items(),
        data.train.nnz(),
        data.valid.nnz(),
        data.test.nnz(),
        out.display()
    );
    Ok(())
}

fn gen(a: GenArgs) -> Result<()> {
    let cfg = SynthConfig {
        n_users: a.users,
        n_items: a.items,
        nnz: a.nnz,
        rank: a.rank,
        noise: a.noise,
        user_exponent: a.user_exponent,
        item_exponent: a.item_exponent,
        seed: a.seed,
        ..Default::default()
    };
    cfg.validate().map_err(|m| Error::Config {
        file: "sslf gen".into(),
        path: "arguments".into(),
        message: m,
    })?;
    let ds = generate(&cfg);
    write_tsv(&a.out, &ds.ratings, &ds.users, &ds.items)?;
    println!(
        "wrote {} entries ({} users × {} items) to {}",
        ds.ratings.nnz(),
        cfg.n_users,
        cfg.n_items,
        a.out.display()
    );
    Ok(())
}

fn parse_format(s: &str) -> Result<Format> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| Error::Config {
        file: "command line".into(),
        path: "--format".into(),
        message: format!("unknown format `{s}` (auto, movielens, dat, csv, tsv, mtx, parquet)"),
    })
}

fn eval(a: EvalArgs) -> Result<()> {
    let model = ModelFile::load(&a.model)?;
    let ds = read_file(&a.data, parse_format(&a.format)?, model.duplicate_policy())?;
    let ev = model.evaluate(&ds);
    let s = ev.sums;
    println!(
        "{}: rmse {:.5} mae {:.5} | clipped rmse {:.5} mae {:.5} ({} entries, {} with an unknown user or item)",
        a.data.display(),
        s.rmse(),
        s.mae(),
        s.rmse_clipped(),
        s.mae_clipped(),
        s.count,
        ev.cold
    );
    Ok(())
}

fn devices() -> Result<()> {
    let adapters = gpu::list_adapters()?;
    if adapters.is_empty() {
        println!("no wgpu adapters found (install a Vulkan driver, e.g. mesa-vulkan-drivers)");
    }
    for a in adapters {
        println!("{a}");
    }
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    use crate::bench::{format_table, run, BenchConfig};
    let mut cfg = BenchConfig::load_or_default(a.config.as_deref(), &a.overrides)?;
    if let Some(j) = &a.json {
        cfg.output = Some(j.clone());
    }
    let quiet = a.quiet;
    let rows = run(&cfg, &|s: &str| {
        if !quiet {
            eprintln!("{s}")
        }
    })?;
    print!("{}", format_table(&rows));
    let out = cfg.output.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "bench-{}.json",
            cfg.name.as_deref().unwrap_or("default")
        ))
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let json = serde_json::json!({ "config": cfg, "rows": rows });
    write_atomic(
        &out,
        serde_json::to_string_pretty(&json)
            .expect("json")
            .as_bytes(),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    use std::fmt::Write as _;
    if let Some(out) = &a.out {
        refuse_overwriting_input(out, &[&a.pairs, &a.model])?;
    }
    let model = ModelFile::load(&a.model)?;
    let pairs = read_pairs(&a.pairs)?;
    let mut text = String::new();
    let mut cold = 0usize;
    for (u, i) in &pairs {
        let (du, di) = (model.users.get(u), model.items.get(i));
        cold += (du.is_none() || di.is_none()) as usize;
        let mut p = model.predict(du, di);
        if a.clip {
            p = p.clamp(model.clip.0, model.clip.1);
        }
        writeln!(text, "{u}\t{i}\t{p}").expect("writing to a String");
    }
    match &a.out {
        Some(p) => write_atomic(p, text.as_bytes())?,
        None => {
            use std::io::Write;
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes())
                .and_then(|_| o.flush())
                .map_err(|e| Error::io("(stdout)", e))?;
        }
    }
    eprintln!(
        "sslf: predicted {} pairs ({cold} with an unknown user or item, predicted from the known parts)",
        pairs.len()
    );
    Ok(())
}

/// Refuses an output path that names one of the inputs (the same file, by any spelling).
fn refuse_overwriting_input(out: &std::path::Path, inputs: &[&std::path::Path]) -> Result<()> {
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    if let Some(o) = canon(out) {
        for i in inputs {
            if canon(i).as_ref() == Some(&o) {
                return Err(Error::Config {
                    file: "command line".into(),
                    path: "--out".into(),
                    message: format!(
                        "{} is also an input; write the output elsewhere",
                        out.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

fn recommend(a: RecommendArgs) -> Result<()> {
    if let Some(out) = &a.out {
        let mut inputs = vec![a.model.as_path()];
        inputs.extend(a.users.as_deref());
        inputs.extend(a.ratings.as_deref());
        refuse_overwriting_input(out, &inputs)?;
    }
    let mut model = ModelFile::load(&a.model)?;
    if model.seen.is_none() {
        eprintln!("sslf: the model records no training items; none are left out");
    }
    if let Some(user) = &a.user {
        let u = model.users.get(user).ok_or_else(|| Error::Model {
            file: a.model.clone(),
            message: format!(
                "user `{user}` is not in the model ({} users)",
                model.users.len()
            ),
        })?;
        println!("rank\titem\tscore");
        for (k, (i, s)) in model.recommend(u, a.top).into_iter().enumerate() {
            println!("{}\t{}\t{s:.4}", k + 1, model.items.name(i));
        }
        return Ok(());
    }
    let users: Vec<u32> = if let Some(r) = &a.ratings {
        let ds = read_file(r, Format::Auto, model.duplicate_policy())?;
        let (folded, rep) = model.fold_in(&ds.ratings, &ds.users, &ds.items)?;
        say_fold_in(&rep, r);
        model = folded;
        ds.users
            .names()
            .iter()
            .map(|n| model.users.get(n).expect("folded in"))
            .collect()
    } else if let Some(f) = &a.users {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        let mut out = Vec::new();
        for (k, line) in text.lines().enumerate() {
            let id = line.trim().trim_start_matches('\u{feff}');
            if id.is_empty() || id.starts_with('#') {
                continue;
            }
            out.push(model.users.get(id).ok_or_else(|| {
                Error::data(
                    f,
                    k + 1,
                    format!(
                        "user `{}` is not in the model",
                        crate::data::read::quote(id)
                    ),
                )
            })?);
        }
        out
    } else {
        (0..model.users.len() as u32).collect()
    };
    if a.top > model.items.len() {
        eprintln!(
            "sslf: --top {} is more than the model's {} items; every unrated item is listed",
            a.top,
            model.items.len()
        );
    }
    // The CPU path runs on rayon's global pool; only a GPU needs opening.
    let gpu = match a.backend {
        BackendChoice::Cpu => None,
        choice => match any::open(choice, &Default::default(), &Default::default(), &|s| {
            eprintln!("{s}")
        })? {
            AnyBackend::Gpu(g) => Some(g),
            AnyBackend::Cpu(_) => None,
        },
    };
    let bar = progress::counter(users.len() as u64, "users");
    let mut empty = 0usize;
    let started = std::time::Instant::now();
    let mut write = |w: &mut dyn std::io::Write| -> std::io::Result<()> {
        let mut err = None;
        let each = |u: u32, list: &[(u32, f32)]| {
            if list.is_empty() {
                empty += 1;
            }
            let name = model.users.name(u);
            for &(i, s) in list {
                if let Err(e) = writeln!(w, "{name}\t{}\t{s:.6}", model.items.name(i)) {
                    err = Some(e);
                    return Err(Error::Unsupported("write failed".into()));
                }
            }
            bar.inc(1);
            Ok(())
        };
        let r = match &gpu {
            None => model.recommend_all(&users, a.top, each),
            Some(g) => g.recommend_all(&model, &users, a.top, each),
        };
        match (r, err) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(std::io::Error::other(e.to_string())),
            (Ok(()), None) => Ok(()),
        }
    };
    match &a.out {
        Some(p) => crate::fs::write_atomic_with(p, &mut write)?,
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            write(&mut w)
                .and_then(|_| std::io::Write::flush(&mut w))
                .map_err(|e| Error::io("(stdout)", e))?;
        }
    }
    bar.finish_and_clear();
    if empty > 0 {
        eprintln!("sslf: {empty} users rated every item; their lists are empty");
    }
    eprintln!(
        "sslf: top-{} for {} users in {:.2} s{}",
        a.top,
        users.len(),
        started.elapsed().as_secs_f64(),
        a.out
            .as_ref()
            .map_or(String::new(), |p| format!(", wrote {}", p.display()))
    );
    Ok(())
}

fn say_fold_in(rep: &crate::model::serve::FoldInReport, from: &std::path::Path) {
    eprintln!(
        "sslf: folded in {} new and {} known users from {}",
        rep.new_users,
        rep.refit_users,
        from.display()
    );
    if rep.unknown_item_entries > 0 {
        eprintln!(
            "sslf: skipped {} ratings of {} items the model does not know",
            rep.unknown_item_entries, rep.unknown_items
        );
    }
    if rep.users_without_known_items > 0 {
        eprintln!(
            "sslf: {} users rated only unknown items; they get the mean and zero factors",
            rep.users_without_known_items
        );
    }
}

fn fold_in(a: FoldInArgs) -> Result<()> {
    refuse_overwriting_input(&a.out, &[&a.model, &a.ratings])?;
    let model = ModelFile::load(&a.model)?;
    let ds = read_file(&a.ratings, Format::Auto, model.duplicate_policy())?;
    let (folded, rep) = model.fold_in(&ds.ratings, &ds.users, &ds.items)?;
    say_fold_in(&rep, &a.ratings);
    folded.save(&a.out)?;
    println!("wrote {} ({} users)", a.out.display(), folded.users.len());
    Ok(())
}
