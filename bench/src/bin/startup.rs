//! Start-up and idle memory of `skiff server` (release build).
//!
//! Starts the binary in a fresh data dir, times until its port accepts
//! connections with the admin kubeconfig written (the server writes it only
//! once it is ready to serve), then reads its resident set size after a
//! short idle period from /proc. Repeats five times and prints each run.
//!
//! Run: `cargo build --release -p skiff && cargo run --release -p skiff-bench --bin startup`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

fn main() -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.with_file_name("skiff");
    if !bin.exists() {
        bail!("build it first: cargo build --release -p skiff ({} missing)", bin.display());
    }
    println!("{:>4} {:>16} {:>14}", "run", "start→ready ms", "idle RSS MiB");
    for run in 1..=5 {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let t = Instant::now();
        let mut child = Command::new(&bin)
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(["--bind-address", "127.0.0.1", "--secure-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        loop {
            if kubeconfig.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                bail!("server not ready after 20 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let ready = t.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let rss = rss_kib(child.id())?;
        let _ = child.kill();
        let _ = child.wait();
        println!("{run:>4} {:>16.1} {:>14.1}", ready.as_secs_f64() * 1000.0, rss as f64 / 1024.0);
    }
    Ok(())
}
