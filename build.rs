//! Sets `cfg(real_bins)` when the real Stalwart binaries of the real-server test tier are on this
//! machine (`STALWART_REAL_BINS`, else `../shared/real-stalwart` next to the workspace, the
//! place testbed::real reads): the real-server tests are then compiled to run, and without them
//! they are reported as ignored, with the reason, instead of passing without having run.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(real_bins)");
    println!("cargo::rerun-if-env-changed=STALWART_REAL_BINS");
    let dir = match std::env::var_os("STALWART_REAL_BINS") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
            std::path::Path::new(&manifest)
                .parent()
                .map(|p| p.join("shared/real-stalwart"))
                .unwrap_or_default()
        }
    };
    println!("cargo::rerun-if-changed={}", dir.display());
    if dir.is_dir() {
        println!("cargo::rustc-cfg=real_bins");
    }
}
