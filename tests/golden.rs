//! Behaviour pinned to the bit: each config below, run for a few epochs on the CPU backend, must
//! give exactly the parameters and figures recorded in `fixtures/golden_bits.json`. A refactor that
//! changes any bit fails here. After a deliberate numerical change, re-record with
//! `SSLF_BLESS=1 cargo test --test golden` and say why in the commit.
//!
//! The ml-100k configs need ../shared/data/ml-100k; without it they are skipped (and said), the
//! synthetic ones always run.

use sslf::backend::cpu::CpuBackend;
use sslf::config::TrainConfig;
use sslf::experiment::{data::prepare, observe::Recorder, train};
use std::collections::BTreeMap;
use std::path::Path;

const FIXTURE: &str = "tests/fixtures/golden_bits.json";

const CONFIGS: [(&str, usize); 8] = [
    ("configs/default.json", 6),
    ("configs/udv-rank-recovery.json", 4),
    ("configs/ml100k-slf.json", 6),
    ("configs/ml100k-sslf.json", 6),
    ("configs/ml100k-sslf-curvature.json", 6),
    ("configs/ml100k-adam.json", 6),
    ("configs/ml100k-sgd.json", 3),
    ("configs/ml100k-udv-slf.json", 4),
];

/// FNV-1a over the f32 bit patterns.
fn fnv(theta: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in theta {
        for b in x.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn fingerprint(config: &str, epochs: usize) -> Option<String> {
    if config.contains("ml100k") && !Path::new("../shared/data/ml-100k/train.tsv").exists() {
        eprintln!("skipped {config}: ../shared/data/ml-100k is absent");
        return None;
    }
    let cfg = TrainConfig::load(
        Path::new(config),
        &[
            "train.save_model=false".into(),
            format!("train.max_epochs={epochs}"),
            "train.backend=\"cpu\"".into(),
        ],
    )
    .unwrap();
    let data = prepare(&cfg.data).unwrap();
    let cpu = CpuBackend::new(2).unwrap();
    let t = train(&cpu, &cfg, &data, &mut Recorder::default()).unwrap();
    let s = &t.summary;
    Some(format!(
        "theta {} | epochs {} best {} passes {} | loss {:016x} | valid {:016x} | test {:016x}",
        fnv(&t.theta),
        s.epochs,
        s.best_epoch,
        s.passes_to_best,
        s.final_loss.to_bits(),
        s.best_valid_rmse.unwrap_or(f64::NAN).to_bits(),
        s.test.as_ref().map_or(f64::NAN, |m| m.rmse).to_bits(),
    ))
}

#[test]
fn the_shipped_configs_give_the_recorded_bits() {
    let bless = std::env::var("SSLF_BLESS").is_ok_and(|v| v == "1");
    let mut recorded: BTreeMap<String, String> = std::fs::read_to_string(FIXTURE)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_default();
    let mut failures = Vec::new();
    for (config, epochs) in CONFIGS {
        let Some(got) = fingerprint(config, epochs) else {
            continue;
        };
        if bless {
            recorded.insert(config.to_string(), got);
            continue;
        }
        match recorded.get(config) {
            Some(want) if *want == got => {}
            Some(want) => failures.push(format!("{config}:\n  want {want}\n  got  {got}")),
            None => failures.push(format!("{config}: not recorded in {FIXTURE}")),
        }
    }
    if bless {
        let text = serde_json::to_string_pretty(&recorded).unwrap() + "\n";
        std::fs::write(FIXTURE, text).unwrap();
        eprintln!("recorded {FIXTURE}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
