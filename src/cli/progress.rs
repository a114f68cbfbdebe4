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
}

impl TablePrinter {
    pub fn new(quiet: bool) -> Self {
        TablePrinter { bar: None, quiet }
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
