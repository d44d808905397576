//! Progress bars on stderr (indicatif): drawn on a terminal, silent otherwise (as under
//! `bench/run.sh`, which keeps stderr for errors). Results never go through here.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar for `len` steps of `what` (e.g. "connections"), with the rate.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{what:>12} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} {{elapsed}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A counter without a known end (e.g. churn cycles until the deadline), with the rate.
pub(crate) fn counter(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let template = format!("{what:>12} {{spinner}} {{pos}} {{per_sec}} {{elapsed}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}
