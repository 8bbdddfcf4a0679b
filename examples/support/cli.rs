//! What the examples share: a small hand-written flag parser (`--name value`, `--name=value`,
//! `--switch`, `--help`; numbers, seconds, and values that are off unless given) and the printing of an error with its whole `source()` chain.
//!
//! Each example includes this file with `#[path = "support/cli.rs"] mod cli;` and uses only
//! part of it, hence the `allow(dead_code)`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// One flag an example accepts.
pub struct Flag {
    /// The name without dashes: `requests` is given as `--requests`.
    pub name: &'static str,
    /// What the value looks like in the usage text (`N`, `ADDR`); `None` for a switch.
    pub value: Option<&'static str>,
    /// The value when the flag is not given (ignored for a switch); empty for a flag that is
    /// off unless given (read it with [`Args::given`]).
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// An example's command line: its name, what it does, and its flags.
pub struct Spec {
    /// The example's name, as in `cargo run --example <name>`.
    pub name: &'static str,
    /// One or two lines on what it does.
    pub about: &'static str,
    /// The flags it accepts (`--help` is always accepted).
    pub flags: &'static [Flag],
}

/// The parsed command line: a value for every flag that takes one, and the flags given.
pub struct Args {
    spec: &'static Spec,
    values: HashMap<&'static str, String>,
    /// Every flag on the command line, switches included.
    given: Vec<&'static str>,
}

/// Parses `std::env::args()` against `spec`. Prints the usage and exits with status 0 on
/// `--help`; prints the problem and exits with status 2 on a bad command line.
pub fn parse(spec: &'static Spec) -> Args {
    match parse_from(spec, std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{}", usage(spec));
            std::process::exit(0);
        }
        Err(problem) => usage_error(spec, &problem),
    }
}

/// The parser behind [`parse`]: `Ok(None)` means `--help` was asked for.
fn parse_from(
    spec: &'static Spec,
    argv: impl IntoIterator<Item = String>,
) -> Result<Option<Args>, String> {
    let mut values: HashMap<&'static str, String> = spec
        .flags
        .iter()
        .filter(|flag| flag.value.is_some())
        .map(|flag| (flag.name, flag.default.to_owned()))
        .collect();
    let mut given = Vec::new();
    let mut argv = argv.into_iter();
    while let Some(arg) = argv.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(None);
        }
        let Some(body) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (body, None),
        };
        let Some(flag) = spec.flags.iter().find(|flag| flag.name == name) else {
            return Err(format!("unknown flag --{name}"));
        };
        given.push(flag.name);
        match (flag.value, inline) {
            (None, None) => {}
            (None, Some(_)) => return Err(format!("--{name} takes no value")),
            (Some(_), Some(value)) => {
                values.insert(flag.name, value);
            }
            (Some(_), None) => {
                let value = argv
                    .next()
                    .ok_or_else(|| format!("--{name} needs a value"))?;
                values.insert(flag.name, value);
            }
        }
    }
    Ok(Some(Args {
        spec,
        values,
        given,
    }))
}

impl Args {
    /// The value of a flag that takes one (its default when not given).
    pub fn value(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(value) => value,
            None => panic!("the example reads --{name}, which its Spec does not declare"),
        }
    }

    /// The value of a flag as a timeout: seconds (`30`, `0.25`) or `off` for none; exits with
    /// status 2 on anything else, zero included.
    pub fn timeout(&self, name: &str) -> Option<Duration> {
        let value = self.value(name);
        if value == "off" {
            return None;
        }
        Some(self.above_zero(name).unwrap_or_else(|| {
            usage_error(
                self.spec,
                &format!("--{name} {value:?}: expected seconds above 0 (such as 30 or 0.5) or off"),
            )
        }))
    }

    /// The value of a flag as seconds above zero, fractions allowed; `None` when it is not.
    fn above_zero(&self, name: &str) -> Option<Duration> {
        let secs: f64 = self.value(name).parse().ok()?;
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|duration| !duration.is_zero())
    }

    /// The value of a flag parsed as `T`; exits with status 2 when it does not parse.
    pub fn parsed<T: FromStr>(&self, name: &str) -> T
    where
        T::Err: std::fmt::Display,
    {
        let value = self.value(name);
        value
            .parse()
            .unwrap_or_else(|error| usage_error(self.spec, &format!("--{name} {value:?}: {error}")))
    }

    /// The value of a flag as a number of at least 1; exits with status 2 otherwise.
    pub fn positive(&self, name: &str) -> usize {
        let n: usize = self.parsed(name);
        if n == 0 {
            usage_error(self.spec, &format!("--{name} must be at least 1"));
        }
        n
    }

    /// The value of a flag as a number of seconds, fractions allowed (`0.5`), above zero;
    /// exits with status 2 otherwise.
    pub fn seconds(&self, name: &str) -> Duration {
        self.above_zero(name).unwrap_or_else(|| {
            usage_error(
                self.spec,
                &format!("--{name} must be a number of seconds above 0"),
            )
        })
    }

    /// The value of a flag that is off unless given: `None` when it is not on the command
    /// line (its default is then not used).
    pub fn given(&self, name: &str) -> Option<&str> {
        self.given.contains(&name).then(|| self.value(name))
    }

    /// Whether a switch was given.
    pub fn switch(&self, name: &str) -> bool {
        self.given.contains(&name)
    }
}

/// The usage text, made from the spec.
pub fn usage(spec: &Spec) -> String {
    let mut text = format!(
        "{}\n\nusage: cargo run --release --example {} --",
        spec.about, spec.name
    );
    for flag in spec.flags {
        match flag.value {
            Some(value) => write!(text, " [--{} {value}]", flag.name),
            None => write!(text, " [--{}]", flag.name),
        }
        .expect("writing to a String cannot fail");
    }
    text.push_str("\n\nflags:\n");
    for flag in spec.flags {
        let left = match flag.value {
            Some(value) => format!("--{} {value}", flag.name),
            None => format!("--{}", flag.name),
        };
        let default = match flag.value {
            Some(_) if !flag.default.is_empty() => format!(" (default {})", flag.default),
            _ => String::new(),
        };
        writeln!(text, "  {left:<22} {}{default}", flag.help)
            .expect("writing to a String cannot fail");
    }
    writeln!(text, "  {:<22} print this help", "--help").expect("writing to a String cannot fail");
    text
}

fn usage_error(spec: &Spec, problem: &str) -> ! {
    eprintln!("{}: {problem}; try --help", spec.name);
    std::process::exit(2);
}

/// `error` and every `source()` under it, joined with `": "`. `Display` of many errors (a
/// closed connection, a failed connect) names what happened, and only the source says why.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        write!(text, ": {cause}").expect("writing to a String cannot fail");
        source = cause.source();
    }
    text
}

/// For a program built without the cargo feature `feature`: refuses the first of `flags` given
/// on the command line with a message that says how to build with it, and the usage status 2.
/// `Ok` when none of them is given.
pub fn refuse_without_feature(args: &Args, feature: &str, flags: &[&str]) -> Result<(), ExitCode> {
    match flags.iter().find(|flag| args.given.contains(flag)) {
        None => Ok(()),
        Some(flag) => {
            let name = args.spec.name;
            eprintln!(
                "{name}: --{flag} needs the `{feature}` feature, which this build of {name}                  lacks: build with `--features {feature}` (cargo run --release --features                  {feature} --example {name} -- ...)"
            );
            Err(ExitCode::from(2))
        }
    }
}

/// Refuses the flags of the optional features this build lacks: `tls_flags` without the
/// `tls` feature, `--metrics-addr` without `prometheus` (see [`refuse_without_feature`]).
pub fn refuse_missing_features(args: &Args, tls_flags: &[&str]) -> Result<(), ExitCode> {
    #[cfg(not(feature = "tls"))]
    refuse_without_feature(args, "tls", tls_flags)?;
    #[cfg(not(feature = "prometheus"))]
    refuse_without_feature(args, "prometheus", &["metrics-addr"])?;
    let _ = (args, tls_flags);
    Ok(())
}

/// Prints `context: <error chain>` to stderr and returns a failing exit code.
pub fn fail(context: &str, error: &(dyn Error + 'static)) -> ExitCode {
    eprintln!("{context}: {}", chain(error));
    ExitCode::FAILURE
}
