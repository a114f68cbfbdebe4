//! Shared test fixtures: backend handles (one GPU device per test binary), seeded problems with
//! awkward shapes, tolerances, and the `backend_suite!` macro that stamps every generic check out
//! for the CPU backend, the GPU backend and the GPU backend with tiny chunks.
#![allow(dead_code)]

pub mod reference;

use rand::prelude::*;
use reference::Reference;
use sslf::backend::cpu::CpuBackend;
use sslf::backend::gpu::{GpuBackend, GpuOptions};
use sslf::data::synth::{generate, SynthConfig};
use sslf::data::{Matrix, Ratings};
use sslf::model::{Layout, ModelConfig, ModelKind, Regularization};
use std::sync::OnceLock;

/// A CPU backend on two threads, item side fused into the user pass.
pub fn cpu() -> CpuBackend {
    CpuBackend::new(2)
        .expect("thread pool")
        .with_fusion(sslf::backend::cpu::Fusion::Always)
}

fn require_gpu() -> bool {
    std::env::var("SSLF_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn open_gpu(opts: GpuOptions) -> Option<GpuBackend> {
    match GpuBackend::new(&opts) {
        Ok(g) => Some(g),
        Err(e) => {
            if require_gpu() {
                panic!("SSLF_REQUIRE_GPU=1 but no GPU backend: {e}");
            }
            eprintln!("skipped: no wgpu adapter ({e}) (set SSLF_REQUIRE_GPU=1 to fail)");
            None
        }
    }
}

/// The device in `cell`, opened once per test binary with `opts`; None (with a printed reason) when
/// there is no adapter.
fn cached(
    cell: &'static OnceLock<Option<GpuBackend>>,
    max_chunk_bytes: Option<u64>,
    subgroups: bool,
    max_resident_bytes: Option<u64>,
) -> Option<&'static GpuBackend> {
    let g = cell.get_or_init(|| {
        open_gpu(GpuOptions {
            max_chunk_bytes,
            subgroups,
            max_resident_bytes,
            backends: None,
        })
    });
    if g.is_none() {
        eprintln!("skipped: no wgpu adapter (set SSLF_REQUIRE_GPU=1 to fail)");
    }
    g.as_ref()
}

/// The GPU backend (any adapter, lavapipe included), or None with a printed reason.
pub fn gpu() -> Option<&'static GpuBackend> {
    static GPU: OnceLock<Option<GpuBackend>> = OnceLock::new();
    cached(&GPU, None, true, None)
}

/// The GPU backend with 2 KiB bindings and no subgroups: θ of every fixture splits into row blocks
/// on both sides, the ratings into tiles over several blocks of the other side, and the kernels
/// and reductions take the portable path.
pub fn gpu_chunked() -> Option<&'static GpuBackend> {
    static GPU: OnceLock<Option<GpuBackend>> = OnceLock::new();
    cached(&GPU, Some(2048), false, None)
}

/// The GPU backend with 2 KiB bindings and subgroups (when the adapter has them): the subgroup
/// row kernels on θ in row blocks.
pub fn gpu_chunked_sg() -> Option<&'static GpuBackend> {
    static GPU: OnceLock<Option<GpuBackend>> = OnceLock::new();
    cached(&GPU, Some(2048), true, None)
}

/// The GPU backend with 2 KiB bindings and only 16 KB of rating data resident: the rest of every
/// fixture's tiles and evaluation entries streams from host memory through the pool.
pub fn gpu_streamed() -> Option<&'static GpuBackend> {
    static GPU: OnceLock<Option<GpuBackend>> = OnceLock::new();
    cached(&GPU, Some(2048), true, Some(16_000))
}

/// The GPU backend on wgpu's GL back end (Mesa llvmpipe through EGL here), portable kernels.
pub fn gpu_gl() -> Option<&'static GpuBackend> {
    static GPU: OnceLock<Option<GpuBackend>> = OnceLock::new();
    let g = GPU.get_or_init(|| {
        open_gpu(GpuOptions {
            backends: Some(wgpu::Backends::GL),
            ..Default::default()
        })
    });
    g.as_ref()
}

/// One GL check at a time. wgpu's GL back end serialises every call on one EGL context and gives
/// up (panics) when a thread waits for it over a second; with the other suites loading both cores,
/// parallel GL checks sometimes waited that long on llvmpipe.
pub fn gl_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stamps each generic check `fn name<B: Backend>(b: &B)` out as `cpu::name` (fused item side),
/// `cpu_two_pass::name` (CSR + CSC passes), `cpu_tiled::name` and `cpu_tiled_two_pass::name`
/// (both in 16 × 16 tiles, so a pass crosses many tiles), `gpu::name`, `gpu_chunked::name` (portable kernels) and
/// `gpu_chunked_sg::name`, `gpu_streamed::name` and `gpu_gl::name` (wgpu's GL back end).
#[macro_export]
macro_rules! backend_suite {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $( #[test] fn $name() { super::$name(&$crate::common::cpu()); } )*
        }
        mod cpu_two_pass {
            $( #[test] fn $name() { super::$name(&$crate::common::cpu().with_fusion(sslf::backend::cpu::Fusion::Never)); } )*
        }
        mod cpu_tiled {
            $( #[test] fn $name() { super::$name(&$crate::common::cpu().with_tile_items(Some(16))); } )*
        }
        mod cpu_tiled_two_pass {
            $( #[test] fn $name() { super::$name(&$crate::common::cpu().with_tile_items(Some(16)).with_fusion(sslf::backend::cpu::Fusion::Never)); } )*
        }
        mod gpu {
            $( #[test] fn $name() { if let Some(g) = $crate::common::gpu() { super::$name(g); } } )*
        }
        mod gpu_chunked {
            $( #[test] fn $name() { if let Some(g) = $crate::common::gpu_chunked() { super::$name(g); } } )*
        }
        mod gpu_chunked_sg {
            $( #[test] fn $name() { if let Some(g) = $crate::common::gpu_chunked_sg() { super::$name(g); } } )*
        }
        mod gpu_streamed {
            $( #[test] fn $name() { if let Some(g) = $crate::common::gpu_streamed() { super::$name(g); } } )*
        }
        mod gpu_gl {
            $( #[test] fn $name() { if let Some(g) = $crate::common::gpu_gl() { let _turn = $crate::common::gl_turn(); super::$name(g); } } )*
        }
    };
}

/// A seeded problem with awkward shapes: 300 users (one workgroup of 256 plus 44), 150 items, a
/// user and an item with no entries, nnz not a multiple of 64, rows short enough for 2 KiB chunks.
pub struct Fixture {
    pub cfg: ModelConfig,
    pub layout: Layout,
    pub ratings: Ratings,
    pub matrix: Matrix,
    pub reg: Vec<f32>,
    pub theta: Vec<f32>,
    pub v: Vec<f32>,
    pub w: Vec<f32>,
    pub reference: Reference,
}

pub fn fixture(kind: ModelKind, biases: bool, reg: Regularization, seed: u64) -> Fixture {
    fixture_rank(kind, biases, reg, seed, 5)
}

/// [`fixture`] with rank `rank`.
pub fn fixture_rank(
    kind: ModelKind,
    biases: bool,
    reg: Regularization,
    seed: u64,
    rank: usize,
) -> Fixture {
    let (m, n) = (300, 150);
    let ds = generate(&SynthConfig {
        n_users: m,
        n_items: n,
        nnz: 3001,
        rank: 3,
        noise: 0.3,
        user_exponent: 0.3,
        item_exponent: 0.3,
        seed,
        ..Default::default()
    });
    let mut r = Ratings::default();
    for k in 0..ds.ratings.nnz() {
        let (u, i) = (ds.ratings.users[k], ds.ratings.items[k]);
        if u == 7 || i == 11 {
            continue;
        }
        r.push(u, i, ds.ratings.values[k]);
    }
    assert!(
        r.nnz() % 64 != 0,
        "nnz {} should not be a multiple of 64",
        r.nnz()
    );
    let cfg = ModelConfig {
        kind,
        rank,
        biases,
        lambda: Some(0.07),
        lambda_bias: 0.03,
        regularization: reg,
        ..Default::default()
    };
    let layout = cfg.layout(m, n, r.mean() as f32);
    let matrix = Matrix::from_ratings(&r, m, n);
    let regd = cfg.reg_diag(
        &layout,
        &matrix.by_user.row_counts(),
        &matrix.by_item.row_counts(),
    );
    let mut rng = StdRng::seed_from_u64(seed + 100);
    let mut rand_vec = |scale: f32| -> Vec<f32> {
        (0..layout.len())
            .map(|_| rng.random_range(-1.0f32..1.0) * scale)
            .collect()
    };
    let mut theta = rand_vec(0.6);
    if kind == ModelKind::Udv {
        for t in 0..layout.rank {
            theta[layout.d_off() + t] = 0.5 + 0.2 * (t % 5) as f32;
        }
    }
    let v = rand_vec(1.0);
    let w = rand_vec(1.0);
    let reference = Reference::new(layout, r.clone(), &regd);
    Fixture {
        cfg,
        layout,
        ratings: r,
        matrix,
        reg: regd,
        theta,
        v,
        w,
        reference,
    }
}

/// Every model variant the suites cover.
pub fn all_fixtures(seed: u64) -> Vec<(&'static str, Fixture)> {
    vec![
        (
            "lf+biases",
            fixture(ModelKind::Lf, true, Regularization::PerEntry, seed),
        ),
        (
            "lf",
            fixture(ModelKind::Lf, false, Regularization::Frobenius, seed),
        ),
        (
            "udv",
            fixture(ModelKind::Udv, false, Regularization::PerEntry, seed),
        ),
        // Past 8 factors per lane at subgroup sizes up to 8: the subgroup kernels' spill path.
        (
            "lf+biases r70",
            fixture_rank(ModelKind::Lf, true, Regularization::PerEntry, seed, 70),
        ),
        (
            "udv r70",
            fixture_rank(ModelKind::Udv, false, Regularization::PerEntry, seed, 70),
        ),
    ]
}

pub fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// ‖got − want‖∞ ≤ atol + rtol·‖want‖∞.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |a, &b| a.max(b.abs()));
    let (mut worst, mut at) = (0f64, 0usize);
    for k in 0..got.len() {
        let d = (got[k] as f64 - want[k]).abs();
        if d > worst {
            worst = d;
            at = k;
        }
    }
    assert!(
        worst <= atol + rtol * scale,
        "{what}: max error {worst:.3e} at {at} (got {}, want {}) exceeds {atol:.1e} + {rtol:.1e}·{scale:.3e}",
        got[at],
        want[at]
    );
}

/// |got − want| ≤ atol + rtol·|want|.
pub fn assert_close_scalar(what: &str, got: f64, want: f64, rtol: f64, atol: f64) {
    assert!(
        (got - want).abs() <= atol + rtol * want.abs(),
        "{what}: got {got}, want {want}"
    );
}

/// Runs the `sslf` binary with `args` in `dir`.
pub fn run_sslf(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sslf"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

/// Starts `sslf args` in `dir`, waits until `curve` holds two epoch records (the initial point and
/// epoch 1), sends SIGINT (Ctrl-C) and returns what the process printed and its status.
#[cfg(unix)]
pub fn interrupt_after_first_epoch(
    dir: &std::path::Path,
    args: &[&str],
    curve: &std::path::Path,
) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sslf"))
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(curve).map_or(0, |s| s.lines().count()) < 2 {
        if t0.elapsed().as_secs() > 120 {
            child.kill().unwrap();
            panic!("the run never reached epoch 1");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait_with_output().unwrap()
}
