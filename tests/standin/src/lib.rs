//! Library side of the stand-in server (a TEST DOUBLE of upstream Stalwart, see `src/main.rs`).
//!
//! Only [`release`] is public API: other crates of the workspace (`testbed`, the helper's tests)
//! use it to make stand-in *releases* and to know which database schema a version uses.

pub mod release;

pub use release::{read_trailer, schema_for, stamp, Fault, Release};
