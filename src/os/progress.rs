//! Progress of the long steps (copying and hashing snapshot data, SQL dumps) on a terminal.
//!
//! Only for an admin at a terminal: the CLI turns it on once, at the edge, when stderr is a
//! terminal and the command is not a package hook. dpkg runs maintainer scripts on apt's
//! terminal, where a redrawn bar would garble apt's own output and the dpkg log, so hooks and
//! unattended runs keep to plain lines (which are also what the journal gets).
//!
//! One bar at a time, process-wide: the steps that move data call [`advance`] from deep inside
//! their copy loops, which must not need a handle threaded through every layer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ENABLED: AtomicBool = AtomicBool::new(false);
static CURRENT: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Turn progress bars on (the CLI, for interactive commands on a terminal).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// A bar for `what` over `total` bytes; finished (its last state left on the terminal) when
/// dropped. Does nothing unless [`enable`]d.
pub struct Task {
    active: bool,
}

/// `total` 0: not known beforehand (a dump, a tree being walked): the bytes so far and the rate.
pub fn bytes(what: &str, total: u64) -> Task {
    if !ENABLED.load(Ordering::Relaxed) {
        return Task { active: false };
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        (total > 0).then_some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let template = if total > 0 {
        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
    } else {
        "{msg:>12} {spinner} {bytes} {bytes_per_sec} {elapsed}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    match CURRENT.lock() {
        Ok(mut cur) => {
            if let Some(old) = cur.replace(bar) {
                old.finish();
            }
            Task { active: true }
        }
        Err(_) => Task { active: false },
    }
}

/// `n` more bytes of the current task done (from any thread).
pub fn advance(n: u64) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    if let Ok(cur) = CURRENT.lock() {
        if let Some(bar) = cur.as_ref() {
            bar.inc(n);
        }
    }
}

/// A writer that counts what goes through it as progress (dumps of unknown size).
pub struct Counted<W>(pub W);

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        advance(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        if let Ok(mut cur) = CURRENT.lock() {
            if let Some(bar) = cur.take() {
                bar.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_progress_draws_nothing_and_costs_nothing() {
        // Not enabled in unit tests (as in hooks): no bar is made, advance is a no-op.
        let t = bytes("copy", 10);
        assert!(!t.active);
        advance(5);
        assert!(CURRENT.lock().unwrap().is_none());
    }
}
