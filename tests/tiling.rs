//! The CPU backend's 2D tiles change only the order in which entries are visited, never the order
//! in which any sum is added: every gradient, curvature product, loss and evaluation must equal the
//! untiled one to the bit, fused or not, for tiles that cut the rows and columns anywhere, and with
//! or without the curvature passes' side-by-side table of θ and direction rows, and whether the
//! fused passes walk a precomputed tile plan or the rows' cursors, in the portable build or the
//! AVX2 one. The Jacobi preconditioner's build runs the same passes and must agree to the bit too.

mod common;

use common::{cpu, fixture};
use sslf::backend::cpu::{
    auto_tile, plan_pays, plan_pays_for_loss, tiles_pay, CpuBackend, Fusion, PLAN_ROWS,
    TILE_BUDGET_BYTES,
};
use sslf::backend::{Curvature, PrecondKind, Shift, SparseOps};
use sslf::model::{ModelKind, Regularization};

fn backends(fusion: Fusion) -> Vec<(String, CpuBackend)> {
    [
        Some(0),
        Some(1),
        Some(7),
        Some(16),
        Some(64),
        Some(1000),
        None,
    ]
    .into_iter()
    .map(|t| {
        // The untiled pass runs the portable build; every other one the AVX2 build where the
        // CPU has it: the bits must agree across builds too.
        (
            format!("tile {t:?}, {fusion:?}"),
            cpu()
                .with_fusion(fusion)
                .with_tile_items(t)
                .with_avx2(t != Some(0)),
        )
    })
    .chain([(
        "tile Some(16), portable build".to_string(),
        cpu()
            .with_fusion(fusion)
            .with_tile_items(Some(16))
            .with_avx2(false),
    )])
    // Tile plans whose groups of rows cut the fused blocks anywhere.
    .chain(
        [(Some(7), 3), (Some(16), 7), (Some(1), 1)]
            .into_iter()
            .map(|(t, rows)| {
                (
                    format!("tile {t:?}, {fusion:?}, plan groups of {rows}"),
                    cpu()
                        .with_fusion(fusion)
                        .with_tile_items(t)
                        .with_plan_rows(rows),
                )
            }),
    )
    // Curvature passes past the side-by-side table's bound read θ and the direction apart.
    .chain([None, Some(16)].into_iter().map(|t| {
        (
            format!("tile {t:?}, {fusion:?}, no pair table"),
            cpu()
                .with_fusion(fusion)
                .with_tile_items(t)
                .with_pair_limit(0),
        )
    }))
    .collect()
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

#[test]
fn tiled_passes_equal_the_untiled_ones_bitwise() {
    for (kind, biases) in [
        (ModelKind::Lf, true),
        (ModelKind::Lf, false),
        (ModelKind::Udv, false),
    ] {
        let fx = fixture(kind, biases, Regularization::PerEntry, 3);
        let l = &fx.layout;
        for fusion in [Fusion::Always, Fusion::Never] {
            let all = backends(fusion);
            let (_, base) = &all[0];
            let m0 = base.upload_matrix(&fx.matrix, l).unwrap();
            assert!(m0.tile_plan().is_none());
            let mut g0 = vec![0f32; l.len()];
            let sq0 = base.gradient(&m0, l, &fx.theta, &mut g0).unwrap();
            let loss0 = base.sq_error(&m0, l, &fx.theta).unwrap();
            let mut gn0 = vec![0f32; l.len()];
            let mut h0 = vec![0f32; l.len()];
            base.curvature_product(&m0, l, &fx.theta, &fx.v, &mut gn0, Curvature::GaussNewton)
                .unwrap();
            base.curvature_product(&m0, l, &fx.theta, &fx.v, &mut h0, Curvature::Hessian)
                .unwrap();
            // The Jacobi preconditioner, seen through its apply (z = M⁻¹v, coordinate-wise).
            let jacobi = |b: &CpuBackend, m: &_| {
                let reg: Vec<f32> = fx.v.iter().map(|x| 0.1 + x.abs()).collect();
                let shift = Shift { gamma: 0.5, c: 0.0 };
                let mut pc = b.precond_new(m, l, PrecondKind::Jacobi, false).unwrap();
                b.precond_build(m, l, &fx.theta, &reg, shift, &mut pc)
                    .unwrap();
                let mut z = vec![0f32; l.len()];
                b.precond_apply(&pc, l, &fx.v, &mut z).unwrap();
                z
            };
            let j0 = jacobi(base, &m0);
            for (name, b) in &all[1..] {
                let what = format!("{kind:?} biases={biases} {name}");
                let m = b.upload_matrix(&fx.matrix, l).unwrap();
                // A set tile is walked by a plan in the fused passes (tiles of 1,000 hold every
                // column of the fixture and so do not count as tiles by default).
                if fusion == Fusion::Always && name.contains("Some") {
                    assert!(m.tile_plan().is_some(), "{what}: no tile plan");
                }
                let mut g = vec![0f32; l.len()];
                let sq = b.gradient(&m, l, &fx.theta, &mut g).unwrap();
                assert!(
                    g.iter().zip(&g0).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{what}: gradient differs"
                );
                assert!(same(sq, sq0), "{what}: Σe² {sq} vs {sq0}");
                let loss = b.sq_error(&m, l, &fx.theta).unwrap();
                assert!(same(loss, loss0), "{what}: loss {loss} vs {loss0}");
                let ev = |b: &CpuBackend| {
                    let e = b.upload_entries(&fx.ratings, l).unwrap();
                    b.evaluate(&e, l, &fx.theta, (1.0, 5.0)).unwrap()
                };
                let (e, e0) = (ev(b), ev(base));
                assert_eq!(e.count, e0.count, "{what}");
                for (x, y) in [
                    (e.sse, e0.sse),
                    (e.sae, e0.sae),
                    (e.sse_clipped, e0.sse_clipped),
                    (e.sae_clipped, e0.sae_clipped),
                ] {
                    assert!(same(x, y), "{what}: evaluation {x} vs {y}");
                }
                let j = jacobi(b, &m);
                assert!(
                    j.iter().zip(&j0).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{what}: Jacobi preconditioner differs"
                );
                for (curv, want) in [(Curvature::GaussNewton, &gn0), (Curvature::Hessian, &h0)] {
                    let mut out = vec![0f32; l.len()];
                    b.curvature_product(&m, l, &fx.theta, &fx.v, &mut out, curv)
                        .unwrap();
                    assert!(
                        out.iter()
                            .zip(want)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{what}: {curv:?} product differs"
                    );
                }
            }
        }
    }
}

#[test]
fn the_default_tile_fits_the_budget_at_every_rank() {
    for f in [1, 8, 32, 64, 128, 256, 1024] {
        let t = auto_tile(f);
        assert!(t >= 64 && t.is_multiple_of(64), "rank {f}: tile {t}");
        if t > 64 {
            assert!(
                t * (3 * f + 3) * 4 <= TILE_BUDGET_BYTES,
                "rank {f}: tile {t}"
            );
        }
    }
    assert!(auto_tile(32) > auto_tile(128));
}

#[test]
fn default_tiles_are_taken_only_where_they_pay() {
    let t = auto_tile(32);
    // Dense rows: a visit finds ~10 entries.
    assert!(tiles_pay(t, 100_000, 50_000, 20_000_000));
    // Sparse rows, item rows in L3 (8 MB): not tiled.
    assert!(!tiles_pay(t, 1_000_000, 20_000, 20_000_000));
    // Sparse rows, item rows past L3 (20 MB and 80 MB): not tiled either (prefetching gathers
    // beat tiles that find about one entry per visit).
    assert!(!tiles_pay(t, 1_000_000, 50_000, 20_000_000));
    assert!(!tiles_pay(t, 1_000_000, 200_000, 20_000_000));
    // Every other row in one tile: never.
    assert!(!tiles_pay(t, 10, t, 1_000_000));
}

#[test]
fn tile_plans_are_built_only_where_they_pay() {
    let t = auto_tile(32);
    assert!(plan_pays(t, 20_000));
    assert!(plan_pays(t, t + 1));
    // Every item in one tile: never.
    assert!(!plan_pays(t, t));
    // The loss walks it where a tile finds each column twice or more: 8.2 and 3.3 times at 1M
    // users × 20k and 50k items × 20M entries, not 0.8 times at 200k items.
    assert!(plan_pays_for_loss(PLAN_ROWS, 1_000_000, 20_000, 20_000_000));
    assert!(plan_pays_for_loss(PLAN_ROWS, 1_000_000, 50_000, 20_000_000));
    assert!(!plan_pays_for_loss(
        PLAN_ROWS, 1_000_000, 200_000, 20_000_000
    ));
    const { assert!(PLAN_ROWS <= 1 << 16) };
    // By default a matrix gets a plan when the fused passes are on and its items exceed a tile.
    let r = sslf::data::synth::generate(&sslf::data::synth::SynthConfig {
        n_users: 2000,
        n_items: t + 100,
        nnz: 300_000,
        rank: 3,
        ..Default::default()
    });
    let m = sslf::data::Matrix::from_ratings(&r.ratings, r.users.len(), r.items.len());
    let model = sslf::model::ModelConfig {
        rank: 32,
        ..Default::default()
    };
    let l = model.layout(m.n_users(), m.n_items(), 0.0);
    assert!(m.n_items() > t, "{} items", m.n_items());
    let with = cpu()
        .with_fusion(Fusion::Always)
        .upload_matrix(&m, &l)
        .unwrap();
    assert_eq!(with.tile_plan(), Some((PLAN_ROWS, t)));
    let untiled = cpu().with_fusion(Fusion::Always).with_tile_items(Some(0));
    assert!(untiled.upload_matrix(&m, &l).unwrap().tile_plan().is_none());
    let two_pass = cpu().with_fusion(Fusion::Never);
    assert!(two_pass
        .upload_matrix(&m, &l)
        .unwrap()
        .tile_plan()
        .is_none());
}
