//! GPU-only behaviour: chunking, device limits and the device's own errors. Skipped (with a
//! printed reason) when no adapter exists, unless SSLF_REQUIRE_GPU=1.

mod common;

use common::{all_fixtures, fixture, gpu, gpu_chunked};
use sslf::backend::{Backend, SparseOps, VectorOps};
use sslf::data::{Matrix, Ratings};
use sslf::model::{ModelConfig, ModelKind, Regularization};

#[test]
fn small_bindings_split_theta_into_row_blocks_and_ratings_into_tiles() {
    let Some(g) = gpu_chunked() else { return };
    assert!(
        !g.uses_subgroups(),
        "the chunked fixture takes the portable path"
    );
    assert_eq!(g.chunk_cap(), 2048);
    for (name, fx) in all_fixtures(21) {
        let m = g.upload_matrix(&fx.matrix, &fx.layout).unwrap();
        let (bu, bi) = m.block_counts();
        assert!(bu > 2 && bi > 1, "{name}: θ blocks: users {bu}, items {bi}");
        let (u, i) = m.chunk_counts();
        // Every user block meets every item block, so there are at least bu·bi tiles per side.
        assert!(u >= bu * bi && i >= bu * bi, "{name}: tiles {u}, {i}");
        let theta = g.upload_params(&fx.layout, &fx.theta).unwrap();
        assert!(theta.segments() >= bu + bi, "{name}");
        assert_eq!(g.download(&theta).unwrap(), fx.theta, "{name}: round trip");
    }
    if let Some(full) = gpu() {
        let fx = fixture(ModelKind::Lf, true, Regularization::PerEntry, 21);
        let m = full.upload_matrix(&fx.matrix, &fx.layout).unwrap();
        assert_eq!(m.chunk_counts(), (1, 1));
        assert_eq!(m.block_counts(), (1, 1));
        assert_eq!(
            full.upload_params(&fx.layout, &fx.theta)
                .unwrap()
                .segments(),
            1
        );
    }
}

#[test]
fn a_flat_vector_on_blocked_parameters_is_refused() {
    let Some(g) = gpu_chunked() else { return };
    let fx = fixture(ModelKind::Lf, true, Regularization::PerEntry, 22);
    let m = g.upload_matrix(&fx.matrix, &fx.layout).unwrap();
    let flat = g.upload(&fx.theta).unwrap();
    let mut out = g.zeros_params(&fx.layout).unwrap();
    let err = g
        .gradient(&m, &fx.layout, &flat, &mut out)
        .expect_err("a flat θ does not match the row blocks")
        .to_string();
    assert!(err.contains("upload_params"), "{err}");
    let err = g
        .dot(&flat, &out)
        .expect_err("different layouts")
        .to_string();
    assert!(err.contains("not laid out alike"), "{err}");
}

#[test]
fn a_row_longer_than_a_chunk_is_a_clear_memory_error() {
    let Some(g) = gpu_chunked() else { return };
    let mut r = Ratings::default();
    for i in 0..300 {
        r.push(0, i, 1.0);
    }
    // Rank 1 without biases: θ (301 floats) fits one binding, so the row meets one item block.
    let layout = ModelConfig {
        rank: 1,
        biases: false,
        ..Default::default()
    }
    .layout(1, 300, 0.0);
    let err = g
        .upload_matrix(&Matrix::from_ratings(&r, 1, 300), &layout)
        .err()
        .expect("300 entries × 8 bytes exceed a 2 KiB chunk")
        .to_string();
    assert!(
        err.contains("ratings by user row 0 (300 entries) needs 2400 bytes"),
        "{err}"
    );
    assert!(err.contains("2048 bytes"), "{err}");
}

#[test]
fn a_parameter_row_past_the_binding_limit_reports_bytes_needed_and_available() {
    let Some(g) = gpu_chunked() else { return };
    // 512 factors + a bias = 2052 bytes per row > 2048.
    let layout = ModelConfig {
        rank: 512,
        ..Default::default()
    }
    .layout(3, 2, 0.0);
    let err = g.zeros_params(&layout).err().expect("too wide").to_string();
    assert!(err.contains("needs 2052 bytes"), "{err}");
    assert!(err.contains("2048 bytes"), "{err}");
}

#[test]
fn a_flat_vector_past_the_binding_limit_is_split_and_exact() {
    let Some(g) = gpu_chunked() else { return };
    let n = 5 * 512 + 3;
    let x: Vec<f32> = (0..n).map(|k| k as f32).collect();
    let v = g.upload(&x).unwrap();
    assert_eq!(v.segments(), 6);
    assert_eq!(g.download(&v).unwrap(), x);
    // Small integers: every partial sum is exact in f32, so the total must be exact.
    let y: Vec<f32> = (0..n).map(|k| (k % 7) as f32 - 3.0).collect();
    let w = g.upload(&y).unwrap();
    let want: f64 = y.iter().map(|&a| a as f64 * a as f64).sum();
    assert_eq!(g.dot(&w, &w).unwrap(), want);
    assert_eq!(g.norm_sq_range(&w, 500..1600).unwrap(), {
        y[500..1600]
            .iter()
            .map(|&a| a as f64 * a as f64)
            .sum::<f64>()
    });
}

#[test]
fn device_reports_its_adapter_and_limits() {
    let Some(g) = gpu() else { return };
    let info = g.info();
    assert_eq!(info.backend, "gpu");
    assert!(!info.name.is_empty());
    assert!(g.limits().max_compute_workgroups_per_dimension >= 65_535);
    assert!(!sslf::backend::gpu::list_adapters().unwrap().is_empty());
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

#[test]
fn training_with_theta_in_row_blocks_and_streamed_ratings_follows_the_cpu() {
    if gpu().is_none() {
        return;
    }
    use sslf::backend::gpu::{GpuBackend, GpuOptions};
    use sslf::config::TrainConfig;
    use sslf::experiment::{data::prepare, observe::Recorder, train};
    // 32 KiB bindings: θ of the default model (6,000 rows × 6 floats) splits into 3 user and 2 item
    // blocks, and the ratings into tiles of at most 4,096 entries; with 1 MB of them resident, the
    // rest (about 2 MB) streams from host memory in every pass.
    let g = GpuBackend::new(&GpuOptions {
        max_chunk_bytes: Some(32 * 1024),
        subgroups: true,
        max_resident_bytes: Some(1_000_000),
        ..Default::default()
    })
    .unwrap();
    let o = vec![
        "train.max_epochs=4".to_string(),
        "train.save_model=false".to_string(),
    ];
    let cfg = TrainConfig::load(std::path::Path::new("configs/default.json"), &o).unwrap();
    let data = prepare(&cfg.data).unwrap();
    let cpu = sslf::backend::cpu::CpuBackend::new(2).unwrap();
    let c = train(&cpu, &cfg, &data, &mut Recorder::default()).unwrap();
    let gg = train(&g, &cfg, &data, &mut Recorder::default()).unwrap();
    let (cl, gl) = (c.summary.final_loss, gg.summary.final_loss);
    let (ct, gt) = (
        c.summary.test.as_ref().unwrap().rmse,
        gg.summary.test.as_ref().unwrap().rmse,
    );
    eprintln!("cpu loss {cl} rmse {ct}; blocked gpu loss {gl} rmse {gt}");
    assert!(
        g.streamed_bytes() > 10_000_000,
        "{} bytes streamed",
        g.streamed_bytes()
    );
    assert!((cl - gl).abs() <= 1e-3 * cl.abs(), "cpu {cl} vs gpu {gl}");
    assert!((ct - gt).abs() <= 1e-3, "test rmse: cpu {ct} vs gpu {gt}");
}

#[test]
fn streamed_ratings_give_the_resident_results_and_free_their_budget() {
    let Some(full) = gpu() else { return };
    use sslf::backend::gpu::{GpuBackend, GpuOptions};
    // Nothing resident: every tile and evaluation chunk streams through the pool.
    let g = GpuBackend::new(&GpuOptions {
        max_chunk_bytes: Some(4096),
        subgroups: true,
        max_resident_bytes: Some(0),
        ..Default::default()
    })
    .unwrap();
    let fx = fixture(ModelKind::Lf, true, Regularization::PerEntry, 23);
    let run = |b: &GpuBackend| {
        let m = b.upload_matrix(&fx.matrix, &fx.layout).unwrap();
        let e = b.upload_entries(&fx.ratings, &fx.layout).unwrap();
        let theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
        let mut gr = b.zeros_params(&fx.layout).unwrap();
        let sq = b.gradient(&m, &fx.layout, &theta, &mut gr).unwrap();
        let ev = b.evaluate(&e, &fx.layout, &theta, (1.0, 5.0)).unwrap();
        (sq, ev.sse, b.download(&gr).unwrap())
    };
    let (sq, sse, gr) = run(&g);
    assert_eq!(g.resident_data_bytes(), 0);
    assert!(g.streamed_bytes() > 0);
    let (sq0, sse0, gr0) = run(full);
    assert!((sq - sq0).abs() <= 1e-5 * sq0, "{sq} vs {sq0}");
    assert!((sse - sse0).abs() <= 1e-5 * sse0, "{sse} vs {sse0}");
    common::assert_close("streamed gradient", &gr, &common::f64s(&gr0), 1e-5, 1e-6);
    // A budget is taken by what is resident and given back when it is dropped.
    let h = GpuBackend::new(&GpuOptions {
        max_chunk_bytes: Some(4096),
        subgroups: true,
        max_resident_bytes: Some(1 << 20),
        ..Default::default()
    })
    .unwrap();
    let m = h.upload_matrix(&fx.matrix, &fx.layout).unwrap();
    assert!(h.resident_data_bytes() > 0);
    drop(m);
    assert_eq!(h.resident_data_bytes(), 0);
}

#[test]
fn streamed_ratings_give_the_resident_bits_wherever_the_command_ring_fills() {
    if gpu().is_none() {
        return;
    }
    use sslf::backend::gpu::{GpuBackend, GpuOptions, RING_SLOTS};
    use sslf::backend::{Curvature, PrecondKind, Shift};
    use sslf::problem::Problem;
    // The same 2 KiB bindings (so the same tiles, the same kernels, the same sums), once with
    // every tile resident and once with every tile streamed through the pool.
    let open = |resident: Option<u64>| {
        GpuBackend::new(&GpuOptions {
            max_chunk_bytes: Some(2048),
            subgroups: true,
            max_resident_bytes: resident,
            ..Default::default()
        })
        .unwrap()
    };
    let (res, st) = (open(None), open(Some(0)));
    let fx = common::fixture_rank(ModelKind::Udv, false, Regularization::PerEntry, 9, 70);
    let l = fx.layout;
    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    // One pass after `before` recorded dispatches: the ring fills (and submits) at a different
    // dispatch of the pass each time, between a tile's binding and its dispatches included.
    let run = |b: &GpuBackend, pass: &str, before: usize| -> Vec<u32> {
        let p = Problem::from_model(b, &fx.matrix, &fx.cfg, l, Curvature::GaussNewton).unwrap();
        let e = b.upload_entries(&fx.ratings, &l).unwrap();
        let theta = b.upload_params(&l, &fx.theta).unwrap();
        let v = b.upload_params(&l, &fx.v).unwrap();
        let mut pc = p.precond_new(PrecondKind::BlockJacobi, false).unwrap();
        let mut out = p.zeros().unwrap();
        let mut pad = b.zeros(16).unwrap();
        b.download(&pad).unwrap(); // submits: the ring starts empty
        for _ in 0..before {
            b.scale(1.0, &mut pad).unwrap();
        }
        let mut got = match pass {
            "block-Jacobi" => {
                let shift = Shift { gamma: 0.5, c: 0.0 };
                p.precond_build(&theta, shift, &mut pc).unwrap();
                p.precond_apply(&pc, &v, &mut out).unwrap();
                vec![]
            }
            "Gauss–Newton product" => {
                p.curvature_product(&theta, &v, &mut out).unwrap();
                vec![]
            }
            "gradient" => vec![p.gradient(&theta, &mut out).unwrap()],
            _ => {
                let s = p.evaluate(&e, &theta, (1.0, 5.0)).unwrap();
                vec![s.sse, s.sae]
            }
        };
        let mut w = bits(&b.download(&out).unwrap());
        w.extend(got.drain(..).flat_map(|x: f64| {
            let x = x.to_bits();
            [x as u32, (x >> 32) as u32]
        }));
        w
    };
    for pass in [
        "block-Jacobi",
        "Gauss–Newton product",
        "gradient",
        "evaluation",
    ] {
        let want = run(&res, pass, 0);
        for back in [0, 1, 2, 5, 13, 34] {
            let before = RING_SLOTS - 1 - back;
            let got = run(&st, pass, before);
            let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ, 0,
                "{pass}, {before} dispatches before: {differ} words differ"
            );
        }
    }
    assert!(st.streamed_bytes() > 0 && st.resident_data_bytes() == 0);
}

/// A trained-looking LF model: hashed factors and biases, seen lists from a fixture; user 0 rated
/// every item.
fn serving_model(n_users: usize, n_items: usize, f: usize) -> sslf::model::file::ModelFile {
    use sslf::data::IdMap;
    use sslf::model::Layout;
    let layout = Layout {
        kind: ModelKind::Lf,
        n_users,
        n_items,
        rank: f,
        biases: true,
        mu: 3.0,
    };
    let theta: Vec<f32> = (0..layout.len() as u64)
        .map(|k| {
            ((k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.6
        })
        .collect();
    let mut ptr = vec![0u64];
    let mut idx = Vec::new();
    for u in 0..n_users {
        if u == 0 {
            idx.extend(0..n_items as u32);
        } else {
            idx.extend((u % 4..n_items).step_by(3).map(|i| i as u32));
        }
        ptr.push(idx.len() as u64);
    }
    sslf::model::file::ModelFile {
        layout,
        theta,
        users: IdMap::identity(n_users),
        items: IdMap::identity(n_items),
        clip: (1.0, 5.0),
        config: "{}".into(),
        seen: Some((ptr, idx)),
    }
}

#[test]
fn gpu_top_n_agrees_with_the_cpu() {
    let Some(g) = common::gpu() else { return };
    for (n_users, n_items, f, n) in [(300, 700, 5, 10), (40, 20, 3, 32), (70, 1500, 16, 1)] {
        let m = serving_model(n_users, n_items, f);
        let users: Vec<u32> = (0..n_users as u32).rev().collect();
        let mut cpu = Vec::new();
        m.recommend_all(&users, n, |u, l| {
            cpu.push((u, l.to_vec()));
            Ok(())
        })
        .unwrap();
        let mut gpu = Vec::new();
        g.recommend_all(&m, &users, n, |u, l| {
            gpu.push((u, l.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(cpu.len(), gpu.len());
        for ((u, a), (v, b)) in cpu.iter().zip(&gpu) {
            assert_eq!(u, v);
            assert_eq!(a.len(), b.len(), "user {u} ({n_users}×{n_items}, n {n})");
            if *u == 0 {
                assert!(a.is_empty(), "user 0 rated every item");
            }
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x.0, y.0, "user {u}");
                assert!((x.1 - y.1).abs() < 1e-4, "user {u}: {} vs {}", x.1, y.1);
            }
        }
    }
    // Users in several chunks when bindings are small (2 KiB: 16 users of 32 items per chunk).
    if let Some(small) = gpu_chunked() {
        let m = serving_model(40, 20, 3);
        let users: Vec<u32> = (0..40).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        m.recommend_all(&users, 32, |_, l| {
            a.push(l.iter().map(|x| x.0).collect::<Vec<_>>());
            Ok(())
        })
        .unwrap();
        small
            .recommend_all(&m, &users, 32, |_, l| {
                b.push(l.iter().map(|x| x.0).collect::<Vec<_>>());
                Ok(())
            })
            .unwrap();
        assert_eq!(a, b);
    }
    // Past the kernel's list length: a clear error.
    let m = serving_model(4, 50, 2);
    let e = g.recommend_all(&m, &[1], 33, |_, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("at most 32"), "{e}");
}
