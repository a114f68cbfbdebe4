//! A run across ranks, the ranks as threads of this process (`comm::local::LocalComm`): the data
//! routes give each rank exactly one reader's entries for its users, and training sharded by
//! users matches one process on every backend. tests/mpi.rs runs the same under mpirun.

mod common;

use proptest::prelude::*;
use sslf::backend::Backend;
use sslf::comm::local::LocalComm;
use sslf::config::{DataConfig, TrainConfig};
use sslf::data::read::DuplicatePolicy;
use sslf::data::Ratings;
use sslf::experiment::data::{build, prepare_part, LoadHooks, Prepared};
use sslf::experiment::observe::Observer;
use sslf::experiment::{train_on, EpochRecord, Part, Trained};
use std::ops::Range;

/// Runs `f` on `n` ranks (threads), returning each rank's result in rank order.
fn on_ranks<T: Send>(n: usize, f: impl Fn(&LocalComm) -> T + Sync) -> Vec<T> {
    let comms = LocalComm::group(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = comms.iter().map(|c| s.spawn(|| f(c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `r`'s entries whose user is in `users`, in order.
fn of_users(r: &Ratings, users: &Range<usize>) -> Ratings {
    let idx: Vec<usize> = (0..r.nnz())
        .filter(|&k| users.contains(&(r.users[k] as usize)))
        .collect();
    r.select(&idx)
}

/// Each rank's share is one reader's data cut to its users; the users cover every user once.
fn assert_shares(one: &Prepared, shares: &[(Prepared, Range<usize>)]) {
    let mut next = 0;
    for (k, (p, users)) in shares.iter().enumerate() {
        assert_eq!(users.start, next, "rank {k}: ranges are contiguous");
        next = users.end;
        assert_eq!(p.users, one.users, "rank {k}: user ids");
        assert_eq!(p.items, one.items, "rank {k}: item ids");
        assert_eq!(p.train, of_users(&one.train, users), "rank {k}: train");
        assert_eq!(p.valid, of_users(&one.valid, users), "rank {k}: validation");
        assert_eq!(p.test, of_users(&one.test, users), "rank {k}: test");
    }
    assert_eq!(next, one.n_users());
}

fn share(cfg: &DataConfig, n: usize) -> Vec<(Prepared, Range<usize>)> {
    on_ranks(n, |c| prepare_part(cfg, &LoadHooks::quiet(), c).unwrap())
}

/// A rating file of `lines`: (user, item, rating) with ids drawn small enough to repeat pairs.
fn text_of(lines: &[(u8, u8, u8)], header: bool) -> String {
    let mut t = String::new();
    if header {
        t.push_str("user\titem\trating\n");
    }
    for &(u, i, r) in lines {
        t.push_str(&format!("u{u}\ti{i}\t{}\n", 1 + r % 5));
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// One file read in byte ranges by 2–4 ranks: with duplicates kept last, a header or not, a
    /// test and a validation split.
    #[test]
    fn byte_ranges_give_each_rank_one_readers_entries(
        lines in prop::collection::vec((0u8..12, 0u8..9, 0u8..5), 8..120),
        header in any::<bool>(),
        n in 2usize..5,
        test_fraction in prop::sample::select(vec![0.0, 0.2]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.tsv");
        std::fs::write(&path, text_of(&lines, header)).unwrap();
        let cfg = DataConfig {
            path: Some(path),
            duplicates: DuplicatePolicy::KeepLast,
            test_fraction,
            validation_fraction: 0.25,
            ..DataConfig::default()
        };
        let one = build(&cfg, &LoadHooks::quiet()).unwrap();
        assert_shares(&one, &share(&cfg, n));
    }
}

#[test]
fn train_and_test_files_in_byte_ranges_match_one_reader() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<(u8, u8, u8)> = (0..400u32)
        .map(|k| ((k * 7 % 53) as u8, (k * 13 % 31) as u8, (k % 5) as u8))
        .collect();
    let (tr, te) = lines.split_at(300);
    let (a, b) = (dir.path().join("train.tsv"), dir.path().join("test.tsv"));
    std::fs::write(&a, text_of(tr, false)).unwrap();
    std::fs::write(&b, text_of(te, true)).unwrap();
    let cfg = DataConfig {
        train: Some(a),
        test: Some(b),
        duplicates: DuplicatePolicy::KeepLast,
        validation_fraction: 0.1,
        ..DataConfig::default()
    };
    let one = build(&cfg, &LoadHooks::quiet()).unwrap();
    for n in [2, 3] {
        assert_shares(&one, &share(&cfg, n));
    }
}

#[test]
fn shards_read_by_their_ranks_match_one_reader_of_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig::from_json("(test)", "{}", &[]).unwrap();
    let parts =
        sslf::experiment::data::shard(&cfg.data, 3, dir.path(), &LoadHooks::quiet()).unwrap();
    assert_eq!(parts.files.len(), 3);
    let sharded = DataConfig {
        synthetic: None,
        shards: Some(dir.path().join("part-{rank}.tsv")),
        ..cfg.data.clone()
    };
    let one = build(&sharded, &LoadHooks::quiet()).unwrap();
    assert_shares(&one, &share(&sharded, 3));
    // Reading the parts in order gives the input's entries (users renumbered by part).
    let whole = build(&cfg.data, &LoadHooks::quiet()).unwrap();
    assert_eq!(
        one.train.nnz() + one.valid.nnz() + one.test.nnz(),
        whole.train.nnz() + whole.valid.nnz() + whole.test.nnz()
    );
}

struct Quiet;
impl Observer for Quiet {
    fn epoch(&mut self, _: &EpochRecord) -> sslf::Result<()> {
        Ok(())
    }
}

/// `cfg` trained on `n` ranks of `backend`, every rank's result.
fn train_ranks<B: Backend>(backend: &B, cfg: &TrainConfig, n: usize) -> Vec<Trained> {
    on_ranks(n, |c| {
        let (data, users) = prepare_part(&cfg.data, &LoadHooks::quiet(), c).unwrap();
        let part = Part { comm: c, users };
        train_on(backend, &part, cfg, &data, &mut Quiet, None).unwrap()
    })
}

fn config(extra: &str) -> TrainConfig {
    let base = r#"{
        "data": {"synthetic": {"n_users": 300, "n_items": 120, "nnz": 6000, "rank": 4,
                               "noise": 0.1, "seed": 3},
                 "test_fraction": 0.2, "validation_fraction": 0.1},
        "model": {"rank": 4, "lambda": 0.02},
        "train": {"max_epochs": 12, "patience": 5, "seed": 2}
    }"#;
    let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
    let e: serde_json::Value = serde_json::from_str(extra).unwrap();
    for (section, fields) in e.as_object().unwrap() {
        for (k, x) in fields.as_object().unwrap() {
            v[section][k] = x.clone();
        }
    }
    TrainConfig::from_json("(test)", &v.to_string(), &[]).unwrap()
}

/// Each configuration on 1 rank and on 3: the same test RMSE within 1e-4, the same whole θ on
/// every rank, and the same bits on a second run.
fn check_matches_one<B: Backend>(backend: &B, extra: &str) {
    let cfg = config(extra);
    let one = train_ranks(backend, &cfg, 1).remove(0);
    let three = train_ranks(backend, &cfg, 3);
    let again = train_ranks(backend, &cfg, 3);
    let rmse = |t: &Trained| t.summary.test.as_ref().unwrap().rmse;
    for (k, t) in three.iter().enumerate() {
        assert_eq!(t.summary.processes, 3);
        assert_eq!(
            t.theta.len(),
            one.theta.len(),
            "{extra}: rank {k} holds the whole θ"
        );
        assert_eq!(
            t.theta, three[0].theta,
            "{extra}: rank {k} agrees with rank 0"
        );
        assert_eq!(t.summary.n_test, one.summary.n_test);
        assert_eq!(t.summary.train_stats, one.summary.train_stats, "{extra}");
    }
    assert_eq!(
        three[0].theta, again[0].theta,
        "{extra}: the same bits every run"
    );
    let (a, b) = (rmse(&one), rmse(&three[0]));
    assert!((a - b).abs() < 1e-4, "{extra}: one {a}, three {b}");
}

const CASES: [&str; 6] = [
    r#"{"solver": {"name": "slf", "preconditioner": "block_jacobi"}}"#,
    r#"{"solver": {"name": "slf", "preconditioner": "jacobi", "damping": "levenberg_marquardt"}}"#,
    r#"{"solver": {"name": "sslf", "rho": 0.05, "sam_scale": "adaptive"}}"#,
    r#"{"solver": {"name": "adam", "lr": 0.02, "rho": 0.02, "sam_scale": "row"}}"#,
    r#"{"model": {"kind": "udv", "lambda": 0.0}, "solver": {"name": "slf"}}"#,
    r#"{"model": {"biases": false}, "solver": {"name": "gd", "lr": 0.002}}"#,
];

#[test]
fn sharded_training_matches_one_process_on_the_cpu() {
    let cpu = sslf::backend::cpu::CpuBackend::new(1).unwrap();
    for extra in CASES {
        check_matches_one(&cpu, extra);
    }
}

#[test]
fn sharded_training_matches_one_process_on_the_gpu() {
    let Some(gpu) = common::gpu() else { return };
    // The GPU's jacobi build inverts in the kernel that sums: refused across processes (below).
    for extra in CASES.iter().filter(|c| !c.contains(r#""jacobi""#)) {
        check_matches_one(gpu, extra);
    }
    let cfg = config(CASES[1]);
    let errs = on_ranks(2, |c| {
        let (data, users) = prepare_part(&cfg.data, &LoadHooks::quiet(), c).unwrap();
        let part = Part { comm: c, users };
        train_on(gpu, &part, &cfg, &data, &mut Quiet, None)
            .err()
            .map(|e| e.to_string())
    });
    for e in errs {
        assert!(e.unwrap().contains("use block_jacobi or none"));
    }
}

#[test]
fn sgd_is_refused_across_processes() {
    let cpu = sslf::backend::cpu::CpuBackend::new(1).unwrap();
    let cfg = config(r#"{"solver": {"name": "sgd"}}"#);
    let errs = on_ranks(2, |c| {
        let (data, users) = prepare_part(&cfg.data, &LoadHooks::quiet(), c).unwrap();
        let part = Part { comm: c, users };
        train_on(&cpu, &part, &cfg, &data, &mut Quiet, None)
            .err()
            .map(|e| e.to_string())
    });
    for e in errs {
        assert!(e.unwrap().contains("one process only"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    /// A process's initial rows, streamed, are the whole initial θ's, bit for bit.
    #[test]
    fn init_part_is_the_slice_of_the_whole_init(
        udv in any::<bool>(),
        biases in any::<bool>(),
        (n_users, lo, hi) in (1usize..40).prop_flat_map(|m| (Just(m), 0..=m)).prop_flat_map(|(m, a)| (Just(m), Just(a), a..=m)),
        n_items in 1usize..30,
        rank in 1usize..6,
        seed in 0u64..1000,
    ) {
        use sslf::model::{ModelConfig, ModelKind};
        let model = ModelConfig {
            kind: if udv { ModelKind::Udv } else { ModelKind::Lf },
            rank,
            biases,
            ..ModelConfig::default()
        };
        let whole = model.layout(n_users, n_items, 3.0);
        let uc: Vec<u32> = (0..n_users).map(|u| (u % 3) as u32).collect();
        let ic: Vec<u32> = (0..n_items).map(|i| (i % 4) as u32).collect();
        let all = model.init(&whole, seed, &uc, &ic);
        let part = model.init_part(&whole, seed, lo..hi, &uc[lo..hi], &ic);
        let local = sslf::model::Layout { n_users: hi - lo, ..whole };
        let mut want = Vec::new();
        want.extend_from_slice(&all[lo * rank..hi * rank]);
        for r in whole.shared_ranges() {
            // The shared blocks follow in θ's order; the user biases sit between Q and c.
            if whole.has_biases() && r.start == whole.c_off() {
                want.extend_from_slice(&all[whole.b_off() + lo..whole.b_off() + hi]);
            }
            want.extend_from_slice(&all[r]);
        }
        prop_assert_eq!(want.len(), local.len());
        prop_assert_eq!(part, want);
    }
}
