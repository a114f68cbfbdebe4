//! UDV^T: truly low-rank solutions. On synthetic data of true rank 3 with f = 20, projected gradient
//! descent on UDV^T recovers numerical rank exactly 3, while LF with the same f, gradient descent
//! and no regularization does not. The spectra are recorded in tests/fixtures/rank_spectra.json.

mod common;

use sslf::backend::cpu::CpuBackend;
use sslf::config::TrainConfig;
use sslf::experiment::{data::prepare, observe::Recorder, train, Summary};
use std::path::Path;

fn run(overrides: &[&str]) -> Summary {
    let mut o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    o.push("train.save_model=false".into());
    let cfg = TrainConfig::load(Path::new("configs/udv-rank-recovery.json"), &o).unwrap();
    let data = prepare(&cfg.data).unwrap();
    train(
        &CpuBackend::new(2).unwrap(),
        &cfg,
        &data,
        &mut Recorder::default(),
    )
    .unwrap()
    .summary
}

fn fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string("tests/fixtures/rank_spectra.json").unwrap())
        .unwrap()
}

fn spectrum(v: &serde_json::Value) -> Vec<f64> {
    v["singular_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn udv_with_gradient_descent_recovers_rank_exactly_three() {
    let s = run(&[]);
    let sv = &s.rank_report.singular_values;
    eprintln!("UDV spectrum: {sv:?}");
    assert_eq!(s.rank, 20);
    assert_eq!(s.rank_report.rank, 3, "{sv:?}");
    assert!(sv[3] / sv[0] < 1e-6, "σ4/σ1 = {}", sv[3] / sv[0]);
    assert!(
        sv[2] / sv[0] > 0.1,
        "the third true component is learned: {sv:?}"
    );
    assert!(s.test.unwrap().rmse < 0.01, "fits the noiseless data");
    let want = spectrum(&fixture()["udv_gd"]);
    for k in 0..3 {
        assert!(
            (sv[k] - want[k]).abs() < 1e-3 * want[k],
            "σ{} {} vs fixture {}",
            k + 1,
            sv[k],
            want[k]
        );
    }
}

#[test]
fn lf_with_gradient_descent_and_no_regularization_does_not() {
    let s = run(&[
        "model.kind=lf",
        "model.biases=false",
        "model.lambda=0",
        "solver.momentum=0.9",
        "train.max_epochs=5000",
    ]);
    let sv = &s.rank_report.singular_values;
    eprintln!("LF spectrum: {sv:?}");
    assert_eq!(s.rank_report.rank, 20, "{sv:?}");
    assert!(sv[3] / sv[0] > 1e-2, "σ4/σ1 = {}", sv[3] / sv[0]);
    let want = spectrum(&fixture()["lf_gd"]);
    for k in 0..4 {
        assert!(
            (sv[k] - want[k]).abs() < 1e-3 * want[k],
            "σ{} {} vs fixture {}",
            k + 1,
            sv[k],
            want[k]
        );
    }
}
