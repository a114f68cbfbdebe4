//! Tables and plots of an experiment's finished jobs: per-method aggregates over seeds
//! (mean ± sample std), validation-only selection, Markdown and CSV tables, SVG curves.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The figures of one finished job, read back from its folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    #[serde(default)]
    pub method: String,
    pub label: String,
    /// Best validation RMSE (NaN without validation).
    #[serde(default)]
    pub valid_rmse: f64,
    pub seed: u64,
    pub test_rmse: f64,
    pub test_mae: f64,
    pub best_epoch: f64,
    pub passes_to_best: f64,
    pub seconds_to_best: f64,
    /// (epoch, elapsed_s, valid_rmse) per epoch.
    pub curve: Vec<(f64, f64, f64)>,
}

/// Mean and sample standard deviation.
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// (method, seeds, mean ± std of test RMSE, test MAE, best epoch, passes and seconds to best).
pub type Aggregate = (String, usize, [(f64, f64); 5]);

/// A method's mean curve: (label, [(epoch, mean seconds, mean validation RMSE)]).
pub type Curve = (String, Vec<(f64, f64, f64)>);

/// Per-method aggregates over seeds, in the order methods first appear.
pub fn aggregate(results: &[JobResult]) -> Vec<Aggregate> {
    let mut order: Vec<String> = Vec::new();
    for r in results {
        if !order.contains(&r.label) {
            order.push(r.label.clone());
        }
    }
    order
        .into_iter()
        .map(|label| {
            let rs: Vec<&JobResult> = results.iter().filter(|r| r.label == label).collect();
            let col = |f: &dyn Fn(&JobResult) -> f64| {
                mean_std(&rs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let stats = [
                col(&|r| r.test_rmse),
                col(&|r| r.test_mae),
                col(&|r| r.best_epoch),
                col(&|r| r.passes_to_best),
                col(&|r| r.seconds_to_best),
            ];
            (label, rs.len(), stats)
        })
        .collect()
}

/// The summary table as Markdown and as CSV.
pub fn tables(results: &[JobResult]) -> (String, String) {
    let agg = aggregate(results);
    let mut md = String::from(
        "| method | seeds | test RMSE | test MAE | best epoch | passes to best | seconds to best |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut csv = String::from(
        "method,seeds,test_rmse_mean,test_rmse_std,test_mae_mean,test_mae_std,best_epoch_mean,best_epoch_std,passes_mean,passes_std,seconds_mean,seconds_std\n",
    );
    for (label, n, s) in agg {
        md.push_str(&format!(
            "| {label} | {n} | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.1} ± {:.1} | {:.0} ± {:.0} | {:.2} ± {:.2} |\n",
            s[0].0, s[0].1, s[1].0, s[1].1, s[2].0, s[2].1, s[3].0, s[3].1, s[4].0, s[4].1
        ));
        csv.push_str(&format!(
            "{},{n},{},{},{},{},{},{},{},{},{},{}\n",
            if label.contains(',') {
                format!("\"{label}\"")
            } else {
                label.clone()
            },
            s[0].0,
            s[0].1,
            s[1].0,
            s[1].1,
            s[2].0,
            s[2].1,
            s[3].0,
            s[3].1,
            s[4].0,
            s[4].1
        ));
    }
    (md, csv)
}

/// For each method, the variant with the lowest mean validation RMSE over its seeds; returns the
/// picked labels and a Markdown table of every variant's validation figure (no test figures).
pub fn select_by_valid(results: &[JobResult]) -> (Vec<String>, String) {
    let mut variants: Vec<(String, String)> = Vec::new();
    for r in results {
        let key = (r.method.clone(), r.label.clone());
        if !variants.contains(&key) {
            variants.push(key);
        }
    }
    let stats: Vec<(String, String, usize, (f64, f64))> = variants
        .into_iter()
        .map(|(m, l)| {
            let v: Vec<f64> = results
                .iter()
                .filter(|r| r.label == l)
                .map(|r| r.valid_rmse)
                .collect();
            let n = v.len();
            (m, l, n, mean_std(&v))
        })
        .collect();
    let mut picked: Vec<String> = Vec::new();
    let mut methods: Vec<&String> = Vec::new();
    for (m, ..) in &stats {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    for m in methods {
        let best = stats
            .iter()
            .filter(|s| &s.0 == m)
            .min_by(|a, b| a.3 .0.total_cmp(&b.3 .0))
            .expect("a method has a variant");
        picked.push(best.1.clone());
    }
    let mut md = String::from(
        "| method | variant | seeds | mean valid RMSE | picked |\n| --- | --- | ---: | ---: | --- |\n",
    );
    for (m, l, n, (mean, std)) in &stats {
        md.push_str(&format!(
            "| {m} | {l} | {n} | {mean:.5} ± {std:.5} | {} |\n",
            if picked.contains(l) { "yes" } else { "" }
        ));
    }
    (picked, md)
}

/// Mean validation curve of each method over its seeds: (label, [(epoch, mean seconds, mean rmse)]).
fn mean_curves(results: &[JobResult]) -> Vec<Curve> {
    let agg = aggregate(results);
    agg.into_iter()
        .map(|(label, _, _)| {
            let mut by_epoch: BTreeMap<u64, (f64, f64, f64)> = BTreeMap::new();
            for r in results.iter().filter(|r| r.label == label) {
                for &(e, t, v) in &r.curve {
                    let s = by_epoch.entry(e as u64).or_insert((0.0, 0.0, 0.0));
                    s.0 += t;
                    s.1 += v;
                    s.2 += 1.0;
                }
            }
            let pts = by_epoch
                .into_iter()
                .map(|(e, (t, v, n))| (e as f64, t / n, v / n))
                .collect();
            (label, pts)
        })
        .collect()
}

/// Writes `valid_rmse_vs_epoch.svg` and `valid_rmse_vs_seconds.svg` into `out`.
pub fn plots(results: &[JobResult], out: &Path) -> Result<()> {
    use plotters::prelude::*;
    let curves = mean_curves(results);
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.2))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min);
    // Leave the first epochs' high errors out of the view so the differences show.
    let hi = all
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max)
        .min(lo * 1.06 + 1e-3);
    for (file, by_time, xlabel) in [
        ("valid_rmse_vs_epoch.svg", false, "epoch"),
        ("valid_rmse_vs_seconds.svg", true, "seconds"),
    ] {
        let path = out.join(file);
        let x_of = |p: &(f64, f64, f64)| if by_time { p.1 } else { p.0 };
        let xmax = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(x_of))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let plot_err = |e: String| Error::io(&path, std::io::Error::other(e));
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    format!("validation RMSE against {xlabel}"),
                    ("sans-serif", 22),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..xmax, (lo - 0.002)..hi)
                .map_err(|e| plot_err(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc(xlabel)
                .y_desc("validation RMSE")
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
            for (k, (label, pts)) in curves.iter().enumerate() {
                let color = Palette99::pick(k).to_rgba();
                let series: Vec<(f64, f64)> = pts.iter().map(|p| (x_of(p), p.2.min(hi))).collect();
                chart
                    .draw_series(LineSeries::new(series, color.stroke_width(2)))
                    .map_err(|e| plot_err(e.to_string()))?
                    .label(label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(e.to_string()))?;
            root.present().map_err(|e| plot_err(e.to_string()))?;
        }
        crate::fs::write_atomic(&path, svg.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }
}
