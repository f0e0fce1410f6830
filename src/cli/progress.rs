//! Progress on stderr: a bar on a terminal, one line per stage in a log.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Global;

pub(crate) fn progress(global: &Global, len: u64, what: &str) -> ProgressBar {
    if global.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// How a long command reports its stages on stderr: one bar that changes
/// with the stage on a terminal; in a log (CI, a pipe) one line per stage
/// with its time, wrapped in `::group::` under GitHub Actions, so a
/// non-terminal log is never silent for the minutes a gate takes.
pub(crate) struct StageReporter {
    bar: Option<indicatif::ProgressBar>,
    log: bool,
    github: bool,
    /// The stage under way: its name, start, and last (done, total).
    current: Option<(String, std::time::Instant, usize, usize)>,
    started: std::time::Instant,
}

impl StageReporter {
    pub(crate) fn new(g: &Global) -> Self {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        StageReporter {
            bar: (terminal && !g.quiet).then(|| progress(g, 1, "")),
            log: !terminal && !g.quiet,
            github: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
            current: None,
            started: std::time::Instant::now(),
        }
    }

    pub(crate) fn update(&mut self, stage: &str, done: usize, total: usize) {
        if self.current.as_ref().is_none_or(|c| c.0 != stage) {
            self.end_stage();
            if self.log && self.github {
                eprintln!("::group::probegate: {stage}");
            }
            self.current = Some((stage.to_string(), std::time::Instant::now(), done, total));
            if let Some(pb) = &self.bar {
                pb.reset();
                pb.set_message(stage.to_string());
            }
        }
        if let Some(c) = &mut self.current {
            (c.2, c.3) = (done, total);
        }
        if let Some(pb) = &self.bar {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        }
    }

    fn end_stage(&mut self) {
        let Some((stage, t, done, total)) = self.current.take() else {
            return;
        };
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
        if self.log {
            eprintln!(
                "probegate: {stage}: {done}/{total} in {:.1} s ({:.0} s elapsed)",
                t.elapsed().as_secs_f64(),
                self.started.elapsed().as_secs_f64()
            );
            if self.github {
                eprintln!("::endgroup::");
            }
        }
    }
}

impl Drop for StageReporter {
    fn drop(&mut self) {
        self.end_stage();
    }
}

/// A progress callback over a [`StageReporter`].
pub(crate) fn stage_progress(g: &Global) -> impl FnMut(&str, usize, usize) {
    let mut r = StageReporter::new(g);
    move |stage: &str, done: usize, total: usize| r.update(stage, done, total)
}
