//! `sslf experiment`, `predict` and `recommend`: the real binary in a temporary directory.

use std::path::Path;
use std::process::Output;

mod common;

fn sslf(dir: &Path, args: &[&str]) -> Output {
    common::run_sslf(dir, args)
}

fn ok(o: &Output) -> String {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{out}\n{err}");
    out + &err
}

const BASE: &str = r#"{
  "data": { "synthetic": { "n_users": 300, "n_items": 200, "nnz": 8000, "rank": 3, "noise": 0.1, "seed": 4 } },
  "model": { "rank": 3, "lambda": 0.01 },
  "train": { "max_epochs": 8 }
}"#;

const EXPERIMENT: &str = r#"{
  "name": "tiny",
  "base": "base.json",
  "seeds": [1, 2],
  "runs": [
    { "label": "slf" },
    { "label": "adam", "set": { "solver.name": "adam" }, "grid": { "solver.lr": [0.01, 0.05] } }
  ]
}"#;

#[test]
fn experiment_writes_tables_and_plots_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("base.json"), BASE).unwrap();
    std::fs::write(d.join("exp.json"), EXPERIMENT).unwrap();
    let out = ok(&sslf(
        d,
        &["experiment", "-c", "exp.json", "--output", "out"],
    ));
    assert!(
        out.contains("6 jobs (0 finished before, 6 to run)"),
        "{out}"
    );
    let md = std::fs::read_to_string(d.join("out/summary.md")).unwrap();
    for label in [
        "| slf | 2 |",
        "| adam[lr=0.01] | 2 |",
        "| adam[lr=0.05] | 2 |",
    ] {
        assert!(md.contains(label), "{label} in\n{md}");
    }
    assert!(md.contains(" ± "), "{md}");
    let csv = std::fs::read_to_string(d.join("out/summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    for svg in ["valid_rmse_vs_epoch.svg", "valid_rmse_vs_seconds.svg"] {
        let text = std::fs::read_to_string(d.join("out").join(svg)).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("<polyline"),
            "{svg}"
        );
        assert!(text.contains("adam[lr=0.05]"), "{svg} has a legend");
    }
    let job = d.join("out/runs/slf/seed-1");
    assert!(job.join("metrics.jsonl").exists() && job.join("summary.json").exists());

    // Resume: finished jobs are kept as they are; a removed job and an interrupted one (left as
    // a .partial folder) run again.
    let kept = d.join("out/runs/slf/seed-2/summary.json");
    let before = std::fs::read(&kept).unwrap();
    std::fs::remove_dir_all(&job).unwrap();
    let adam = d.join("out/runs/adam_lr_0.01_/seed-1");
    let partial = d.join("out/runs/adam_lr_0.01_/seed-1.partial");
    std::fs::rename(&adam, &partial).unwrap();
    std::fs::remove_file(partial.join("summary.json")).unwrap();
    let out = ok(&sslf(
        d,
        &["experiment", "-c", "exp.json", "--output", "out"],
    ));
    assert!(
        out.contains("6 jobs (4 finished before, 2 to run)"),
        "{out}"
    );
    assert!(job.join("summary.json").exists() && adam.join("summary.json").exists());
    assert!(
        !partial.exists(),
        "the interrupted job's folder was replaced"
    );
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        before,
        "finished runs are not redone"
    );
}

#[test]
fn predict_and_recommend_speak_original_ids() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Original ids that are not dense integers.
    let mut text = String::new();
    for u in 0..40 {
        for i in 0..30 {
            if (u * 7 + i * 3) % 4 != 0 {
                text.push_str(&format!("u{u}\tmovie-{i}\t{}\n", 1 + (u + i) % 5));
            }
        }
    }
    std::fs::write(d.join("r.tsv"), text).unwrap();
    std::fs::write(
        d.join("c.json"),
        r#"{"data": {"path": "r.tsv", "test_fraction": 0}, "model": {"rank": 3},
            "train": {"max_epochs": 5, "output": "o"}}"#,
    )
    .unwrap();
    ok(&sslf(d, &["train", "-c", "c.json", "-q"]));
    std::fs::write(
        d.join("pairs.tsv"),
        "u1 movie-2\nu3,movie-5\nnobody movie-1\n",
    )
    .unwrap();
    ok(&sslf(
        d,
        &[
            "predict",
            "--model",
            "o/model.safetensors",
            "--pairs",
            "pairs.tsv",
            "--out",
            "p.tsv",
            "--clip",
        ],
    ));
    let p = std::fs::read_to_string(d.join("p.tsv")).unwrap();
    let lines: Vec<&str> = p.lines().collect();
    assert_eq!(lines.len(), 3, "{p}");
    assert!(lines[0].starts_with("u1\tmovie-2\t"), "{p}");
    for l in &lines {
        let v: f32 = l.split('\t').nth(2).unwrap().parse().unwrap();
        assert!((1.0..=5.0).contains(&v), "{l}");
    }

    let out = ok(&sslf(
        d,
        &[
            "recommend",
            "--model",
            "o/model.safetensors",
            "--user",
            "u0",
            "--top",
            "5",
        ],
    ));
    let items: Vec<&str> = out
        .lines()
        .skip(1)
        .take(5)
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(items.len(), 5, "{out}");
    // With no test split every entry is training data: u0 rated movie-i unless (3i) % 4 == 0,
    // and none of those may be recommended.
    for it in &items {
        let i: usize = it.trim_start_matches("movie-").parse().unwrap();
        assert_eq!(
            (3 * i) % 4,
            0,
            "movie-{i} was rated by u0 in training: {out}"
        );
    }
    let o = sslf(
        d,
        &[
            "recommend",
            "--model",
            "o/model.safetensors",
            "--user",
            "ghost",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("user `ghost` is not in the model"));
}

/// Ctrl-C during an experiment stops after the epoch in progress; the unfinished job stays a
/// `.partial` folder (so a rerun starts it again) and the exit code is 130.
#[cfg(unix)]
#[test]
fn ctrl_c_leaves_the_running_job_unfinished_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("base.json"),
        BASE.replace(
            r#""max_epochs": 8"#,
            r#""max_epochs": 100000, "patience": 100000"#,
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("exp.json"),
        r#"{"name": "long", "base": "base.json", "seeds": [1], "runs": [{ "label": "slf" }]}"#,
    )
    .unwrap();
    let o = common::interrupt_after_first_epoch(
        d,
        &["experiment", "-c", "exp.json", "--output", "out", "-q"],
        &d.join("out/runs/slf/seed-1.partial/metrics.jsonl"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    assert!(d.join("out/runs/slf/seed-1.partial/summary.json").exists());
    assert!(
        !d.join("out/runs/slf/seed-1").exists(),
        "not marked finished"
    );
}

#[test]
fn a_summary_reads_back_typed_exactly_as_written() {
    use sslf::config::TrainConfig;
    use sslf::experiment::{data::prepare, observe::Recorder, output::RunDir, train};
    let cfg = TrainConfig::from_json("base.json", BASE, &[]).unwrap();
    let data = prepare(&cfg.data).unwrap();
    let t = train(&common::cpu(), &cfg, &data, &mut Recorder::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(dir.path().join("run")).unwrap();
    run.write_summary(&t.summary, &cfg).unwrap();
    let back = run.read_summary().unwrap();
    assert_eq!(back.summary, t.summary);
    assert_eq!(back.config, cfg);
    // Nothing but the summary is left in the folder (no temporary names).
    let names: Vec<_> = std::fs::read_dir(run.root()).unwrap().collect();
    assert_eq!(names.len(), 1);
}
