//! The terminal observer: one fixed-width line per epoch (LIBMF style) under an indicatif bar that
//! shows only on a terminal.

use crate::error::Result;
use crate::experiment::observe::Observer;
use crate::experiment::{EpochRecord, Summary};
use indicatif::{ProgressBar, ProgressStyle};

/// Prints the learning curve as a table.
pub struct TablePrinter {
    bar: Option<ProgressBar>,
    quiet: bool,
    load: Option<LoadBar>,
}

impl TablePrinter {
    pub fn new(quiet: bool) -> Self {
        TablePrinter {
            bar: None,
            quiet,
            load: None,
        }
    }

    /// A load bar still up (its `matrix` phase), taken down when training starts.
    pub fn after_load(mut self, bar: LoadBar) -> Self {
        self.load = Some(bar);
        self
    }

    fn line(&self, s: String) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(s),
            _ => println!("{s}"),
        }
    }
}

/// The column header of the epoch table.
pub const HEADER: &str =
    "epoch          loss  valid_rmse  valid_mae   cg  passes      damping  elapsed_s";

/// One row of the epoch table.
pub fn format_record(r: &EpochRecord) -> String {
    let opt = |v: Option<f64>, w: usize| match v {
        Some(x) => format!("{x:>w$.5}"),
        None => format!("{:>w$}", "-"),
    };
    let damping = match r.damping {
        Some(g) => format!("{g:>12.4e}"),
        None => format!("{:>12}", "-"),
    };
    format!(
        "{:>5} {:>13.6e} {} {} {:>4} {:>7} {} {:>10.3}{}",
        r.epoch,
        r.loss,
        opt(r.valid_rmse, 11),
        opt(r.valid_mae, 10),
        r.cg_iters,
        r.passes,
        damping,
        r.elapsed_s,
        if r.accepted { "" } else { "  rejected" }
    )
}

impl Observer for TablePrinter {
    fn start(&mut self, name: &str, max_epochs: usize) -> Result<()> {
        if let Some(b) = self.load.take() {
            b.finish();
        }
        if !self.quiet {
            let bar = ProgressBar::new(max_epochs as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} epochs {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            self.bar = Some(bar);
        }
        self.line(HEADER.to_string());
        Ok(())
    }

    fn epoch(&mut self, r: &EpochRecord) -> Result<()> {
        self.line(format_record(r));
        if let Some(b) = &self.bar {
            b.set_position(r.epoch as u64);
            if let Some(v) = r.valid_rmse {
                b.set_message(format!("valid_rmse {v:.4}"));
            }
        }
        Ok(())
    }

    fn finish(&mut self, _s: &Summary) -> Result<()> {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        Ok(())
    }
}

/// A progress bar over `len` things on standard error, drawn only on a terminal (elsewhere the
/// command's closing line says what was done).
pub fn counter(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "[{{bar:30}}] {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)"
        ))
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

/// Progress of a data load on standard error: on a terminal a bar over the input's bytes (a
/// spinner when the size is unknown) with lines/s and the phase; elsewhere a plain line when a
/// phase starts and at every quarter of the input.
pub struct LoadBar {
    bar: Option<ProgressBar>,
    plain: std::sync::Mutex<(String, u64)>,
    quiet: bool,
    start: std::time::Instant,
}

impl LoadBar {
    pub fn new(quiet: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "load [{bar:30}] {bytes}/{total_bytes} {msg} ({elapsed})",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            b
        });
        LoadBar {
            bar,
            plain: std::sync::Mutex::new((String::new(), 0)),
            quiet,
            start: std::time::Instant::now(),
        }
    }

    /// Shows one report.
    pub fn show(&self, p: &crate::data::ingest::Progress) {
        if self.quiet {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = p.lines as f64 / secs;
        if let Some(b) = &self.bar {
            if let Some(t) = p.total {
                b.set_length(t);
            }
            if p.bytes > 0 {
                b.set_position(p.bytes);
            }
            b.set_message(format!(
                "{} | {} lines, {:.1} M lines/s",
                p.phase,
                p.lines,
                rate / 1e6
            ));
            return;
        }
        let mut last = self.plain.lock().expect("no panic holds this lock");
        let quarter = match p.total {
            Some(t) if t > 0 => p.bytes * 4 / t,
            _ => 0,
        };
        // Parsing and id mapping alternate chunk by chunk: one stage for plain lines.
        let stage = if p.phase == "ids" { "parse" } else { p.phase };
        if last.0 != stage || quarter > last.1 {
            if stage == "parse" {
                eprintln!(
                    "load: parse | {} MB | {} lines, {:.1} M lines/s | {:.1} s",
                    p.bytes / 1_000_000,
                    p.lines,
                    rate / 1e6,
                    secs
                );
            } else {
                eprintln!("load: {stage} | {} entries | {secs:.1} s", p.lines);
            }
            *last = (stage.to_string(), quarter);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
