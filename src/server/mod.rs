//! What we know about Stalwart: its config (0.15's TOML, 0.16's JSON), its environment, its
//! versions, its health, its listeners and its web admin.

pub mod credentials;
pub mod health;
pub mod lines;
pub mod listener;
pub mod serverconfig;
pub mod serverenv;
pub mod version;
pub mod webadmin;
pub mod webui;
