//! GPU-only behaviour: chunking, device limits and the device's own errors. Skipped (with a
//! printed reason) when no adapter exists, unless SSLF_REQUIRE_GPU=1.

mod common;

use common::{fixture, gpu, gpu_chunked};
use sslf::backend::gpu::{GpuBackend, GpuOptions};
use sslf::backend::{Backend, SparseOps, VectorOps};
use sslf::data::{Matrix, Ratings};
use sslf::model::{ModelKind, Regularization};

#[test]
fn small_chunk_cap_splits_both_sides_into_many_chunks() {
    let Some(g) = gpu_chunked() else { return };
    let fx = fixture(ModelKind::Lf, true, Regularization::PerEntry, 21);
    let m = g.upload_matrix(&fx.matrix).unwrap();
    let (u, i) = m.chunk_counts();
    assert!(u > 3 && i > 3, "chunks: users {u}, items {i}");
    assert!(
        !g.uses_subgroups(),
        "the chunked fixture takes the portable path"
    );
    assert_eq!(g.chunk_cap(), 4096);
    if let Some(full) = gpu() {
        let m = full.upload_matrix(&fx.matrix).unwrap();
        assert_eq!(m.chunk_counts(), (1, 1));
    }
}

#[test]
fn a_row_longer_than_a_chunk_is_a_clear_memory_error() {
    if gpu().is_none() {
        return;
    }
    let g = GpuBackend::new(&GpuOptions {
        max_chunk_bytes: Some(4096),
        subgroups: false,
    })
    .unwrap();
    let mut r = Ratings::default();
    for i in 0..600 {
        r.push(0, i, 1.0);
    }
    let err = g
        .upload_matrix(&Matrix::from_ratings(&r, 1, 600))
        .err()
        .expect("600 entries × 8 bytes exceed a 4 KiB chunk")
        .to_string();
    assert!(
        err.contains("ratings by user row 0 (600 entries) needs 4800 bytes"),
        "{err}"
    );
    assert!(err.contains("4096 bytes"), "{err}");
}

#[test]
fn a_vector_past_the_binding_limit_reports_bytes_needed_and_available() {
    let Some(g) = gpu() else { return };
    let too_many = (g.binding_cap() / 4 + 1) as usize;
    let err = g.zeros(too_many).err().expect("too large").to_string();
    assert!(
        err.contains(&format!("needs {} bytes", too_many * 4)),
        "{err}"
    );
    assert!(err.contains(&g.binding_cap().to_string()), "{err}");
}

#[test]
fn device_reports_its_adapter_and_limits() {
    let Some(g) = gpu() else { return };
    let info = g.info();
    assert_eq!(info.backend, "gpu");
    assert!(!info.name.is_empty());
    assert!(g.limits().max_compute_workgroups_per_dimension >= 65_535);
    assert!(!sslf::backend::gpu::list_adapters().is_empty());
    g.sync().unwrap();
}

#[test]
fn cli_trains_on_the_gpu_backend() {
    if gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sslf"))
        .args([
            "train",
            "--backend",
            "gpu",
            "--epochs",
            "2",
            "--output",
            "o",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("backend: gpu"), "{err}");
    assert!(out.contains("test:  rmse"), "{out}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sslf"))
        .arg("devices")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("max_storage_buffer_binding_size"));
}

#[test]
fn udv_training_on_the_gpu_follows_the_cpu() {
    let Some(g) = gpu() else { return };
    use sslf::config::TrainConfig;
    use sslf::experiment::{data::prepare, observe::Recorder, train};
    for solver in [
        &["solver.name=gd"][..],
        &["solver.name=slf", "solver.gamma=1"][..],
    ] {
        let mut o: Vec<String> = vec![
            "train.max_epochs=60".into(),
            "train.save_model=false".into(),
        ];
        o.extend(solver.iter().map(|s| s.to_string()));
        let cfg =
            TrainConfig::load(std::path::Path::new("configs/udv-rank-recovery.json"), &o).unwrap();
        let data = prepare(&cfg.data).unwrap();
        let cpu = sslf::backend::cpu::CpuBackend::new(2).unwrap();
        let c = train(&cpu, &cfg, &data, &mut Recorder::default()).unwrap();
        let gg = train(g, &cfg, &data, &mut Recorder::default()).unwrap();
        let (cl, gl) = (c.summary.final_loss, gg.summary.final_loss);
        eprintln!("{solver:?}: cpu loss {cl}, gpu loss {gl}");
        assert!(
            (cl - gl).abs() <= 1e-3 * cl.abs(),
            "{solver:?}: cpu {cl} vs gpu {gl}"
        );
    }
}
