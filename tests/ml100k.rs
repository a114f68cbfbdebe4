//! MovieLens-100k on the fixed 80/20 split in ../shared/data/ml-100k (read relative to the repo
//! root). The project never requires these files: without them the tests say so and pass.

mod common;

use sslf::backend::{cpu::CpuBackend, Backend};
use sslf::config::TrainConfig;
use sslf::experiment::{data::prepare, data::Prepared, observe::Recorder, train, Summary};
use std::path::Path;

fn data_present() -> bool {
    let ok = Path::new("../shared/data/ml-100k/train.tsv").exists();
    if !ok {
        eprintln!("skipped: ../shared/data/ml-100k is absent");
    }
    ok
}

fn run<B: Backend>(b: &B, config: &str, data: Option<&Prepared>) -> (Summary, Prepared) {
    run_with(b, config, data, &[])
}

/// [`run`] with `--set` overrides.
fn run_with<B: Backend>(
    b: &B,
    config: &str,
    data: Option<&Prepared>,
    set: &[&str],
) -> (Summary, Prepared) {
    let mut sets = vec!["train.save_model=false".to_string()];
    sets.extend(set.iter().map(|s| s.to_string()));
    let cfg = TrainConfig::load(Path::new(config), &sets).unwrap();
    let data = match data {
        Some(d) => d.clone(),
        None => prepare(&cfg.data).unwrap(),
    };
    let t = train(b, &cfg, &data, &mut Recorder::default()).unwrap();
    (t.summary, data)
}

#[test]
fn the_shipped_slf_and_sslf_configs_beat_libmf_in_few_passes() {
    if !data_present() {
        return;
    }
    let cpu = CpuBackend::new(2).unwrap();
    // (config, rank, passes to the best validation epoch (hardware-independent), test RMSE):
    // the shipped full-batch Adam (rank 300) takes 161 passes; LIBMF's test RMSE is 0.9127, and
    // issue 17 asks the shipped SSLF for 0.905 and a lower RMSE than SLF's.
    let mut got = Vec::new();
    for (config, rank, most_passes, rmse) in [
        ("configs/ml100k-slf.json", 300, 150, 0.9127),
        ("configs/ml100k-sslf.json", 300, 250, 0.905),
        ("configs/ml100k-sslf-curvature.json", 300, 250, 0.9127),
    ] {
        let (s, d) = run(&cpu, config, None);
        let t = s.test.unwrap();
        eprintln!(
            "{config}: test rmse {:.5} mae {:.5} at epoch {} ({:.3} s/epoch)",
            t.rmse, t.mae, s.best_epoch, s.seconds_per_epoch
        );
        assert_eq!(s.rank, rank);
        assert_eq!(t.count, 20_000);
        assert_eq!(d.test.nnz(), 20_000);
        assert!(t.rmse < rmse, "{config}: test rmse {}", t.rmse);
        assert!(
            s.passes_to_best <= most_passes,
            "{config}: {} passes to the best epoch",
            s.passes_to_best
        );
        got.push(t.rmse);
    }
    assert!(got[1] < got[0], "sslf {} against slf {}", got[1], got[0]);
}

#[test]
fn gpu_backend_reaches_the_cpu_rmse_on_ml100k() {
    if !data_present() {
        return;
    }
    let Some(gpu) = common::gpu() else {
        return;
    };
    let cpu = CpuBackend::new(2).unwrap();
    // Rank 20 without the refit: the shipped rank 300 takes ~20 s an epoch on lavapipe,
    // and the refit adds nothing to the comparison. The shipped ridge (λ·|Ω|^½) is kept.
    let set = ["model.rank=20", "train.refit=false"];
    let (c, data) = run_with(&cpu, "configs/ml100k-slf.json", None, &set);
    let (g, _) = run_with(gpu, "configs/ml100k-slf.json", Some(&data), &set);
    let (ct, gt) = (c.test.unwrap(), g.test.unwrap());
    eprintln!(
        "cpu rmse {:.5} (epoch {}), gpu rmse {:.5} (epoch {}) on {}",
        ct.rmse, c.best_epoch, gt.rmse, g.best_epoch, g.device.name
    );
    assert!(
        (ct.rmse - gt.rmse).abs() < 1e-3,
        "cpu {} vs gpu {}",
        ct.rmse,
        gt.rmse
    );
    assert!(
        (ct.mae - gt.mae).abs() < 1e-3,
        "cpu {} vs gpu {}",
        ct.mae,
        gt.mae
    );
}

/// UDV^T with SLF from seed 3 starts at the X ≈ 0 saddle, where LM rejects its first steps while
/// the damping grows. Rejected steps leave θ unchanged, so they must not use up the patience: the
/// run escapes and trains like the other seeds.
#[test]
fn rejected_lm_steps_do_not_stop_udv_slf_at_the_saddle() {
    if !data_present() {
        return;
    }
    let cfg = TrainConfig::load(
        Path::new("configs/ml100k-udv-slf.json"),
        &[
            "train.save_model=false".into(),
            "train.seed=3".into(),
            "train.max_epochs=40".into(),
        ],
    )
    .unwrap();
    let data = prepare(&cfg.data).unwrap();
    let mut rec = Recorder::default();
    let t = train(&CpuBackend::new(2).unwrap(), &cfg, &data, &mut rec).unwrap();
    let rejected = rec.records.iter().filter(|r| !r.accepted).count();
    assert!(rejected >= cfg.train.patience, "{rejected} rejections");
    let rmse = t.summary.test.unwrap().rmse;
    assert!(rmse < 0.95, "test RMSE {rmse}");
}
