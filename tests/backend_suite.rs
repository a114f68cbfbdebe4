//! One suite, every backend: each check is a generic function run on the CPU backend, the GPU
//! backend and the GPU backend with 2 KiB bindings (θ in row blocks, ratings in tiles), against the f64 reference.

mod common;

use common::{all_fixtures, assert_close, assert_close_scalar, f64s, fixture, Fixture};
use sslf::backend::precond::row_coords;
use sslf::backend::{AdamHyper, Backend, Curvature};
use sslf::backend::{PrecondKind, Shift};
use sslf::model::{ModelKind, Regularization};
use sslf::problem::{BallConstraint, Problem};
use sslf::solver::cg::{CgLimits, ConjugateGradient};
use sslf::solver::{slf::Slf, Solver, SolverConfig, SolverKind};

/// The fixture's Gauss–Newton problem on `b`, with an optional UDV ball.
fn problem<'b, B: Backend>(b: &'b B, fx: &Fixture, ball: Option<BallConstraint>) -> Problem<'b, B> {
    let mut p =
        Problem::from_model(b, &fx.matrix, &fx.cfg, fx.layout, Curvature::GaussNewton).unwrap();
    p.constraint = ball;
    p
}

fn gradient_and_loss_match_reference<B: Backend>(b: &B) {
    for (name, fx) in all_fixtures(1) {
        let m = b.upload_matrix(&fx.matrix, &fx.layout).unwrap();
        let theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
        let mut g = b.zeros_params(&fx.layout).unwrap();
        let sq = b.gradient(&m, &fx.layout, &theta, &mut g).unwrap();
        let th = f64s(&fx.theta);
        let want_sq = fx.reference.sq_error(&th);
        assert_close_scalar(&format!("{name} Σe² (gradient)"), sq, want_sq, 1e-5, 1e-6);
        let sq2 = b.sq_error(&m, &fx.layout, &theta).unwrap();
        assert_close_scalar(&format!("{name} Σe² (loss)"), sq2, want_sq, 1e-5, 1e-6);
        let e: Vec<f64> = fx.reference.residuals(&th).iter().map(|x| -x).collect();
        let want = fx.reference.jtv(&th, &e);
        assert_close(
            &format!("{name} gradient"),
            &b.download(&g).unwrap(),
            &want,
            2e-5,
            1e-6,
        );
    }
}

fn curvature_products_match_reference<B: Backend>(b: &B) {
    for (name, fx) in all_fixtures(2) {
        let m = b.upload_matrix(&fx.matrix, &fx.layout).unwrap();
        let theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
        let v = b.upload_params(&fx.layout, &fx.v).unwrap();
        let mut out = b.zeros_params(&fx.layout).unwrap();
        let (th, vv) = (f64s(&fx.theta), f64s(&fx.v));
        for (curv, want) in [
            (Curvature::GaussNewton, fx.reference.gn_data(&th, &vv)),
            (Curvature::Hessian, fx.reference.hess_data(&th, &vv)),
        ] {
            b.curvature_product(&m, &fx.layout, &theta, &v, &mut out, curv)
                .unwrap();
            assert_close(
                &format!("{name} {curv:?} product"),
                &b.download(&out).unwrap(),
                &want,
                2e-5,
                1e-6,
            );
        }
    }
}

fn gauss_newton_is_symmetric_and_psd<B: Backend>(b: &B) {
    for (name, fx) in all_fixtures(3) {
        let m = b.upload_matrix(&fx.matrix, &fx.layout).unwrap();
        let theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
        let (v, w) = (
            b.upload_params(&fx.layout, &fx.v).unwrap(),
            b.upload_params(&fx.layout, &fx.w).unwrap(),
        );
        let mut gv = b.zeros_params(&fx.layout).unwrap();
        let mut gw = b.zeros_params(&fx.layout).unwrap();
        b.curvature_product(&m, &fx.layout, &theta, &v, &mut gv, Curvature::GaussNewton)
            .unwrap();
        b.curvature_product(&m, &fx.layout, &theta, &w, &mut gw, Curvature::GaussNewton)
            .unwrap();
        let (wgv, vgw) = (b.dot(&w, &gv).unwrap(), b.dot(&v, &gw).unwrap());
        assert_close_scalar(&format!("{name} wᵀGv = vᵀGw"), wgv, vgw, 1e-4, 1e-4);
        assert!(b.dot(&v, &gv).unwrap() >= 0.0, "{name}: vᵀGv < 0");
        assert!(b.dot(&w, &gw).unwrap() >= 0.0, "{name}: wᵀGw < 0");
    }
}

fn evaluation_matches_reference<B: Backend>(b: &B) {
    for (name, fx) in all_fixtures(4) {
        let e = b.upload_entries(&fx.ratings, &fx.layout).unwrap();
        let theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
        let clip = (1.0, 4.0);
        let s = b.evaluate(&e, &fx.layout, &theta, clip).unwrap();
        let th = f64s(&fx.theta);
        let r = fx.reference.residuals(&th);
        let n = r.len() as f64;
        let rmse = (r.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
        let mae = r.iter().map(|e| e.abs()).sum::<f64>() / n;
        let rc: Vec<f64> = (0..r.len())
            .map(|k| {
                fx.ratings.values[k] as f64
                    - fx.reference
                        .predict(&th, k)
                        .clamp(clip.0 as f64, clip.1 as f64)
            })
            .collect();
        let rmse_c = (rc.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
        assert_eq!(s.count, fx.ratings.nnz() as u64);
        assert_close_scalar(&format!("{name} rmse"), s.rmse(), rmse, 1e-5, 0.0);
        assert_close_scalar(&format!("{name} mae"), s.mae(), mae, 1e-5, 0.0);
        assert_close_scalar(
            &format!("{name} clipped rmse"),
            s.rmse_clipped(),
            rmse_c,
            1e-5,
            0.0,
        );
    }
}

fn vector_ops_match_host<B: Backend>(b: &B) {
    let n = 70_001; // not a multiple of any workgroup size
    let x: Vec<f32> = (0..n)
        .map(|k| ((k * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let y: Vec<f32> = (0..n)
        .map(|k| ((k * 104_729) % 997) as f32 / 300.0 - 1.5)
        .collect();
    let d: Vec<f32> = (0..n).map(|k| (k % 13) as f32 / 13.0).collect();
    let (xv, yv, dv) = (
        b.upload(&x).unwrap(),
        b.upload(&y).unwrap(),
        b.upload(&d).unwrap(),
    );
    let dot: f64 = x.iter().zip(&y).map(|(a, c)| *a as f64 * *c as f64).sum();
    assert_close_scalar("dot", b.dot(&xv, &yv).unwrap(), dot, 1e-5, 1e-3);
    let wdot: f64 = (0..n)
        .map(|k| d[k] as f64 * x[k] as f64 * y[k] as f64)
        .sum();
    assert_close_scalar("wdot", b.wdot(&dv, &xv, &yv).unwrap(), wdot, 1e-5, 1e-3);
    let nrm: f64 = x[100..60_100].iter().map(|a| (*a as f64).powi(2)).sum();
    assert_close_scalar(
        "norm_sq_range",
        b.norm_sq_range(&xv, 100..60_100).unwrap(),
        nrm,
        1e-5,
        0.0,
    );

    let mut out = b.zeros(n).unwrap();
    b.copy(&yv, &mut out).unwrap();
    b.axpy(0.5, &xv, &mut out).unwrap();
    b.xpby(&xv, -2.0, &mut out).unwrap(); // out = x − 2(y + 0.5x) = −2y
    b.mul_add(&dv, &xv, &mut out).unwrap(); // + d⊙x
    b.scale_range(&mut out, 10..20, 3.0).unwrap();
    b.clamp_min_range(&mut out, 30_000..40_000, 0.0).unwrap();
    let mut want: Vec<f64> = (0..n)
        .map(|k| -2.0 * y[k] as f64 + d[k] as f64 * x[k] as f64)
        .collect();
    for w in &mut want[10..20] {
        *w *= 3.0;
    }
    for w in &mut want[30_000..40_000] {
        *w = w.max(0.0);
    }
    assert_close(
        "vector chain",
        &b.download(&out).unwrap(),
        &want,
        1e-6,
        1e-6,
    );

    let mut o2 = b.zeros(n).unwrap();
    b.waxpy(0.25, &xv, &yv, &mut o2).unwrap();
    let want: Vec<f64> = (0..n).map(|k| y[k] as f64 + 0.25 * x[k] as f64).collect();
    assert_close("waxpy", &b.download(&o2).unwrap(), &want, 1e-6, 1e-6);
    b.fill(&mut o2, 1.5).unwrap();
    b.scale(2.0, &mut o2).unwrap();
    assert!(b.download(&o2).unwrap().iter().all(|&v| v == 3.0));

    // Adam against a host step.
    let mut th = b.upload(&y).unwrap();
    let mut m1 = b.zeros(n).unwrap();
    let mut m2 = b.zeros(n).unwrap();
    let h = AdamHyper {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        c1: 10.0,
        c2: 1000.0,
    };
    b.adam_step(&mut th, &xv, &mut m1, &mut m2, h).unwrap();
    let want: Vec<f64> = (0..n)
        .map(|k| {
            let g = x[k] as f64;
            let (m, v) = (0.1 * g, 0.001 * g * g);
            y[k] as f64 - 0.01 * (10.0 * m) / ((1000.0 * v).sqrt() + 1e-8)
        })
        .collect();
    assert_close("adam", &b.download(&th).unwrap(), &want, 1e-5, 1e-5);
}

fn cg_solves_a_damped_gauss_newton_system<B: Backend>(b: &B) {
    let fx = fixture(ModelKind::Lf, true, Regularization::PerEntry, 5);
    let p = problem(b, &fx, None);
    let theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
    let rhs = b.upload_params(&fx.layout, &fx.v).unwrap();
    let mut x = p.zeros().unwrap();
    let mut cg = ConjugateGradient::new(b, &rhs).unwrap();
    let gamma = 1.0f32;
    let mut apply = |v: &B::Vector, out: &mut B::Vector| -> sslf::Result<()> {
        p.curvature_product(&theta, v, out)?;
        b.axpy(gamma, v, out)
    };
    let lim = CgLimits {
        max_iters: 500,
        rel_tol: 1e-4,
        stall: false,
    };
    let out = cg
        .solve(b, &mut apply, None, &rhs, &mut x, false, lim)
        .unwrap();
    assert_eq!(out.stop, sslf::solver::cg::CgStop::Converged, "{out:?}");
    // Check A x = b with the f64 reference operator.
    let (th, xs) = (f64s(&fx.theta), f64s(&b.download(&x).unwrap()));
    let mut ax = fx.reference.gn_data(&th, &xs);
    for k in 0..ax.len() {
        ax[k] += (fx.reference.reg[k] + gamma as f64) * xs[k];
    }
    assert_close("A·x = b", &fx.v, &ax, 1e-3, 1e-3);
}

fn projection_lands_in_the_ball_and_is_idempotent<B: Backend>(b: &B) {
    let fx = fixture(ModelKind::Udv, false, Regularization::PerEntry, 6);
    let ball = BallConstraint {
        alpha_u: 1.0,
        alpha_v: 0.5,
        signed_d: false,
    };
    let p = problem(b, &fx, Some(ball));
    let mut th = fx.theta.clone();
    th[fx.layout.d_off()] = -0.3;
    let mut theta = b.upload_params(&fx.layout, &th).unwrap();
    p.project(&mut theta).unwrap();
    let once = b.download(&theta).unwrap();
    let l = &fx.layout;
    let nu: f64 = once[l.p_off()..l.q_off()]
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum();
    let nv: f64 = once[l.q_off()..l.d_off()]
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum();
    assert!(nu.sqrt() <= 1.0 + 1e-5, "‖U‖ = {}", nu.sqrt());
    assert!(nv.sqrt() <= 0.5 + 1e-5, "‖V‖ = {}", nv.sqrt());
    assert!(
        (nu.sqrt() - 1.0).abs() < 1e-4,
        "U was outside, so it lands on the sphere"
    );
    assert_eq!(once[l.d_off()], 0.0, "d is clipped at 0");
    p.project(&mut theta).unwrap();
    let twice = b.download(&theta).unwrap();
    assert_close("idempotent", &twice, &f64s(&once), 1e-6, 0.0);
}

fn training_is_bitwise_deterministic<B: Backend>(b: &B) {
    for kind in [ModelKind::Lf, ModelKind::Udv] {
        let fx = fixture(kind, kind == ModelKind::Lf, Regularization::PerEntry, 7);
        let run = || {
            let p = problem(b, &fx, None);
            let cfg = SolverConfig {
                name: SolverKind::Sslf,
                ..Default::default()
            };
            let mut s = Slf::new(&cfg, &p).unwrap();
            let mut theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
            for _ in 0..3 {
                s.next_iter(&p, &mut theta).unwrap();
            }
            b.download(&theta).unwrap()
        };
        let (a, c) = (run(), run());
        assert!(
            a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{kind:?}: two runs differ"
        );
    }
}

fn slf_epochs_lower_the_loss<B: Backend>(b: &B) {
    for (name, fx) in all_fixtures(8) {
        let p = problem(b, &fx, None);
        let mut theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
        let before = p.loss(&theta).unwrap();
        assert_close_scalar(
            &format!("{name} E"),
            before,
            fx.reference.loss(&f64s(&fx.theta)),
            1e-5,
            1e-6,
        );
        // LM may reject a first step from a random point, but never raises E, and lowers it
        // within a few epochs as γ grows.
        let mut s = Slf::new(&SolverConfig::default(), &p).unwrap();
        let mut last = before;
        for _ in 0..5 {
            let rep = s.next_iter(&p, &mut theta).unwrap();
            // E from a gradient pass and from a loss pass may differ in the last bits.
            assert!(
                rep.loss <= last * (1.0 + 1e-12),
                "{name}: {rep:?} raised E from {last}"
            );
            assert!(rep.cg_iters > 0);
            last = rep.loss;
        }
        assert!(
            last < 0.99 * before,
            "{name}: E went from {before} to {last}"
        );
    }
}

/// The reference block of M = B + γI + c·B² (B = G + D) over `coords`, from the f64 Jacobian.
fn reference_block(fx: &Fixture, th: &[f64], coords: &[usize], shift: Shift) -> Vec<Vec<f64>> {
    let w = coords.len();
    let mut g = vec![vec![0.0; w]; w];
    for k in 0..fx.ratings.nnz() {
        let row: Vec<(usize, f64)> = fx
            .reference
            .jrow(th, k)
            .into_iter()
            .filter_map(|(j, x)| coords.iter().position(|&c| c == j).map(|p| (p, x)))
            .collect();
        for &(a, xa) in &row {
            for &(b, xb) in &row {
                g[a][b] += xa * xb;
            }
        }
    }
    for (a, &c) in coords.iter().enumerate() {
        g[a][a] += fx.reference.reg[c];
    }
    let (gamma, c) = (shift.gamma as f64, shift.c as f64);
    let mut m = g.clone();
    for a in 0..w {
        for b in 0..w {
            m[a][b] += c * (0..w).map(|l| g[a][l] * g[l][b]).sum::<f64>();
        }
        m[a][a] += gamma;
    }
    m
}

/// M⁻¹v on sampled rows (and the d coordinates) against a dense f64 solve of each block.
fn preconditioner_apply_matches_dense_block_inverse<B: Backend>(b: &B) {
    for (name, fx) in all_fixtures(9) {
        let l = &fx.layout;
        let p = problem(b, &fx, None);
        let theta = b.upload_params(l, &fx.theta).unwrap();
        let v = b.upload_params(l, &fx.v).unwrap();
        let th = f64s(&fx.theta);
        for (kind, sam) in [
            (PrecondKind::Jacobi, false),
            (PrecondKind::BlockJacobi, false),
            (PrecondKind::BlockJacobi, true),
        ] {
            let shift = Shift {
                gamma: 0.5,
                c: if sam { 0.01 } else { 0.0 },
            };
            let mut pc = p.precond_new(kind, sam).unwrap();
            let got_kind = b.precond_kind(&pc);
            p.precond_build(&theta, shift, &mut pc).unwrap();
            let mut z = p.zeros().unwrap();
            p.precond_apply(&pc, &v, &mut z).unwrap();
            let z = b.download(&z).unwrap();
            // Sampled rows: the first, an empty one, a middle one, the last, of each side.
            let mut blocks: Vec<Vec<usize>> = Vec::new();
            for (users, n, empty) in [(true, l.n_users, 7), (false, l.n_items, 11)] {
                for r in [0, empty, n / 2, n - 1] {
                    let (fo, bo) = row_coords(l, users, r);
                    let mut c: Vec<usize> = (fo..fo + l.rank).collect();
                    c.extend(bo);
                    blocks.push(c);
                }
            }
            if l.kind == ModelKind::Udv {
                blocks.extend((0..l.rank).map(|k| vec![l.d_off() + k]));
            }
            for coords in blocks {
                let units: Vec<Vec<usize>> = if got_kind == PrecondKind::Jacobi || coords.len() == 1
                {
                    coords.iter().map(|&c| vec![c]).collect()
                } else {
                    vec![coords]
                };
                for cs in units {
                    let m = reference_block(&fx, &th, &cs, shift);
                    let w = cs.len();
                    let mat = nalgebra::DMatrix::from_fn(w, w, |i, j| m[i][j]);
                    let rhs = nalgebra::DVector::from_fn(w, |i, _| fx.v[cs[i]] as f64);
                    let want = mat.lu().solve(&rhs).expect("M is invertible");
                    let got: Vec<f32> = cs.iter().map(|&c| z[c]).collect();
                    assert_close(
                        &format!(
                            "{name} {got_kind:?} (asked {kind:?}, sam {sam}) at {}",
                            cs[0]
                        ),
                        &got,
                        want.as_slice(),
                        2e-3,
                        1e-5,
                    );
                }
            }
        }
    }
}

/// An ill-conditioned system (rows of very different scales): PCG needs fewer iterations than CG.
fn pcg_needs_fewer_iterations_than_cg<B: Backend>(b: &B) {
    let fx = fixture(ModelKind::Lf, true, Regularization::PerEntry, 10);
    let l = fx.layout;
    let mut th = fx.theta.clone();
    for i in 0..l.n_items {
        let s = [0.05f32, 1.0, 8.0][i % 3];
        for x in &mut th[l.q_off() + i * l.rank..l.q_off() + (i + 1) * l.rank] {
            *x *= s;
        }
    }
    let p = problem(b, &fx, None);
    let theta = b.upload_params(&l, &th).unwrap();
    let rhs = b.upload_params(&l, &fx.v).unwrap();
    let gamma = 1e-3f32;
    let lim = CgLimits {
        max_iters: 3000,
        rel_tol: 1e-5,
        stall: false,
    };
    let mut iters = Vec::new();
    for kind in [
        PrecondKind::None,
        PrecondKind::Jacobi,
        PrecondKind::BlockJacobi,
    ] {
        let mut pc = p.precond_new(kind, false).unwrap();
        p.precond_build(&theta, Shift { gamma, c: 0.0 }, &mut pc)
            .unwrap();
        let mut apply = |v: &B::Vector, out: &mut B::Vector| -> sslf::Result<()> {
            p.curvature_product(&theta, v, out)?;
            b.axpy(gamma, v, out)
        };
        let mut pre = |r: &B::Vector, z: &mut B::Vector| p.precond_apply(&pc, r, z);
        let mut x = p.zeros().unwrap();
        let mut cg = ConjugateGradient::new(b, &rhs).unwrap();
        let out = cg
            .solve(b, &mut apply, Some(&mut pre), &rhs, &mut x, false, lim)
            .unwrap();
        assert_eq!(
            out.stop,
            sslf::solver::cg::CgStop::Converged,
            "{kind:?}: {out:?}"
        );
        iters.push(out.iters);
    }
    assert!(
        iters[2] < iters[1] && iters[1] < iters[0],
        "iterations none/jacobi/block_jacobi: {iters:?}"
    );
    assert!(
        iters[2] * 3 < iters[0],
        "block_jacobi gains little: {iters:?}"
    );
}

/// The SAM scales: per-row ρ/‖g_row‖ and the ASAM metric (|θ| + η)², against host f64 loops.
fn sam_scales_match_reference<B: Backend>(b: &B) {
    for (name, fx) in all_fixtures(11) {
        let l = &fx.layout;
        let g = b.upload_params(l, &fx.v).unwrap();
        let mut out = b.zeros_params(l).unwrap();
        let rho = 0.3f32;
        b.row_scale(l, &g, rho, &mut out).unwrap();
        let mut want = vec![0f64; l.len()];
        let mut rows: Vec<Vec<usize>> = Vec::new();
        for (users, n) in [(true, l.n_users), (false, l.n_items)] {
            for r in 0..n {
                let (fo, bo) = row_coords(l, users, r);
                let mut c: Vec<usize> = (fo..fo + l.rank).collect();
                c.extend(bo);
                rows.push(c);
            }
        }
        if l.kind == ModelKind::Udv {
            rows.push((l.d_off()..l.d_off() + l.rank).collect());
        }
        for c in &rows {
            let n: f64 = c.iter().map(|&k| (fx.v[k] as f64).powi(2)).sum();
            for &k in c {
                want[k] = rho as f64 / n.sqrt();
            }
        }
        assert_close(
            &format!("{name} row scale"),
            &b.download(&out).unwrap(),
            &want,
            1e-5,
            0.0,
        );
        let th = b.upload_params(l, &fx.theta).unwrap();
        b.abs_shift_sq(&th, 0.01, &mut out).unwrap();
        let want: Vec<f64> = fx
            .theta
            .iter()
            .map(|&x| (x.abs() as f64 + 0.01).powi(2))
            .collect();
        assert_close(
            &format!("{name} ASAM metric"),
            &b.download(&out).unwrap(),
            &want,
            1e-6,
            0.0,
        );
    }
}

/// Every SAM form and scale trains deterministically and lowers E on every backend.
fn sam_forms_train_deterministically<B: Backend>(b: &B) {
    use sslf::solver::{SamAccept, SamMode, SamScale};
    let fx = fixture(ModelKind::Lf, true, Regularization::PerEntry, 12);
    for sam in [SamMode::Curvature, SamMode::Ascent] {
        for scale in [SamScale::Global, SamScale::Row, SamScale::Adaptive] {
            let run = || {
                let p = problem(b, &fx, None);
                let cfg = SolverConfig {
                    name: SolverKind::Sslf,
                    sam,
                    sam_scale: scale,
                    sam_accept: SamAccept::Sam,
                    rho: Some(0.05),
                    rho_warmup: 2,
                    ..Default::default()
                };
                let mut s = Slf::new(&cfg, &p).unwrap();
                let mut theta = b.upload_params(&fx.layout, &fx.theta).unwrap();
                let before = p.loss(&theta).unwrap();
                for _ in 0..4 {
                    s.next_iter(&p, &mut theta).unwrap();
                }
                let after = p.loss(&theta).unwrap();
                assert!(after < before, "{sam:?}/{scale:?}: E {before} → {after}");
                b.download(&theta).unwrap()
            };
            let (x, y) = (run(), run());
            assert!(
                x.iter().zip(&y).all(|(a, c)| a.to_bits() == c.to_bits()),
                "{sam:?}/{scale:?}: two runs differ"
            );
        }
    }
}

backend_suite!(
    sam_scales_match_reference,
    sam_forms_train_deterministically,
    preconditioner_apply_matches_dense_block_inverse,
    pcg_needs_fewer_iterations_than_cg,
    gradient_and_loss_match_reference,
    curvature_products_match_reference,
    gauss_newton_is_symmetric_and_psd,
    evaluation_matches_reference,
    vector_ops_match_host,
    cg_solves_a_damped_gauss_newton_system,
    projection_lands_in_the_ball_and_is_idempotent,
    training_is_bitwise_deterministic,
    slf_epochs_lower_the_loss,
);
