//! The transaction engine: the journal, the runner and its recover rule, the undo, the commit,
//! the signals held while a transaction is open, the endings' announcements, the history.

pub mod announce;
pub mod commit;
pub mod ending;
pub mod history;
pub mod journal;
pub mod resources;
pub mod transaction;
pub mod undo;
pub mod warning;
