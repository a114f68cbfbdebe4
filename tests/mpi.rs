//! Training across processes under mpirun: the `mpi` feature's binary, 2 and 3 processes.
//!
//! These tests need `mpirun` (OpenMPI: `apt-get install -y openmpi-bin libopenmpi-dev
//! libclang-dev`); without it they skip and say why. With it they build sslf with `--features
//! mpi` into `target/mpi` (its own folder, so the default build is left as it is) and run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One mpirun at a time: several jobs at once on a small machine only measure its scheduler.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The mpi-feature binary (built once) and the serial lock; None (said) when there is no mpirun.
fn mpi() -> Option<(&'static Path, std::sync::MutexGuard<'static, ()>)> {
    let bin = mpi_binary()?;
    Some((bin, SERIAL.lock().unwrap_or_else(|e| e.into_inner())))
}

fn mpi_binary() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let found = Command::new("mpirun")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!(
                "skipped: no mpirun on PATH (install openmpi-bin libopenmpi-dev libclang-dev to \
                 run the MPI tests)"
            );
            return None;
        }
        let default_bin = PathBuf::from(env!("CARGO_BIN_EXE_sslf"));
        let target = default_bin
            .parent()
            .and_then(|p| p.parent())
            .expect("target/<profile>/sslf")
            .join("mpi");
        let st = Command::new(env!("CARGO"))
            .args([
                "build",
                "--features",
                "mpi",
                "--bin",
                "sslf",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(
            st.success(),
            "cargo build --features mpi failed (rsmpi needs libopenmpi-dev and libclang-dev)"
        );
        Some(target.join("debug").join("sslf"))
    })
    .as_deref()
}

fn mpirun(n: usize, bin: &Path) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &n.to_string(),
    ])
    .arg(bin)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn one(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).unwrap()
}

fn test_rmse(dir: &Path) -> f64 {
    summary(dir)["test"]["rmse"].as_f64().unwrap()
}

/// `sslf train -c config --output dir -q` with one thread per process and `sets`.
fn train(mut c: Command, config: &str, dir: &Path, sets: &[&str]) -> Output {
    c.args(["train", "-c", config, "-q", "--output"])
        .arg(dir)
        .args(["--set", "train.threads=1"]);
    for s in sets {
        c.args(["--set", s]);
    }
    c.output().expect("runs")
}

#[test]
fn two_and_three_processes_match_one_and_repeat_bit_for_bit() {
    let Some((bin, _serial)) = mpi() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = |s: &str| tmp.path().join(s);
    ok(train(one(bin), "configs/default.json", &d("one"), &[]));
    let single = test_rmse(&d("one"));
    assert_eq!(summary(&d("one"))["processes"], 1);
    for n in [2, 3] {
        for rep in ["a", "b"] {
            let dir = d(&format!("n{n}{rep}"));
            ok(train(mpirun(n, bin), "configs/default.json", &dir, &[]));
            let s = summary(&dir);
            assert_eq!(s["processes"], n);
            assert_eq!(s["devices"].as_array().unwrap().len(), n);
            assert_eq!(s["n_test"], summary(&d("one"))["n_test"]);
            let r = test_rmse(&dir);
            assert!((r - single).abs() < 1e-4, "{n} processes: {r} vs {single}");
            // Only rank 0 writes: one model, one curve.
            assert!(dir.join("model.safetensors").exists());
        }
        let (a, b) = (
            summary(&d(&format!("n{n}a"))),
            summary(&d(&format!("n{n}b"))),
        );
        assert_eq!(
            a["test"], b["test"],
            "{n} processes: the same bits every run"
        );
        assert_eq!(a["final_loss"], b["final_loss"]);
    }
}

#[test]
fn movielens_on_three_processes_matches_one() {
    let Some((bin, _serial)) = mpi() else { return };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ml-100k/train.tsv");
    if !data.exists() {
        eprintln!("skipped: {} is not here", data.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    ok(train(
        one(bin),
        "configs/ml100k-slf.json",
        &tmp.path().join("one"),
        &[],
    ));
    ok(train(
        mpirun(3, bin),
        "configs/ml100k-slf.json",
        &tmp.path().join("three"),
        &[],
    ));
    let (a, b) = (
        test_rmse(&tmp.path().join("one")),
        test_rmse(&tmp.path().join("three")),
    );
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    assert_eq!(summary(&tmp.path().join("three"))["processes"], 3);
}

#[test]
fn sharded_input_matches_one_process_reading_every_part() {
    let Some((bin, _serial)) = mpi() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let parts = tmp.path().join("parts");
    let out = ok(one(bin)
        .args([
            "shard",
            "-c",
            "configs/default.json",
            "--parts",
            "2",
            "--out",
        ])
        .arg(&parts)
        .output()
        .unwrap());
    assert!(String::from_utf8_lossy(&out.stdout).contains("part-1.tsv"));
    let pattern = format!(
        "data.shards=\"{}\"",
        parts.join("part-{rank}.tsv").display()
    );
    let sets = ["data.synthetic=null", pattern.as_str()];
    ok(train(
        one(bin),
        "configs/default.json",
        &tmp.path().join("one"),
        &sets,
    ));
    ok(train(
        mpirun(2, bin),
        "configs/default.json",
        &tmp.path().join("two"),
        &sets,
    ));
    let (s1, s2) = (
        summary(&tmp.path().join("one")),
        summary(&tmp.path().join("two")),
    );
    assert_eq!(s1["n_test"], s2["n_test"]);
    assert_eq!(s1["n_valid"], s2["n_valid"]);
    assert_eq!(s1["train_stats"]["nnz"], s2["train_stats"]["nnz"]);
    let (a, b) = (
        s1["test"]["rmse"].as_f64().unwrap(),
        s2["test"]["rmse"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    // Parts that do not match the process count are refused, naming both.
    let bad = train(
        mpirun(3, bin),
        "configs/default.json",
        &tmp.path().join("three"),
        &sets,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("2 parts for 3 processes"));
}

#[test]
fn a_rank_with_bad_data_ends_every_rank_naming_it() {
    let Some((bin, _serial)) = mpi() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let parts = tmp.path().join("parts");
    ok(one(bin)
        .args([
            "shard",
            "-c",
            "configs/default.json",
            "--parts",
            "3",
            "--out",
        ])
        .arg(&parts)
        .output()
        .unwrap());
    let p1 = parts.join("part-1.tsv");
    let mut text = std::fs::read_to_string(&p1).unwrap();
    text.push_str("u i notanumber\n");
    std::fs::write(&p1, text).unwrap();
    let pattern = format!(
        "data.shards=\"{}\"",
        parts.join("part-{rank}.tsv").display()
    );
    let t = Instant::now();
    let out = train(
        mpirun(3, bin),
        "configs/default.json",
        &tmp.path().join("run"),
        &["data.synthetic=null", &pattern],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rank 1 of 3"), "{err}");
    assert!(err.contains("part-1.tsv:"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(!tmp.path().join("run/summary.json").exists());
}

/// The pids of the processes whose command line holds `tag`, the mpirun itself left out.
fn ranks_of(tag: &str) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-f", tag]).output().unwrap();
    let mut pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| !String::from_utf8_lossy(&c).starts_with("mpirun"))
                .unwrap_or(false)
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn a_killed_rank_ends_every_rank_within_a_bound_and_leaves_no_half_run() {
    let Some((bin, _serial)) = mpi() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("killed-run");
    let mut c = mpirun(3, bin);
    c.args(["train", "-c", "configs/default.json", "-q", "--output"])
        .arg(&dir)
        .args([
            "--set",
            "train.threads=1",
            "--set",
            "data.synthetic.n_users=20000",
            "--set",
            "data.synthetic.nnz=600000",
            "--set",
            "train.max_epochs=1000",
            "--set",
            "train.patience=1000",
            "--set",
            "train.checkpoint_secs=0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Wait for a few epochs (and checkpoints) to be written.
    let curve = dir.join("metrics.jsonl");
    let t = Instant::now();
    while std::fs::read_to_string(&curve).map_or(0, |s| s.lines().count()) < 3 {
        assert!(t.elapsed() < Duration::from_secs(120), "no epochs written");
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ranks = ranks_of(&dir.display().to_string());
    assert_eq!(ranks.len(), 3, "three ranks: {ranks:?}");
    let victim = ranks[2];
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the other ranks did not exit within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        ranks_of(&dir.display().to_string()).is_empty(),
        "a rank lives on"
    );
    // No finished-run files, and nothing half-written: every file is whole (no temporaries).
    assert!(!dir.join("summary.json").exists());
    assert!(!dir.join("model.safetensors").exists());
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".tmp") && !name.starts_with('.') || name == ".sslf.lock",
            "left behind: {name}"
        );
    }
}

#[test]
fn resume_with_the_same_process_count_continues_the_run() {
    let Some((bin, _serial)) = mpi() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let parts = tmp.path().join("resumed");
    let every = "train.checkpoint_secs=0";
    ok(train(
        mpirun(2, bin),
        "configs/default.json",
        &whole,
        &[every],
    ));
    ok(train(
        mpirun(2, bin),
        "configs/default.json",
        &parts,
        &[every, "train.max_epochs=6"],
    ));
    // Rank 1 keeps its user rows only; the shared rows are rank 0's.
    let size = |f: &str| std::fs::metadata(parts.join(f)).unwrap().len();
    assert!(
        size("checkpoint.rank1.safetensors") < size("checkpoint.safetensors") * 3 / 4,
        "rank 1's checkpoint holds shared rows"
    );
    let mut c = mpirun(2, bin);
    c.args(["train", "-c", "configs/default.json", "-q", "--resume"])
        .args(["--set", "train.threads=1", "--set", every, "--output"])
        .arg(&parts);
    ok(c.output().unwrap());
    let (a, b) = (summary(&whole), summary(&parts));
    assert_eq!(
        a["test"], b["test"],
        "resumed: the uninterrupted run's bits"
    );
    assert_eq!(a["epochs"], b["epochs"]);
}

#[test]
fn a_build_without_mpi_refuses_to_run_under_mpirun() {
    let Some((_, _serial)) = mpi() else { return };
    let plain = Path::new(env!("CARGO_BIN_EXE_sslf"));
    let tmp = tempfile::tempdir().unwrap();
    let out = train(
        mpirun(2, plain),
        "configs/default.json",
        &tmp.path().join("run"),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("built without MPI"));
    assert!(!tmp.path().join("run/summary.json").exists());
}
