//! Adapters to the operating system: systemd over D-Bus, file operations through directory
//! descriptors, children, TLS, clocks, progress bars.

pub mod child;
pub mod clock;
pub mod fsutil;
pub mod progress;
pub mod readas;
pub mod signals;
pub mod systemd;
pub mod tls;
