//! The layering ARCHITECTURE.md states, checked on the source: each top-level module imports only
//! modules below it, so the import graph has no cycle; the solvers use neither wgpu nor rayon.

use std::path::Path;

/// Bottom to top.
const LAYERS: [&str; 13] = [
    "error",
    "fs",
    "comm",
    "data",
    "model",
    "backend",
    "problem",
    "solver",
    "config",
    "experiment",
    "bench",
    "cli",
    "fuzz_targets",
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text before the first `#[cfg(test)]` (unit tests may reach anywhere).
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap()
}

#[test]
fn no_module_imports_a_higher_layer() {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix("src").unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let Some(level) = LAYERS.iter().position(|l| *l == top) else {
            assert!(
                top == "lib" || top == "main",
                "{}: module `{top}` is not in LAYERS",
                f.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (k, _) in non_test(&text).match_indices("crate::") {
            let name: String = text[k + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if let Some(l) = LAYERS.iter().position(|x| *x == name) {
                if l > level {
                    bad.push(format!("{}: `{top}` imports `{name}`", f.display()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn solvers_use_neither_wgpu_nor_rayon() {
    let mut files = Vec::new();
    sources(Path::new("src/solver"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for word in ["wgpu::", "rayon::"] {
            assert!(!text.contains(word), "{} uses {word}", f.display());
        }
    }
}
