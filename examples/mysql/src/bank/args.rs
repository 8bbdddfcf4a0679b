//! [`Args`]: the load program's flags, parsed by hand as the Redis example's are.

/// The load program's settings. [`Args::default`] holds the flags' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// `--url`: the server and database (`mysql://user:password@host:port/database`); the
    /// database is created when missing.
    pub url: String,
    /// `--tasks`: concurrent tasks running transfers.
    pub tasks: usize,
    /// `--pool-size`: the pool's `max_size`.
    pub pool_size: usize,
    /// `--transfers`: transfers in all, shared out over the tasks.
    pub transfers: usize,
    /// `--accounts`: rows of the `accounts` table, each starting at 1000.
    pub accounts: usize,
    /// `--cancel-rate`: the share of transfers (0.0 to 1.0) dropped at a random point.
    pub cancel_rate: f64,
    /// The seed of the random choices (accounts, amounts, cancellations); the clock's
    /// nanoseconds unless set. Printed in the summary.
    pub seed: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            url: "mysql://root@127.0.0.1:3306/pool_example".to_owned(),
            tasks: 64,
            pool_size: 8,
            transfers: 20_000,
            accounts: 100,
            cancel_rate: 0.0,
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        }
    }
}

/// The usage line `--help` prints.
pub const USAGE: &str = "usage: mysql-example [--url mysql://root@127.0.0.1:3306/pool_example] \
    [--tasks 64] [--pool-size 8] [--transfers 20000] [--accounts 100] [--cancel-rate 0.0]";

impl Args {
    /// Parses flags (the program's arguments, without its name): `--flag value` each.
    ///
    /// # Errors
    /// A message for the user: [`USAGE`] for `--help`, or what is wrong with a flag.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args::default();
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_owned());
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{flag} needs a positive number, got {value:?}"))
            };
            match flag.as_str() {
                "--url" => parsed.url = value.clone(),
                "--tasks" => parsed.tasks = number()?,
                "--pool-size" => parsed.pool_size = number()?,
                "--transfers" => parsed.transfers = number()?,
                "--accounts" => parsed.accounts = number()?,
                "--cancel-rate" => {
                    parsed.cancel_rate = value
                        .parse::<f64>()
                        .ok()
                        .filter(|rate| (0.0..=1.0).contains(rate))
                        .ok_or_else(|| {
                            format!("--cancel-rate needs a number from 0.0 to 1.0, got {value:?}")
                        })?;
                }
                other => return Err(format!("unknown flag {other}; try --help")),
            }
        }
        if parsed.accounts < 2 {
            return Err("--accounts needs at least 2 (a transfer moves between two)".to_owned());
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::Args;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let args = parse(&[]).expect("no flags");
        assert_eq!(args.url, "mysql://root@127.0.0.1:3306/pool_example");
        assert_eq!(
            (args.tasks, args.pool_size, args.transfers, args.accounts),
            (64, 8, 20_000, 100)
        );
        assert_eq!(args.cancel_rate, 0.0);
    }

    #[test]
    fn every_flag_is_read() {
        let args = parse(&[
            "--url",
            "mysql://u@127.0.0.1:1/db",
            "--tasks",
            "3",
            "--pool-size",
            "2",
            "--transfers",
            "10",
            "--accounts",
            "5",
            "--cancel-rate",
            "0.25",
        ])
        .expect("valid flags");
        assert_eq!(args.url, "mysql://u@127.0.0.1:1/db");
        assert_eq!(
            (args.tasks, args.pool_size, args.transfers, args.accounts),
            (3, 2, 10, 5)
        );
        assert_eq!(args.cancel_rate, 0.25);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (flags, named) in [
            (&["--tasks", "0"][..], "--tasks"),
            (&["--cancel-rate", "1.5"], "--cancel-rate"),
            (&["--accounts", "1"], "--accounts"),
            (&["--pool-size"], "--pool-size"),
            (&["--nope", "1"], "--nope"),
        ] {
            let error = parse(flags).expect_err("refused");
            assert!(error.contains(named), "{flags:?}: {error}");
        }
    }
}
