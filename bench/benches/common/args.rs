//! Command-line scanning the comparison benches share (`vs_tokio`, `stream`): flags with
//! a value after them or after `=`, `-h`/`--help`, and the `--bench` cargo passes.
#![allow(dead_code)]

use std::time::Duration;

/// The flags of a command line, one at a time.
pub struct Flags<I> {
    args: I,
    usage: &'static str,
    fail: fn(&str) -> !,
}

impl<I: Iterator<Item = String>> Flags<I> {
    /// Scans `args` (without the program name); `fail` reports a bad command line and
    /// exits, `usage` is what `--help` prints.
    pub fn new(
        args: impl IntoIterator<IntoIter = I>,
        usage: &'static str,
        fail: fn(&str) -> !,
    ) -> Self {
        Flags {
            args: args.into_iter(),
            usage,
            fail,
        }
    }

    /// The next flag, with its value if written `--flag=value`. Prints the usage and exits
    /// on `-h`/`--help`; skips the `--bench` cargo passes to every bench target.
    pub fn next_flag(&mut self) -> Option<(String, Option<String>)> {
        loop {
            let arg = self.args.next()?;
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg, None),
            };
            match flag.as_str() {
                "-h" | "--help" => {
                    println!("{}", self.usage);
                    std::process::exit(0);
                }
                "--bench" => continue,
                _ => return Some((flag, inline)),
            }
        }
    }

    /// `flag`'s value: the part after `=`, else the next argument.
    pub fn value(&mut self, flag: &str, inline: Option<String>) -> String {
        inline
            .or_else(|| self.args.next())
            .unwrap_or_else(|| (self.fail)(&format!("{flag} needs a value")))
    }

    /// `flag`'s value as a whole number greater than 0.
    pub fn count(&mut self, flag: &str, inline: Option<String>) -> usize {
        let value = self.value(flag, inline);
        match value.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => (self.fail)(&format!(
                "{flag} takes a whole number greater than 0, not '{value}'"
            )),
        }
    }

    /// `flag`'s value as seconds, from 0 to an hour.
    pub fn secs(&mut self, flag: &str, inline: Option<String>) -> Duration {
        let value = self.value(flag, inline);
        value
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .filter(|d| *d <= Duration::from_secs(3600))
            .unwrap_or_else(|| {
                (self.fail)(&format!(
                    "{flag} takes a number of seconds from 0 to 3600, not '{value}'"
                ))
            })
    }
}
