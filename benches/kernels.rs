//! Criterion benches of the ops that dominate training, on every backend present.
//!
//! Sizes come from the environment (defaults in brackets): SSLF_BENCH_USERS [100000],
//! SSLF_BENCH_ITEMS [10000], SSLF_BENCH_NNZ [2000000], SSLF_BENCH_RANK [32],
//! SSLF_BENCH_CG_ITERS [10]. Groups are `<op>/<backend>`; throughput is in known entries × rank
//! (each pass over the entries counted once). Every timed iteration ends in `sync()`, so device
//! work is inside the timed region. Run: `cargo bench --bench kernels`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sslf::backend::{cpu::CpuBackend, gpu::GpuBackend, gpu::GpuOptions, Backend};
use sslf::bench::{BenchOp, Workload};
use sslf::data::synth::{generate, SynthConfig};
use sslf::data::Matrix;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn matrix() -> Matrix {
    let cfg = SynthConfig {
        n_users: env("SSLF_BENCH_USERS", 100_000),
        n_items: env("SSLF_BENCH_ITEMS", 10_000),
        nnz: env("SSLF_BENCH_NNZ", 2_000_000),
        rank: 10,
        ..Default::default()
    };
    let ds = generate(&cfg);
    Matrix::from_ratings(&ds.ratings, cfg.n_users, cfg.n_items)
}

fn bench_backend<B: Backend>(c: &mut Criterion, b: &B, m: &Matrix) {
    let rank = env("SSLF_BENCH_RANK", 32);
    let mut w = Workload::new(b, m, rank, false, env("SSLF_BENCH_CG_ITERS", 10)).expect("upload");
    let name = b.info().backend;
    for op in [
        BenchOp::Gradient,
        BenchOp::GnProduct,
        BenchOp::CgIteration,
        BenchOp::SlfEpoch,
        BenchOp::SslfEpoch,
    ] {
        let passes = w.passes(op).expect("op runs");
        let mut g = c.benchmark_group(op.name());
        g.throughput(Throughput::Elements(passes * (m.nnz() * rank) as u64));
        if matches!(op, BenchOp::SlfEpoch | BenchOp::SslfEpoch) {
            g.sample_size(10);
        }
        g.bench_function(&name, |bench| bench.iter(|| w.run(op).expect("op runs")));
        g.finish();
    }
}

fn kernels(c: &mut Criterion) {
    let m = matrix();
    bench_backend(c, &CpuBackend::new(0).expect("thread pool"), &m);
    match GpuBackend::new(&GpuOptions {
        max_chunk_bytes: None,
        subgroups: true,
        max_resident_bytes: None,
        ..Default::default()
    }) {
        Ok(g) => bench_backend(c, &g, &m),
        Err(e) => eprintln!("gpu benches skipped: {e}"),
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
