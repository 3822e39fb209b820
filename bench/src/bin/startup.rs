//! Start-up and idle memory of `skiff server` (release build).
//!
//! Starts the binary in a fresh data dir, times until its port accepts
//! connections with the admin kubeconfig written (the server writes it only
//! once it is ready to serve), then reads its resident set size after a
//! short idle period from /proc. Repeats five times and prints each run.
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin startup`.

use std::time::Duration;

use skiff_bench::{ms, rss_kib, start_skiff};

fn main() -> anyhow::Result<()> {
    for (what, flags) in [
        ("API server alone (--disable scheduler,controllers,agent,proxy,dns)", &["--disable", "scheduler,controllers,agent,proxy,dns"][..]),
        // The proxy stays out: a killed server would leave its nftables
        // table on the host. The DNS is part of the control plane.
        ("whole control plane (--disable agent,proxy)", &["--disable", "agent,proxy"][..]),
    ] {
        println!("{what}");
        println!("{:>4} {:>16} {:>14}", "run", "start→ready ms", "idle RSS MiB");
        for run in 1..=5 {
            let dir = tempfile::tempdir()?;
            let s = start_skiff(dir.path(), flags)?;
            std::thread::sleep(Duration::from_secs(2));
            let rss = rss_kib(s.child.id())?;
            println!("{run:>4} {:>16.1} {:>14.1}", ms(s.ready_after), rss as f64 / 1024.0);
        }
    }
    Ok(())
}
