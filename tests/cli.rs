//! The real binary in a temporary directory: good runs, bad inputs, messages and exit codes.

use std::path::Path;
use std::process::Output;

mod common;

fn sslf(dir: &Path, args: &[&str]) -> Output {
    common::run_sslf(dir, args)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn default_train_prints_a_learning_curve_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let o = sslf(dir.path(), &["train", "--epochs", "3", "--output", "out"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("epoch          loss  valid_rmse"), "{out}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("3 ")),
        "{out}"
    );
    assert!(out.contains("test:  rmse"), "{out}");
    for f in ["summary.json", "metrics.jsonl", "model.safetensors"] {
        assert!(dir.path().join("out").join(f).exists(), "{f}");
    }
    let lines = std::fs::read_to_string(dir.path().join("out/metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4, "epochs 0..=3");
    let first: serde_json::Value = serde_json::from_str(lines.lines().nth(1).unwrap()).unwrap();
    for key in [
        "epoch",
        "loss",
        "valid_rmse",
        "cg_iters",
        "hvp_count",
        "passes",
        "elapsed_s",
    ] {
        assert!(first.get(key).is_some(), "{key} in {first}");
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap(),
    )
    .unwrap();
    assert!(summary["test"]["rmse"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["config"]["train"]["max_epochs"], 3);

    // The saved model evaluates on a file of the same ids.
    let o = sslf(dir.path(), &["gen", "--out", "g.tsv", "--nnz", "5000"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = sslf(
        dir.path(),
        &[
            "eval",
            "--model",
            "out/model.safetensors",
            "--data",
            "g.tsv",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("g.tsv: rmse"), "{out}");
}

#[test]
fn gen_then_train_on_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = sslf(
        dir.path(),
        &[
            "gen", "--out", "d.tsv", "--users", "300", "--items", "200", "--nnz", "6000",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::write(
        dir.path().join("c.json"),
        r#"{"data": {"path": "d.tsv"}, "model": {"rank": 4}, "solver": {"name": "adam"},
            "train": {"max_epochs": 5, "output": "o"}}"#,
    )
    .unwrap();
    let o = sslf(
        dir.path(),
        &["train", "-c", "c.json", "--set", "solver.lr=0.05"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("d.tsv"), "{err}");
    assert!(out.contains("test:  rmse"), "{out}");
}

#[test]
fn prepare_then_train_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let o = sslf(
        dir.path(),
        &[
            "gen", "--out", "d.tsv", "--users", "300", "--items", "200", "--nnz", "6000",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::write(
        dir.path().join("c.json"),
        r#"{"data": {"path": "d.tsv", "cache": true}, "model": {"rank": 4},
            "solver": {"name": "adam"}, "train": {"max_epochs": 3, "output": "o"}}"#,
    )
    .unwrap();
    let o = sslf(dir.path(), &["prepare", "-c", "c.json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.starts_with("prepared 5889 entries in "), "{out}");
    // Not a terminal: the progress is a few plain lines.
    assert!(err.contains("load: parse |"), "{err}");
    assert!(dir.path().join("d.tsv.prepared.safetensors").exists());
    let o = sslf(dir.path(), &["train", "-c", "c.json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("read prepared data from"), "{err}");
    // The data changed: said, rebuilt, and the run goes on.
    let mut d = std::fs::read_to_string(dir.path().join("d.tsv")).unwrap();
    d.push_str("extra-user\t0\t3\n");
    std::fs::write(dir.path().join("d.tsv"), d).unwrap();
    let o = sslf(dir.path(), &["train", "-c", "c.json", "--overwrite"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("is stale (the data changed"), "{err}");
    // Synthetic data has nowhere to keep a cache unless told.
    let o = sslf(dir.path(), &["prepare"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("--out FILE"), "{:?}", text(&o));
}

#[test]
fn bad_config_names_the_file_and_json_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), r#"{"solver": {"cg_iter": 5}}"#).unwrap();
    let o = sslf(dir.path(), &["train", "-c", "bad.json"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("sslf: error: bad.json: solver.cg_iter: unknown field `cg_iter`"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("range.json"),
        r#"{"solver": {"cg_tol": 2}}"#,
    )
    .unwrap();
    let o = sslf(dir.path(), &["train", "-c", "range.json"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("range.json: solver.cg_tol: must be in (0, 1)"),
        "{err}"
    );
    let o = sslf(dir.path(), &["train", "--set", "model.rank=abc"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("model.rank: invalid type"), "{err}");
}

#[test]
fn bad_data_names_file_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.tsv"), "1 2 3\n2 3 4\n3 4 NaN\n").unwrap();
    std::fs::write(
        dir.path().join("c.json"),
        r#"{"data": {"path": "r.tsv"}, "train": {"output": "o"}}"#,
    )
    .unwrap();
    let o = sslf(dir.path(), &["train", "-c", "c.json"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sslf: error: r.tsv:3: rating `NaN` is not finite"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("m.json"),
        r#"{"data": {"path": "missing.tsv"}, "train": {"output": "o"}}"#,
    )
    .unwrap();
    let o = sslf(dir.path(), &["train", "-c", "m.json"]);
    let (_, err) = text(&o);
    // A missing input file is about the user's inputs.
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("missing.tsv"), "{err}");
}

#[test]
fn corrupted_or_truncated_model_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = sslf(
        dir.path(),
        &["train", "--epochs", "1", "--output", "o", "-q"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::write(dir.path().join("d.tsv"), "1 2 3\n").unwrap();
    let bytes = std::fs::read(dir.path().join("o/model.safetensors")).unwrap();
    for (name, data) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("header", {
            let mut b = bytes.clone();
            b[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("empty", Vec::new()),
    ] {
        let p = dir.path().join(format!("{name}.safetensors"));
        std::fs::write(&p, data).unwrap();
        let o = sslf(
            dir.path(),
            &["eval", "--model", p.to_str().unwrap(), "--data", "d.tsv"],
        );
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.safetensors: ")),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

/// Ctrl-C (SIGINT) finishes the epoch in progress and writes the summary, the curve and the best
/// model, then exits 130.
#[cfg(unix)]
#[test]
fn ctrl_c_saves_the_best_epoch_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let curve = dir.path().join("o/metrics.jsonl");
    let o = common::interrupt_after_first_epoch(
        dir.path(),
        &[
            "train",
            "--epochs",
            "100000",
            "--set",
            "train.patience=100000",
            "--output",
            "o",
            "-q",
        ],
        &curve,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(130), "{out}\n{err}");
    assert!(err.contains("finishing the current epoch"), "{err}");
    assert!(err.contains("interrupted: stopped after epoch"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("o/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["stop"], "interrupted");
    let epochs = summary["epochs"].as_u64().unwrap();
    assert!((1..100_000).contains(&epochs), "{epochs}");
    assert!(summary["test"]["rmse"].as_f64().unwrap().is_finite());
    assert!(dir.path().join("o/model.safetensors").exists());
    let lines = std::fs::read_to_string(&curve).unwrap().lines().count() as u64;
    assert_eq!(lines, epochs + 1, "every finished epoch is in the curve");
}

/// A run stopped after 3 epochs and resumed to 6 follows a 6-epoch run exactly, for every solver.
#[test]
fn resume_continues_exactly_where_the_checkpoint_left_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let curve = |o: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join(o).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("elapsed_s");
                v
            })
            .collect()
    };
    for solver in ["slf", "sslf", "gd", "adam", "sgd"] {
        let name = format!("solver.name=\"{solver}\"");
        let run = |out: &str, epochs: &str, resume: bool| {
            let mut args = vec![
                "train",
                "--epochs",
                epochs,
                "--output",
                out,
                "-q",
                "--set",
                &name,
                "--set",
                "train.checkpoint_secs=0",
                "--set",
                "data.synthetic.nnz=40000",
            ];
            if resume {
                args.push("--resume");
            }
            let o = sslf(d, &args);
            let (out, err) = text(&o);
            assert!(o.status.success(), "{solver}: {out}\n{err}");
        };
        let (full, part) = (format!("{solver}-full"), format!("{solver}-part"));
        run(&full, "6", false);
        run(&part, "3", false);
        assert_eq!(curve(&part).len(), 4);
        run(&part, "6", true);
        assert_eq!(
            curve(&full),
            curve(&part),
            "{solver}: resumed curve differs"
        );
        let summary = |o: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(d.join(o).join("summary.json")).unwrap())
                .unwrap()
        };
        assert_eq!(summary(&full)["test"], summary(&part)["test"], "{solver}");
    }
    // A different model section is refused, naming it.
    let o = sslf(
        d,
        &[
            "train",
            "--epochs",
            "8",
            "--output",
            "slf-part",
            "--resume",
            "--set",
            "model.rank=3",
            "--set",
            "data.synthetic.nnz=40000",
        ],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("different `model` section"), "{err}");
    // No checkpoint to resume from.
    let o = sslf(d, &["train", "--output", "nothing-here", "--resume"]);
    let (_, err) = text(&o);
    assert!(err.contains("there is no checkpoint"), "{err}");
}

/// Near the minimum LM keeps rejecting steps that gain nothing: once there has been a gain those
/// rejections use up the patience, so the default run stops well before a large epoch limit.
#[test]
fn default_run_stops_early_once_lm_only_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let o = sslf(
        dir.path(),
        &["train", "--epochs", "100", "--output", "o", "-q"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("o/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["stop"], "converged", "{summary}");
    let (epochs, best) = (
        summary["epochs"].as_u64().unwrap(),
        summary["best_epoch"].as_u64().unwrap(),
    );
    assert_eq!(epochs, best + 10, "patience 10 after the best epoch");
}

#[test]
fn bench_times_every_op_and_writes_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let o = sslf(
        dir.path(),
        &[
            "bench",
            "--set",
            r#"backends=["cpu"]"#,
            "--set",
            "data.synthetic.n_users=300",
            "--set",
            "data.synthetic.n_items=100",
            "--set",
            "data.synthetic.nnz=3000",
            "--set",
            "copy_elements=65536",
            "--set",
            "repeats=3",
            "--set",
            "warmup=0",
            "--set",
            "output=b.json",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("b.json")).unwrap()).unwrap();
    let rows = table["rows"].as_array().unwrap();
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "copy",
            "dot",
            "loss",
            "evaluate",
            "gradient",
            "gn_product",
            "cg_iteration",
            "slf_epoch",
            "sslf_epoch",
            "topn"
        ]
    );
    for r in rows {
        let (lo, med, hi) = (
            r["min_ms"].as_f64().unwrap(),
            r["ms"].as_f64().unwrap(),
            r["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < lo && lo <= med && med <= hi, "{r}");
        assert!(out.contains(r["op"].as_str().unwrap()), "{out}");
    }
    // The passes over the entries: one for the loss and for evaluation, two for a gradient.
    for (op, passes) in [("loss", 1.0), ("evaluate", 1.0), ("gradient", 2.0)] {
        let r = rows.iter().find(|r| r["op"] == op).unwrap();
        let counted = r["gentries_rank_per_s"].as_f64().unwrap() * r["ms"].as_f64().unwrap() * 1e6;
        let want = passes * r["nnz"].as_f64().unwrap() * 32.0;
        assert!(
            (counted - want).abs() < 1e-6 * want,
            "{op}: {counted} vs {want}"
        );
    }
}
