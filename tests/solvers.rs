//! Convergence on synthetic low-rank data: every solver gets down to the noise level.

mod common;

use sslf::backend::cpu::CpuBackend;
use sslf::config::TrainConfig;
use sslf::experiment::{data::prepare, observe::Recorder, train};

/// Uniform degrees (≈ 60 entries per user), true rank 3, noise σ = 0.1.
fn config(solver: &str, extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = vec![
        r#"data.synthetic={"n_users":500,"n_items":300,"nnz":30000,"rank":3,"noise":0.1,"user_exponent":0.0,"item_exponent":0.0,"seed":5}"#.into(),
        "model.rank=3".into(),
        "model.lambda=0.001".into(),
        "model.lambda_bias=0.001".into(),
        format!("solver.name={solver}"),
        "train.max_epochs=300".into(),
        "train.patience=20".into(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::from_json("test", "{}", &o).unwrap()
}

fn test_rmse(cfg: &TrainConfig) -> (f64, usize) {
    let data = prepare(&cfg.data).unwrap();
    let mut rec = Recorder::default();
    let t = train(&CpuBackend::new(2).unwrap(), cfg, &data, &mut rec).unwrap();
    (t.summary.test.unwrap().rmse, t.summary.best_epoch)
}

#[test]
fn every_solver_reaches_the_noise_level() {
    for (solver, extra, bound) in [
        ("slf", vec![], 0.11),
        ("sslf", vec!["solver.sam=curvature"], 0.11),
        ("sslf", vec!["solver.sam=ascent"], 0.11),
        ("adam", vec!["solver.lr=0.02"], 0.115),
        ("gd", vec!["solver.lr=0.003", "solver.momentum=0.9"], 0.115),
        ("sgd", vec!["solver.lr=0.02", "train.max_epochs=100"], 0.115),
    ] {
        let (rmse, best) = test_rmse(&config(solver, &extra));
        eprintln!("{solver} {extra:?}: test rmse {rmse:.4} at epoch {best}");
        assert!(
            rmse < bound,
            "{solver} {extra:?}: test rmse {rmse} ≥ {bound}"
        );
        assert!(
            rmse > 0.09,
            "{solver}: {rmse} is below the noise floor, suspicious"
        );
    }
}

#[test]
fn second_order_needs_far_fewer_epochs_than_gradient_descent() {
    let (_, slf_epochs) = test_rmse(&config("slf", &[]));
    let (_, gd_epochs) = test_rmse(&config("gd", &["solver.lr=0.003", "solver.momentum=0.9"]));
    assert!(
        slf_epochs * 3 < gd_epochs,
        "slf best at epoch {slf_epochs}, gd at {gd_epochs}"
    );
}
