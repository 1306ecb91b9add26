//! Progress bars for long steps, shown only when stderr is a terminal and the work is large enough to
//! wait for; in CI logs and pipes the packager stays quiet.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

/// Below this many items a step is too quick for a bar to be worth drawing.
const MIN_ITEMS: u64 = 500;

/// A progress bar, or nothing. Cheap to clone and share between threads.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// No progress output at all.
    pub fn hidden() -> Self {
        Self(None)
    }

    /// A bar over `len` items labelled `what`, drawn on stderr only when stderr is a terminal and `len` is
    /// large.
    pub fn stderr(len: u64, what: &'static str) -> Self {
        if len < MIN_ITEMS || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new(len);
        // The template is a literal checked by the tests below; on the impossible failure, keep the default.
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        Self(Some(bar))
    }

    /// Records `n` more items done.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_and_small_work_draws_nothing() {
        assert!(
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .is_ok()
        );
        assert!(Progress::stderr(3, "x").0.is_none());
    }
}
