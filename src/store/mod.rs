//! What the helper keeps on disk: the snapshots, the binary swap and the kept releases, the
//! state directory.

pub mod carried;
pub mod crossing;
pub mod snapshot;
pub mod state;
pub mod swap;
