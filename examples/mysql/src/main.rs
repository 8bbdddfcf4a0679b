//! Transfers between bank accounts in MariaDB through the pool, some dropped mid-way:
//! `cargo run --release -p mysql-example -- --url mysql://root@127.0.0.1:3306/pool_example`.
//!
//! Flags: `--url` (default `mysql://root@127.0.0.1:3306/pool_example`; the database is
//! created when missing, the table `accounts` made anew), `--tasks` (64), `--pool-size` (8),
//! `--transfers` (20000, in all), `--accounts` (100), `--cancel-rate` (0.0 to 1.0, default
//! 0: the share of transfers dropped at a random await point). Exits 0 only when the total
//! balance is still `accounts * 1000` and no transfer failed.
#![forbid(unsafe_code)]

use mysql_example::bank::{Args, chain, run};

#[tokio::main]
async fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let report = match run(&args).await {
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
