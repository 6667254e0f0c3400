//! SIGINT, SIGTERM and SIGHUP while a transaction is open: held, and turned into an abort at the
//! next step boundary (or inside the health gate's wait), so Ctrl-C, a `systemctl stop` of a
//! unit running the helper, or a closed terminal end with the old version healthy and the
//! journal closed instead of a helper killed half-way. A signal during the undo itself is
//! ignored: the undo is what brings the server back. (SIGKILL cannot be held; `recover` is for
//! that.)

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal as NixSignal};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

const SIGNALS: [NixSignal; 3] = [NixSignal::SIGINT, NixSignal::SIGTERM, NixSignal::SIGHUP];

static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Set once the undo runs: from then on signals are held but not acted on.
static UNDOING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: atomic loads and stores only.
    if !UNDOING.load(Ordering::SeqCst) {
        RECEIVED.store(sig, Ordering::SeqCst);
    }
}

/// The undo begins: signals are still held, but nothing acts on them any more (the undo is what
/// brings the server back).
pub fn undoing() {
    UNDOING.store(true, Ordering::SeqCst);
    RECEIVED.store(0, Ordering::SeqCst);
}

/// While alive, the three signals only set the flag `received` reads; dropping it puts the
/// previous dispositions back.
pub struct Held(Vec<(NixSignal, SigAction)>);

/// Starts holding the signals (a signal whose handler cannot be installed keeps its default).
pub fn hold() -> Held {
    RECEIVED.store(0, Ordering::SeqCst);
    UNDOING.store(false, Ordering::SeqCst);
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let mut old = Vec::new();
    for s in SIGNALS {
        // SAFETY: the handler only stores into an atomic.
        if let Ok(prev) = unsafe { sigaction(s, &act) } {
            old.push((s, prev));
        }
    }
    Held(old)
}

impl Drop for Held {
    fn drop(&mut self) {
        for (s, prev) in self.0.drain(..) {
            // SAFETY: restores the disposition sigaction returned.
            let _ = unsafe { sigaction(s, &prev) };
        }
    }
}

/// The signal received since `hold`, if any.
pub fn received() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Some(Signal(n)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGHUP => "SIGHUP",
            _ => "a signal",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_signal_is_recorded_not_fatal() {
        let held = hold();
        assert_eq!(received(), None);
        // SAFETY: raising a signal the process holds a handler for.
        unsafe { libc::raise(libc::SIGHUP) };
        assert_eq!(received(), Some(Signal(libc::SIGHUP)));
        undoing();
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGINT) };
        assert_eq!(received(), None, "ignored while undoing");
        drop(held);
    }
}
