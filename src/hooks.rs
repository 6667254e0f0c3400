//! dpkg maintainer-script and rpm scriptlet entry points. OWNER: packaging helper.

// Placeholder until the packaging work lands (same signatures).
pub fn deb(_ctx: &crate::Context, script: &str, _args: &[String]) -> i32 {
    eprintln!("stalwart-upgrade: `hook deb {script}` is not implemented yet");
    crate::exit::NOT_IMPLEMENTED
}
pub fn rpm(_ctx: &crate::Context, scriptlet: &str, _arg: &str) -> i32 {
    eprintln!("stalwart-upgrade: `hook rpm {scriptlet}` is not implemented yet");
    crate::exit::NOT_IMPLEMENTED
}
