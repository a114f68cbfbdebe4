//! Reliability: each class of failure found by probing the CLI as a hostile but realistic user,
//! pinned by a test that failed before the fix. The real binary runs in a temporary directory.

use std::path::Path;
use std::process::Output;

mod common;

fn sslf(dir: &Path, args: &[&str]) -> Output {
    common::run_sslf(dir, args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts exit code `code` and a message containing every part of `want`.
fn fails(o: &Output, code: i32, want: &[&str]) -> String {
    let t = text(o);
    assert_eq!(o.status.code(), Some(code), "{t}");
    for w in want {
        assert!(t.contains(w), "`{w}` in:\n{t}");
    }
    assert!(!t.contains("panicked"), "{t}");
    t
}

const TINY: &str = r#"{
  "data": { "synthetic": { "n_users": 120, "n_items": 80, "nnz": 3000, "rank": 3, "noise": 0.1, "seed": 4 } },
  "model": { "rank": 3 },
  "train": { "max_epochs": 3, "checkpoint_secs": 0 }
}"#;

/// A trained tiny model in `dir/out`.
fn trained(dir: &Path) {
    std::fs::write(dir.join("tiny.json"), TINY).unwrap();
    let o = sslf(dir, &["train", "-c", "tiny.json", "--output", "out", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Rewrites a safetensors file: `meta` edits the `__metadata__` strings, `data` the tensor bytes.
fn edit_safetensors(
    path: &Path,
    meta: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    data: impl FnOnce(&serde_json::Value, &mut [u8]),
) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    meta(header["__metadata__"].as_object_mut().unwrap());
    let mut body = bytes[8 + n..].to_vec();
    data(&header, &mut body);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(body);
    std::fs::write(path, out).unwrap();
}

/// Sets the first f32 of tensor `name` to NaN.
fn poison(header: &serde_json::Value, body: &mut [u8], name: &str) {
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    body[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
}

#[test]
fn inconsistent_or_non_finite_model_files_are_refused_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    std::fs::write(d.join("pairs.tsv"), "0 0\n1 1\n").unwrap();
    let model = d.join("out/model.safetensors");
    let good = std::fs::read(&model).unwrap();
    type Edit = Box<dyn Fn(&Path)>;
    /// An edit of the metadata strings only.
    fn meta(set: &'static [(&'static str, &'static str)]) -> Edit {
        Box::new(move |p| {
            edit_safetensors(
                p,
                |m| {
                    for (k, v) in set {
                        m.insert((*k).into(), (*v).into());
                    }
                },
                |_, _| {},
            )
        })
    }
    let cases: Vec<(&str, Edit)> = vec![
        (
            "do not form a finite range",
            meta(&[("clip_min", "5"), ("clip_max", "1")]),
        ),
        ("do not form a finite range", meta(&[("clip_max", "NaN")])),
        ("`mu` is not finite", meta(&[("mu", "inf")])),
        (
            "is not finite",
            Box::new(|p| edit_safetensors(p, |_| {}, |h, b| poison(h, b, "P"))),
        ),
        (
            "lists an id twice",
            Box::new(|p| {
                edit_safetensors(
                    p,
                    |m| {
                        let mut u: Vec<String> =
                            serde_json::from_str(m["users"].as_str().unwrap()).unwrap();
                        u[1] = u[0].clone();
                        m.insert("users".into(), serde_json::to_string(&u).unwrap().into());
                    },
                    |_, _| {},
                )
            }),
        ),
    ];
    for (want, edit) in cases {
        std::fs::write(&model, &good).unwrap();
        edit(&model);
        let o = sslf(
            d,
            &[
                "predict",
                "-m",
                "out/model.safetensors",
                "-p",
                "pairs.tsv",
                "--clip",
            ],
        );
        fails(&o, 2, &["model.safetensors", want]);
        let o = sslf(
            d,
            &["eval", "-m", "out/model.safetensors", "-d", "pairs.tsv"],
        );
        fails(&o, 2, &[want]);
    }
}

#[test]
fn a_checkpoint_with_non_finite_values_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    edit_safetensors(
        &d.join("out/checkpoint.safetensors"),
        |_| {},
        |h, b| poison(h, b, "theta"),
    );
    let start = std::time::Instant::now();
    let o = sslf(
        d,
        &[
            "train",
            "-c",
            "tiny.json",
            "--output",
            "out",
            "--resume",
            "--epochs",
            "6",
        ],
    );
    fails(&o, 2, &["checkpoint.safetensors", "non-finite"]);
    assert!(start.elapsed().as_secs() < 60);
}

#[test]
fn predict_never_destroys_its_input_or_an_existing_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    std::fs::write(d.join("pairs.tsv"), "0 0\n1 1\n").unwrap();
    let o = sslf(
        d,
        &[
            "predict",
            "-m",
            "out/model.safetensors",
            "-p",
            "pairs.tsv",
            "-o",
            "./pairs.tsv",
        ],
    );
    fails(&o, 2, &["--out", "is also an input"]);
    assert_eq!(
        std::fs::read_to_string(d.join("pairs.tsv")).unwrap(),
        "0 0\n1 1\n"
    );

    std::fs::write(d.join("bad.tsv"), "0 0\n1 1\nlonely\n").unwrap();
    std::fs::write(d.join("preds.tsv"), "precious\n").unwrap();
    let o = sslf(
        d,
        &[
            "predict",
            "-m",
            "out/model.safetensors",
            "-p",
            "bad.tsv",
            "-o",
            "preds.tsv",
        ],
    );
    fails(&o, 2, &["bad.tsv:3"]);
    assert_eq!(
        std::fs::read_to_string(d.join("preds.tsv")).unwrap(),
        "precious\n"
    );
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn one_output_folder_holds_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    // A finished folder is not overwritten silently.
    let before = std::fs::read(d.join("out/summary.json")).unwrap();
    let o = sslf(d, &["train", "-c", "tiny.json", "--output", "out", "-q"]);
    fails(&o, 2, &["holds an earlier run", "--overwrite"]);
    assert_eq!(std::fs::read(d.join("out/summary.json")).unwrap(), before);
    // A running process holds the lock (this test process stands in for it).
    std::fs::write(
        d.join("out/.sslf.lock"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let o = sslf(
        d,
        &["train", "-c", "tiny.json", "--output", "out", "--overwrite"],
    );
    fails(
        &o,
        2,
        &[
            "another sslf run",
            &format!("process {}", std::process::id()),
        ],
    );
    // A lock left by a process that is gone is taken over.
    std::fs::write(d.join("out/.sslf.lock"), "4000000000\n").unwrap();
    let o = sslf(
        d,
        &[
            "train",
            "-c",
            "tiny.json",
            "--output",
            "out",
            "--overwrite",
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("taking over"), "{}", text(&o));
    assert!(!d.join("out/.sslf.lock").exists());
}

#[test]
fn resume_refuses_changed_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = sslf(
        d,
        &[
            "gen", "--out", "r.tsv", "--users", "100", "--items", "60", "--nnz", "2000",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(
        d.join("c.json"),
        r#"{ "data": { "path": "r.tsv" }, "model": { "rank": 2 }, "train": { "max_epochs": 2, "checkpoint_secs": 0 } }"#,
    )
    .unwrap();
    let o = sslf(d, &["train", "-c", "c.json", "--output", "out", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = std::fs::read_to_string(d.join("r.tsv")).unwrap();
    let first = t.lines().next().unwrap().to_string();
    let changed = first.rsplit_once('\t').unwrap().0.to_string() + "\t1";
    std::fs::write(d.join("r.tsv"), t.replacen(&first, &changed, 1)).unwrap();
    let o = sslf(
        d,
        &[
            "train", "-c", "c.json", "--output", "out", "--resume", "--epochs", "4",
        ],
    );
    fails(&o, 2, &["r.tsv", "changed since the checkpoint"]);
}

#[test]
fn readers_strip_a_bom_and_tell_a_header_from_a_bad_rating() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A BOM before the first id does not make a phantom user: "1" on line 1 and line 2 are one.
    let mut rows = String::from("\u{feff}1\t1\t4\n1\t2\t3\n");
    for u in 2..40 {
        for i in 1..10 {
            rows.push_str(&format!("{u}\t{i}\t{}\n", 1 + (u * i) % 5));
        }
    }
    std::fs::write(d.join("bom.tsv"), &rows).unwrap();
    let cfg = r#"{ "data": { "path": "bom.tsv", "test_fraction": 0.1, "validation_fraction": 0.0 }, "model": { "rank": 2 }, "train": { "max_epochs": 1 } }"#;
    std::fs::write(d.join("bom.json"), cfg).unwrap();
    let o = sslf(d, &["train", "-c", "bom.json", "--output", "bom", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("bom/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["train_stats"]["n_users"], 39, "{s}");

    // `1,2,abc` on line 1 is a bad rating, not a header.
    std::fs::write(d.join("bad.csv"), "1,2,abc\n1,3,4\n").unwrap();
    std::fs::write(
        d.join("bad.json"),
        r#"{ "data": { "path": "bad.csv" }, "train": { "max_epochs": 1 } }"#,
    )
    .unwrap();
    let o = sslf(d, &["train", "-c", "bad.json", "--output", "bad"]);
    fails(&o, 2, &["bad.csv:1", "rating `abc` is not a number"]);

    // A real header is skipped, and the user is told.
    let mut csv = String::from("userId,movieId,rating\n");
    for u in 0..40 {
        for i in 0..10 {
            csv.push_str(&format!("{u},{i},{}\n", 1 + (u + i) % 5));
        }
    }
    std::fs::write(d.join("h.csv"), &csv).unwrap();
    std::fs::write(
        d.join("h.json"),
        r#"{ "data": { "path": "h.csv" }, "model": { "rank": 2 }, "train": { "max_epochs": 1 } }"#,
    )
    .unwrap();
    let o = sslf(d, &["train", "-c", "h.json", "--output", "h"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("line 1 `userId,movieId,rating` read as a header"),
        "{}",
        text(&o)
    );

    // Long tokens are quoted cut to 80 characters.
    let long = "x".repeat(500);
    std::fs::write(d.join("long.tsv"), format!("1 2 {long}\n")).unwrap();
    std::fs::write(
        d.join("long.json"),
        r#"{ "data": { "path": "long.tsv", "header": false }, "train": { "max_epochs": 1 } }"#,
    )
    .unwrap();
    let o = sslf(d, &["train", "-c", "long.json", "--output", "long"]);
    let t = fails(&o, 2, &["long.tsv:1", "…"]);
    assert!(t.len() < 400, "{t}");
}

#[test]
fn a_run_that_starts_non_finite_is_an_input_error_and_writes_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = sslf(
        d,
        &[
            "train",
            "--set",
            "model.init_scale=1e30",
            "--epochs",
            "2",
            "--output",
            "out",
        ],
    );
    fails(&o, 2, &["not finite", "init_scale"]);
    assert!(!d.join("out/model.safetensors").exists());
    assert!(!d.join("out/summary.json").exists());
}

#[test]
fn eval_applies_the_training_duplicate_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    std::fs::write(d.join("dup.tsv"), "0 0 3\n1 1 4\n0 0 5\n").unwrap();
    let o = sslf(d, &["eval", "-m", "out/model.safetensors", "-d", "dup.tsv"]);
    fails(&o, 2, &["dup.tsv:3", "duplicate pair"]);
}

#[test]
fn exit_codes_and_blame() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A missing input is the user's input: exit 2.
    let o = sslf(d, &["train", "-c", "nope.json"]);
    fails(&o, 2, &["nope.json"]);
    let o = sslf(d, &["eval", "-m", "nope.safetensors", "-d", "x.tsv"]);
    fails(&o, 2, &["nope.safetensors"]);
    // --set errors are blamed on --set, not on the config file.
    std::fs::write(d.join("tiny.json"), TINY).unwrap();
    let o = sslf(
        d,
        &["train", "-c", "tiny.json", "--set", "solver.cg_iters=-3"],
    );
    fails(&o, 2, &["--set solver.cg_iters=-3"]);
    // A WGPU_BACKEND that names no back end is not a missing driver.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sslf"))
        .args([
            "train",
            "-c",
            "tiny.json",
            "--backend",
            "gpu",
            "--output",
            "w",
        ])
        .current_dir(d)
        .env("WGPU_BACKEND", "nonsense")
        .output()
        .unwrap();
    fails(&o, 2, &["WGPU_BACKEND", "names no wgpu back end"]);
}

#[test]
fn sizes_past_the_machine_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = sslf(d, &["train", "--set", "data.synthetic.n_items=2000000000"]);
    fails(&o, 2, &["data.synthetic", "memory"]);
    let o = sslf(
        d,
        &["gen", "--out", "g.tsv", "--users", "1000", "--nnz", "10"],
    );
    fails(&o, 2, &["nnz (10) must be at least n_users (1000)"]);
    assert!(!d.join("g.tsv").exists());
}

#[test]
fn experiments_refuse_duplicate_labels_and_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("tiny.json"), TINY).unwrap();
    std::fs::write(
        d.join("e1.json"),
        r#"{ "base": "tiny.json", "seeds": [1, 1], "runs": [ { "label": "a" } ] }"#,
    )
    .unwrap();
    let o = sslf(d, &["experiment", "-c", "e1.json", "--output", "e1"]);
    fails(&o, 2, &["e1.json", "seeds", "1"]);
    std::fs::write(
        d.join("e2.json"),
        r#"{ "base": "tiny.json", "runs": [ { "label": "a" }, { "label": "a" } ] }"#,
    )
    .unwrap();
    let o = sslf(d, &["experiment", "-c", "e2.json", "--output", "e2"]);
    fails(&o, 2, &["e2.json", "label", "`a`"]);
}

#[test]
fn a_run_that_diverges_keeps_its_best_finite_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("tiny.json"), TINY).unwrap();
    let o = sslf(
        d,
        &[
            "train",
            "-c",
            "tiny.json",
            "--set",
            "solver.name=gd",
            "--set",
            "solver.lr=1e9",
            "--epochs",
            "6",
            "--output",
            "out",
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["stop"], "diverged", "{s}");
    assert!(s["test"]["rmse"].as_f64().unwrap().is_finite(), "{s}");
    std::fs::write(d.join("pairs.tsv"), "0 0\n").unwrap();
    let o = sslf(
        d,
        &["predict", "-m", "out/model.safetensors", "-p", "pairs.tsv"],
    );
    assert!(o.status.success(), "{}", text(&o));
}
