//! Durable writes of skiff's embedded store, beside real etcd in the same run.
//!
//! For 1, 16 and 64 concurrent writers: N creates of ~1 KiB values into
//! `SqliteStore` (WAL, synchronous=FULL, group commit), then the same number
//! of puts into a one-member etcd (Debian `etcd-server`, data dir on the same
//! disk) through its v3 JSON gateway. Prints creates/s, p50/p99 latency and
//! the ratio skiff/etcd. The etcd side pays JSON-gateway overhead that a gRPC
//! client would not; the figures say so rather than hide it.
//!
//! Run: `cargo run --release -p skiff-bench --bin store [-- N]`.

use bytes::Bytes;
use skiff_bench::{etcd_puts, ms, run_clients, start_etcd};
use skiff_store::{SqliteOptions, SqliteStore, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let value = Bytes::from(vec![b'x'; 1024]);
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let etcd = start_etcd(dir.path()).await;
    if let Err(e) = &etcd {
        println!("etcd unavailable, skiff figures only: {e:#}");
    }
    println!("{total} durable writes of 1 KiB per run");
    println!("{:>8} {:>14} {:>10} {:>10} {:>14} {:>10} {:>10} {:>8}", "clients", "skiff ops/s", "p50 ms", "p99 ms", "etcd ops/s", "p50 ms", "p99 ms", "ratio");
    for clients in [1usize, 16, 64] {
        let n = if clients == 1 { total / 10 } else { total };
        let store = SqliteStore::open(dir.path().join(format!("skiff-{clients}.db")), SqliteOptions::default())?;
        let v = value.clone();
        let s = run_clients(n, clients, move |i| {
            let (store, v) = (store.clone(), v.clone());
            async move {
                store.create(&format!("/registry/core/pods/default/p{i}"), v).await?;
                Ok(())
            }
        })
        .await?;
        let e = match &etcd {
            Ok((_, url)) => Some(etcd_puts(url, n, clients, &format!("c{clients}")).await?),
            Err(_) => None,
        };
        match e {
            Some(e) => println!(
                "{clients:>8} {:>14.0} {:>10.2} {:>10.2} {:>14.0} {:>10.2} {:>10.2} {:>7.2}x",
                s.rate,
                ms(s.p50),
                ms(s.p99),
                e.rate,
                ms(e.p50),
                ms(e.p99),
                s.rate / e.rate
            ),
            None => println!("{clients:>8} {:>14.0} {:>10.2} {:>10.2}", s.rate, ms(s.p50), ms(s.p99)),
        }
    }
    Ok(())
}
