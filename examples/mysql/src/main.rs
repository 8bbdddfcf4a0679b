//! Transfers between bank accounts in MariaDB through the pool, some dropped mid-way:
//! `cargo run --release -p mysql-example -- --url mysql://root@127.0.0.1:3306/pool_example`.
//!
//! Flags: `--url` (default `mysql://root@127.0.0.1:3306/pool_example`; the database is
//! created when missing, the table `accounts` made anew), `--tasks` (64), `--pool-size` (8),
//! `--transfers` (20000, in all), `--accounts` (100), `--cancel-rate` (0.0 to 1.0, default
//! 0: the share of transfers dropped at a random await point). Exits 0 only when the total
//! balance is still `accounts * 1000` and no transfer failed.
//!
//! With `--bench`, it measures our pool against `mysql_async`'s own pool instead
//! ([`mysql_example::bench`]): `--url` (none: a throwaway `mariadbd` is started on a free
//! loopback port), `--tasks` (64), `--pool-size` (8), `--rounds` (15), `--round-ms` (1000).
#![forbid(unsafe_code)]

use mysql_example::bank::{self, chain};
use mysql_example::bench;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--bench") {
        run_bench(args).await
    } else {
        run_transfers(args).await
    }
}

async fn run_transfers(args: Vec<String>) {
    let args = bank::Args::parse(args).unwrap_or_else(|message| usage_error(&message));
    let report = match bank::run(&args).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!(
                "mysql-example: {}\nstart a server (apt-get install mariadb-server) or pass --url",
                chain(&error)
            );
            std::process::exit(1);
        }
    };
    println!("{report}");
    if !report.total_kept() || report.errors > 0 {
        std::process::exit(1);
    }
}

async fn run_bench(args: Vec<String>) {
    let args = bench::Args::parse(args).unwrap_or_else(|message| usage_error(&message));
    match bench::run(&args).await {
        Ok(report) => println!("{report}"),
        Err(error) => {
            eprintln!("mysql-example --bench: {}", chain(&error));
            std::process::exit(1);
        }
    }
}

fn usage_error(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}
