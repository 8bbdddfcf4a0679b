//! [`Args`]: the flags of `--bench`, parsed by hand as the load program's are.

use std::time::Duration;

/// The side-by-side benchmark's settings. [`Args::default`] holds the flags' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// `--url`: the server to measure against (`mysql://user:password@host:port/database`;
    /// the database is created when missing). `None`: start a throwaway `mariadbd` on a free
    /// loopback port ([`MariaDb`](crate::throwaway::MariaDb)) and measure against it.
    pub url: Option<String>,
    /// `--tasks`: concurrent tasks, each looping checkout, query, return.
    pub tasks: usize,
    /// `--pool-size`: connections in each pool (our `max_size`; mysql_async's
    /// `PoolConstraints` min and max).
    pub pool_size: usize,
    /// `--rounds`: rounds per mode; each round times both pools, one after the other.
    pub rounds: usize,
    /// `--round-ms`: how long each pool runs in a round.
    pub round: Duration,
    /// The seed of the random choices (rows, which checkouts are dirtied); the clock's
    /// nanoseconds unless set.
    pub seed: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            url: None,
            tasks: 64,
            pool_size: 8,
            rounds: 15,
            round: Duration::from_millis(1000),
            seed: crate::bank::Args::default().seed,
        }
    }
}

/// The usage line `--bench --help` prints.
pub const USAGE: &str = "usage: mysql-example --bench \
    [--url mysql://root@127.0.0.1:3306/pool_bench] [--tasks 64] [--pool-size 8] \
    [--rounds 15] [--round-ms 1000]\n\
    without --url, a throwaway mariadbd is started on a free loopback port";

impl Args {
    /// Parses flags (the program's arguments, without its name, `--bench` among them):
    /// `--flag value` each.
    ///
    /// # Errors
    /// A message for the user: [`USAGE`] for `--help`, or what is wrong with a flag.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args::default();
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            if flag == "--bench" {
                continue;
            }
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
                "--url" => parsed.url = Some(value.clone()),
                "--tasks" => parsed.tasks = number()?,
                "--pool-size" => parsed.pool_size = number()?,
                "--rounds" => parsed.rounds = number()?,
                "--round-ms" => parsed.round = Duration::from_millis(number()? as u64),
                other => return Err(format!("unknown flag {other} with --bench; try --help")),
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Args;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let args = parse(&["--bench"]).expect("no flags but --bench");
        assert_eq!(args.url, None);
        assert_eq!(
            (args.tasks, args.pool_size, args.rounds),
            (64, 8, 15),
            "{args:?}"
        );
        assert_eq!(args.round, Duration::from_millis(1000));
    }

    #[test]
    fn every_flag_is_read_and_bad_ones_are_named() {
        let args = parse(&[
            "--url",
            "mysql://u@127.0.0.1:1/db",
            "--bench",
            "--tasks",
            "3",
            "--pool-size",
            "2",
            "--rounds",
            "1",
            "--round-ms",
            "200",
        ])
        .expect("valid flags");
        assert_eq!(args.url.as_deref(), Some("mysql://u@127.0.0.1:1/db"));
        assert_eq!((args.tasks, args.pool_size, args.rounds), (3, 2, 1));
        assert_eq!(args.round, Duration::from_millis(200));
        for (flags, named) in [
            (&["--rounds", "0"][..], "--rounds"),
            (&["--round-ms", "x"], "--round-ms"),
            (&["--cancel-rate", "0.1"], "--cancel-rate"),
        ] {
            let error = parse(flags).expect_err("refused");
            assert!(error.contains(named), "{flags:?}: {error}");
        }
    }
}
