//! Serving: every user's top-N and fold-in, through the real binary.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Output;

mod common;

fn sslf(dir: &Path, args: &[&str]) -> Output {
    common::run_sslf(dir, args)
}

fn ok(o: &Output) -> String {
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{t}");
    t
}

/// user → [(item, score)] from `user<TAB>item<TAB>score` lines, in file order.
fn lists(text: &str) -> HashMap<String, Vec<(String, f32)>> {
    let mut m: HashMap<String, Vec<(String, f32)>> = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        m.entry(f[0].to_string())
            .or_default()
            .push((f[1].to_string(), f[2].parse().unwrap()));
    }
    m
}

fn ml100k() -> Option<std::path::PathBuf> {
    let p = std::fs::canonicalize("../shared/data/ml-100k").ok();
    if p.is_none() {
        eprintln!("skipped: ../shared/data/ml-100k is absent");
    }
    p
}

/// Trains configs/ml100k-slf.json into `dir/out`.
fn train_ml100k(dir: &Path, data: &Path) {
    let cfg = std::fs::read_to_string("configs/ml100k-slf.json")
        .unwrap()
        .replace("../shared/data/ml-100k", &data.display().to_string());
    std::fs::write(dir.join("c.json"), cfg).unwrap();
    ok(&sslf(
        dir,
        &["train", "-c", "c.json", "--output", "out", "-q"],
    ));
}

#[test]
fn all_users_top_10_on_ml100k_matches_brute_force_and_leaves_out_training_items() {
    let Some(data) = ml100k() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_ml100k(d, &data);
    ok(&sslf(
        d,
        &[
            "recommend",
            "-m",
            "out/model.safetensors",
            "--all",
            "--top",
            "10",
            "-o",
            "recs.tsv",
        ],
    ));
    let got = lists(&std::fs::read_to_string(d.join("recs.tsv")).unwrap());
    let model = sslf::model::file::ModelFile::load(&d.join("out/model.safetensors")).unwrap();
    assert_eq!(got.len(), model.users.len());
    // No training entry (train.tsv holds the training and validation parts) in any list.
    let train = std::fs::read_to_string(data.join("train.tsv")).unwrap();
    let rated: HashSet<(String, String)> = train
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    for (u, list) in &got {
        assert_eq!(list.len(), 10, "user {u}");
        for (i, _) in list {
            assert!(
                !rated.contains(&(u.clone(), i.clone())),
                "({u}, {i}) was rated"
            );
        }
    }
    // Brute force from the model file's tensors: r̂ = μ + b_u + c_i + p_u·q_i in f64 for every
    // unrated item, sorted.
    let l = model.layout;
    let f = l.rank;
    let mut checked = 0;
    for u in (0..l.n_users).step_by(37) {
        let name = model.users.name(u as u32);
        let mut all: Vec<(f64, usize)> = (0..l.n_items)
            .filter(|&i| {
                !rated.contains(&(name.to_string(), model.items.name(i as u32).to_string()))
            })
            .map(|i| {
                let dot: f64 = (0..f)
                    .map(|k| {
                        model.theta[l.p_off() + u * f + k] as f64
                            * model.theta[l.q_off() + i * f + k] as f64
                    })
                    .sum();
                let s = l.mu as f64
                    + model.theta[l.b_off() + u] as f64
                    + model.theta[l.c_off() + i] as f64
                    + dot;
                (s, i)
            })
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let list = &got[name];
        for (k, (item, score)) in list.iter().enumerate() {
            let (s, i) = all[k];
            assert!(
                (*score as f64 - s).abs() < 1e-4,
                "user {name} rank {k}: {score} vs {s}"
            );
            // Equal items, unless two scores tie to within rounding.
            if model.items.name(i as u32) != item {
                assert!(
                    (all[k].0 - all[k + 1].0).abs() < 1e-5
                        || (all[k].0 - all[k - 1].0).abs() < 1e-5
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 20);
}

#[test]
fn fold_in_round_trip_on_ml100k_recovers_the_users_lists() {
    let Some(data) = ml100k() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_ml100k(d, &data);
    let model = sslf::model::file::ModelFile::load(&d.join("out/model.safetensors")).unwrap();
    // 20 training users, their training-file ratings under new ids.
    let users: Vec<String> = (0..20)
        .map(|k| model.users.name(k * 40).to_string())
        .collect();
    let train = std::fs::read_to_string(data.join("train.tsv")).unwrap();
    let mut r = String::new();
    for line in train.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if users.iter().any(|u| u == f[0]) {
            r.push_str(&format!("new-{}\t{}\t{}\n", f[0], f[1], f[2]));
        }
    }
    std::fs::write(d.join("r.tsv"), r).unwrap();
    std::fs::write(d.join("who.txt"), users.join("\n")).unwrap();
    ok(&sslf(
        d,
        &[
            "recommend",
            "-m",
            "out/model.safetensors",
            "--users",
            "who.txt",
            "-o",
            "own.tsv",
        ],
    ));
    let out = ok(&sslf(
        d,
        &[
            "recommend",
            "-m",
            "out/model.safetensors",
            "--ratings",
            "r.tsv",
            "-o",
            "folded.tsv",
        ],
    ));
    assert!(out.contains("folded in 20 new and 0 known users"), "{out}");
    let own = lists(&std::fs::read_to_string(d.join("own.tsv")).unwrap());
    let folded = lists(&std::fs::read_to_string(d.join("folded.tsv")).unwrap());
    let mut overlap = 0.0;
    for u in &users {
        let a: HashSet<&String> = own[u].iter().map(|x| &x.0).collect();
        let b: HashSet<&String> = folded[&format!("new-{u}")].iter().map(|x| &x.0).collect();
        overlap += a.intersection(&b).count() as f64 / 10.0;
    }
    overlap /= users.len() as f64;
    eprintln!("fold-in round trip: mean top-10 overlap {overlap:.3}");
    assert!(overlap >= 0.8, "mean overlap {overlap}");

    // The same solve as a model file: the users are added.
    ok(&sslf(
        d,
        &[
            "fold-in",
            "-m",
            "out/model.safetensors",
            "-r",
            "r.tsv",
            "-o",
            "m2.safetensors",
        ],
    ));
    let m2 = sslf::model::file::ModelFile::load(&d.join("m2.safetensors")).unwrap();
    assert_eq!(m2.users.len(), model.users.len() + 20);
}

/// A tiny model trained on a file whose user `full` rated every item.
fn tiny(d: &Path) {
    let mut t = String::new();
    for u in 0..30 {
        for i in 0..12 {
            if (u * 7 + i * 3) % 4 != 0 {
                t.push_str(&format!("u{u}\ti{i}\t{}\n", 1 + (u + i) % 5));
            }
        }
    }
    for i in 0..12 {
        t.push_str(&format!("full\ti{i}\t3\n"));
    }
    std::fs::write(d.join("r.tsv"), t).unwrap();
    std::fs::write(
        d.join("c.json"),
        r#"{ "data": { "path": "r.tsv", "test_fraction": 0.0, "validation_fraction": 0.0 }, "model": { "rank": 2 }, "train": { "max_epochs": 3 } }"#,
    )
    .unwrap();
    ok(&sslf(
        d,
        &["train", "-c", "c.json", "--output", "out", "-q"],
    ));
}

#[test]
fn edge_cases_full_users_large_n_unknown_items_and_atomic_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(d);
    // A user who rated every item gets an empty list, said once; N past the item count lists
    // every unrated item.
    let out = ok(&sslf(
        d,
        &[
            "recommend",
            "-m",
            "out/model.safetensors",
            "--all",
            "-n",
            "50",
            "-o",
            "all.tsv",
        ],
    ));
    assert_eq!(out.matches("rated every item").count(), 1, "{out}");
    assert!(out.contains("more than the model's 12 items"), "{out}");
    let all = lists(&std::fs::read_to_string(d.join("all.tsv")).unwrap());
    assert!(!all.contains_key("full"));
    for (u, list) in &all {
        let rated = (0..12)
            .filter(|i| {
                let k: usize = u[1..].parse().unwrap();
                !(k * 7 + i * 3).is_multiple_of(4)
            })
            .count();
        assert_eq!(list.len(), 12 - rated, "{u}");
        assert!(
            list.windows(2).all(|w| w[0].1 >= w[1].1),
            "{u} not best first"
        );
    }
    // Unknown items in the ratings are counted and skipped.
    std::fs::write(
        d.join("new.tsv"),
        "x\ti1\t5\nx\ti2\t1\nx\tnope\t4\nx\tnope2\t4\n",
    )
    .unwrap();
    let o = sslf(
        d,
        &[
            "recommend",
            "-m",
            "out/model.safetensors",
            "--ratings",
            "new.tsv",
            "-n",
            "3",
        ],
    );
    let out = ok(&o);
    assert!(
        out.contains("skipped 2 ratings of 2 items the model does not know"),
        "{out}"
    );
    let l = lists(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(l["x"].len(), 3);
    assert!(l["x"].iter().all(|(i, _)| i != "i1" && i != "i2"));
    // A failing run leaves an existing output as it was and no temporary file.
    std::fs::write(d.join("keep.tsv"), "precious\n").unwrap();
    std::fs::write(d.join("who.txt"), "u1\nnobody\n").unwrap();
    let o = sslf(
        d,
        &[
            "recommend",
            "-m",
            "out/model.safetensors",
            "--users",
            "who.txt",
            "-o",
            "keep.tsv",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("who.txt:2"));
    assert_eq!(
        std::fs::read_to_string(d.join("keep.tsv")).unwrap(),
        "precious\n"
    );
    assert!(std::fs::read_dir(d).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("partial")));
}

#[test]
fn the_gpu_and_cpu_paths_write_the_same_lists() {
    if common::gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny(d);
    for b in ["cpu", "gpu"] {
        ok(&sslf(
            d,
            &[
                "recommend",
                "-m",
                "out/model.safetensors",
                "--all",
                "-n",
                "5",
                "--backend",
                b,
                "-o",
                &format!("{b}.tsv"),
            ],
        ));
    }
    let (c, g) = (
        lists(&std::fs::read_to_string(d.join("cpu.tsv")).unwrap()),
        lists(&std::fs::read_to_string(d.join("gpu.tsv")).unwrap()),
    );
    assert_eq!(c.len(), g.len());
    for (u, a) in &c {
        let b = &g[u];
        assert_eq!(a.len(), b.len(), "{u}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.0, y.0, "{u}");
            assert!((x.1 - y.1).abs() < 1e-4, "{u}");
        }
    }
}
