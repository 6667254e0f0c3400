//! Boots a throw-away container and keeps it until Enter (or EOF) on stdin, printing how to get
//! in: `cargo run -p testbed --example container` (as root).
//! With `--install-standin VERSION` it also installs a stand-in server release of that version
//! (needs `cargo build -p stalwart-standin` first).

use std::io::BufRead;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = std::time::Instant::now();
    let ct = testbed::Container::boot()?;
    println!(
        "container {} running after {:.2} s",
        ct.name(),
        t.elapsed().as_secs_f64()
    );
    println!("  shell:     nsenter -t {} -a bash", ct.leader());
    println!("  bus:       DBUS_SYSTEM_BUS_ADDRESS={}", ct.bus_address());
    println!("  root dir:  {}", ct.path("/").display());
    println!("  console:   {}", ct.console_log_path().display());
    if let [flag, version] = args.as_slice() {
        if flag == "--install-standin" {
            let release = testbed::standin_release(version, testbed::Fault::None, 300);
            testbed::stalwart::install_server(
                &ct,
                &release,
                testbed::stalwart::ServerLayout::default(),
            )?;
            let ready = testbed::stalwart::wait_ready(&ct, std::time::Duration::from_secs(30))?;
            println!(
                "  stalwart {version} ready after {:.2} s (curl inside: nsenter -t {} -a curl {}/healthz/ready)",
                ready.as_secs_f64(),
                ct.leader(),
                testbed::stalwart::HTTP
            );
        }
    }
    println!("press Enter to stop it");
    let _ = std::io::stdin().lock().lines().next();
    let halted = ct.stop()?;
    println!("stopped in {:.2} s", halted.stop_duration().as_secs_f64());
    Ok(())
}
