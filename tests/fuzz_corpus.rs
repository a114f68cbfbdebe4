//! Replays the fuzz targets' seed corpus (`fuzz/seeds/<target>/`) and every input that once made
//! a target fail (`fuzz/regressions/<target>/`) on the stable toolchain: each must return without
//! panicking. The targets themselves run under cargo-fuzz (see docs/RELIABILITY.md).

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("ratings", sslf::fuzz_targets::ratings),
    ("config", sslf::fuzz_targets::config),
    ("model_file", sslf::fuzz_targets::model_file),
    ("checkpoint", sslf::fuzz_targets::checkpoint),
    ("pairs", sslf::fuzz_targets::pairs),
];

fn replay(root: &str) -> usize {
    let mut n = 0;
    for (name, target) in TARGETS {
        let dir = Path::new(root).join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{} panicked on {}", name, f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_seed_and_regression_input_returns_without_panicking() {
    let seeds = replay("fuzz/seeds");
    assert!(seeds >= TARGETS.len(), "only {seeds} seed inputs");
    replay("fuzz/regressions");
}
