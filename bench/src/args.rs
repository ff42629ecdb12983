//! Command-line scanning, for `coring-bench` and every comparison bench: flags written
//! `--flag value` or `--flag=value`, `-h`/`--help`, and the `--bench` that `cargo bench`
//! passes to each bench binary (skipped).

use std::fmt;
use std::time::Duration;

/// Why a command line was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// `-h` or `--help`: print the usage and stop, successfully.
    Help,
    /// A bad command line, with a message naming the bad part.
    Bad(String),
}

impl From<String> for ArgError {
    fn from(msg: String) -> Self {
        ArgError::Bad(msg)
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Help => f.write_str("help requested"),
            ArgError::Bad(msg) => f.write_str(msg),
        }
    }
}

/// One word of the command line: a flag (or a mode word) and the value written after its
/// `=`, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The word, without any `=value`.
    pub name: String,
    inline: Option<String>,
}

/// The words of a command line, one at a time.
#[derive(Debug)]
pub struct Flags<I> {
    args: I,
}

impl<I: Iterator<Item = String>> Flags<I> {
    /// Scans `args` (without the program name).
    pub fn new(args: impl IntoIterator<IntoIter = I>) -> Self {
        Flags {
            args: args.into_iter(),
        }
    }

    /// The next word; `None` at the end.
    ///
    /// # Errors
    ///
    /// [`ArgError::Help`] for `-h` or `--help`.
    pub fn next_flag(&mut self) -> Result<Option<Flag>, ArgError> {
        for arg in self.args.by_ref() {
            let (name, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg, None),
            };
            match name.as_str() {
                "-h" | "--help" => return Err(ArgError::Help),
                // `cargo bench` passes it to every bench binary.
                "--bench" => continue,
                _ => return Ok(Some(Flag { name, inline })),
            }
        }
        Ok(None)
    }

    /// `flag`'s value: the part after `=`, else the next word.
    ///
    /// # Errors
    ///
    /// When there is none.
    pub fn value(&mut self, flag: &Flag) -> Result<String, String> {
        flag.inline
            .clone()
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{} needs a value", flag.name))
    }

    /// `flag`'s value, parsed.
    ///
    /// # Errors
    ///
    /// A missing value, or one that does not parse.
    pub fn parse<T: std::str::FromStr>(&mut self, flag: &Flag) -> Result<T, String> {
        let value = self.value(flag)?;
        value
            .parse()
            .map_err(|_| format!("{}: cannot parse '{value}'", flag.name))
    }

    /// `flag`'s value as a whole number greater than 0.
    ///
    /// # Errors
    ///
    /// A missing value, or one that is not such a number.
    pub fn count(&mut self, flag: &Flag) -> Result<usize, String> {
        let value = self.value(flag)?;
        positive(&value).ok_or_else(|| {
            format!(
                "{} takes a whole number greater than 0, not '{value}'",
                flag.name
            )
        })
    }

    /// `flag`'s value as a comma-separated list of whole numbers greater than 0.
    ///
    /// # Errors
    ///
    /// A missing value, an empty list, or an item that is not such a number.
    pub fn counts(&mut self, flag: &Flag) -> Result<Vec<usize>, String> {
        self.list(flag, positive)
    }

    /// `flag`'s value as a comma-separated list, each item parsed by `one`.
    ///
    /// # Errors
    ///
    /// A missing value, an empty list, or an item `one` refuses.
    pub fn list<T>(
        &mut self,
        flag: &Flag,
        one: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, String> {
        let value = self.value(flag)?;
        let items: Option<Vec<T>> = value.split(',').map(|s| one(s.trim())).collect();
        match items {
            Some(items) if !items.is_empty() => Ok(items),
            _ => Err(format!("{}: cannot parse '{value}'", flag.name)),
        }
    }

    /// `flag`'s value as seconds, up to an hour; 0 only if `allow_zero`.
    ///
    /// # Errors
    ///
    /// A missing value, or one that is not such a number of seconds.
    pub fn secs(&mut self, flag: &Flag, allow_zero: bool) -> Result<Duration, String> {
        let value = self.value(flag)?;
        let least = if allow_zero { "0" } else { "more than 0" };
        value
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .filter(|d| (allow_zero || !d.is_zero()) && *d <= Duration::from_secs(3600))
            .ok_or_else(|| {
                format!(
                    "{} takes a number of seconds from {least} to 3600, not '{value}'",
                    flag.name
                )
            })
    }
}

/// Parses `args` (without the program name) into `cfg`, one flag at a time: `apply` handles
/// a flag, taking its value from `flags` when it has one, and says whether it knew it.
///
/// # Errors
///
/// `--help`, an error from `apply`, or a flag `apply` does not know.
pub fn parse<C, I: IntoIterator<Item = String>>(
    args: I,
    mut cfg: C,
    mut apply: impl FnMut(&mut C, &Flag, &mut Flags<I::IntoIter>) -> Result<bool, String>,
) -> Result<C, ArgError> {
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag()? {
        if !apply(&mut cfg, &flag, &mut flags)? {
            return Err(format!("unknown argument '{}'", flag.name).into());
        }
    }
    Ok(cfg)
}

/// A whole number greater than 0.
pub fn positive(s: &str) -> Option<usize> {
    s.parse().ok().filter(|&n| n > 0)
}

/// The parsed command line, or the end of the program: prints the usage and exits with
/// status 0 for `--help`, or prints `bench: message` and the usage and exits with status 2.
pub fn or_exit<T>(parsed: Result<T, ArgError>, bench: &str, usage: &str) -> T {
    match parsed {
        Ok(v) => v,
        Err(ArgError::Help) => {
            println!("{usage}");
            std::process::exit(0);
        }
        Err(ArgError::Bad(msg)) => {
            eprintln!("{bench}: {msg}\n\n{usage}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(s: &str) -> Flags<std::vec::IntoIter<String>> {
        Flags::new(s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn values_after_equals_or_in_the_next_word() {
        let mut f = flags("--bench --secs=1.5 --conns 16,64 echo --reps 3");
        let secs = f.next_flag().unwrap().unwrap();
        assert_eq!(secs.name, "--secs");
        assert_eq!(f.secs(&secs, false), Ok(Duration::from_millis(1500)));
        let conns = f.next_flag().unwrap().unwrap();
        assert_eq!(f.counts(&conns), Ok(vec![16, 64]));
        assert_eq!(f.next_flag().unwrap().unwrap().name, "echo");
        let reps = f.next_flag().unwrap().unwrap();
        assert_eq!(f.count(&reps), Ok(3));
        assert_eq!(f.next_flag(), Ok(None));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let mut f = flags("--reps 0 --secs 0 --warmup 0 --qd 1,x --size");
        for (allow_zero, ok) in [(false, false), (false, false), (true, true)] {
            let flag = f.next_flag().unwrap().unwrap();
            let res = if flag.name == "--reps" {
                f.count(&flag).map(|_| ())
            } else {
                f.secs(&flag, allow_zero).map(|_| ())
            };
            assert_eq!(res.is_ok(), ok, "{}: {res:?}", flag.name);
            if let Err(e) = res {
                assert!(e.starts_with(&flag.name), "{e}");
            }
        }
        let qd = f.next_flag().unwrap().unwrap();
        assert!(f.counts(&qd).unwrap_err().contains("--qd"));
        let size = f.next_flag().unwrap().unwrap();
        assert_eq!(f.value(&size), Err("--size needs a value".to_string()));
        assert_eq!(
            flags("x -h").next_flag(),
            Ok(Some(Flag {
                name: "x".into(),
                inline: None
            }))
        );
        let mut help = flags("-h");
        assert_eq!(help.next_flag(), Err(ArgError::Help));
    }
}
