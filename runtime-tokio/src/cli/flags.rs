//! Go's `flag` package semantics, which Consul's CLI (and every tool written against it) follows:
//! `-flag` and `--flag` are the same; `-flag=value` or `-flag value` for non-bool flags; bool flags take
//! only `-flag` or `-flag=true|false`; no combined short flags; parsing stops at the first non-flag
//! argument (or after `--`), so options come before positionals. Error texts are Go's.
//!
//! A dedicated parser rather than clap: clap's bool flags reject `-flag=false`, it keeps parsing after
//! positionals, and its error texts differ from what scripts written for Consul expect.

use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    U64,
    /// A string flag that may repeat (`-tag a -tag b`).
    List,
}

struct Spec {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FlagError {
    /// `-h`, `-help` (when not defined): print usage.
    Help,
    /// A parse error, with Go's message.
    Bad(String),
}

/// A set of flags, then the positional arguments that followed them.
#[derive(Default)]
pub(crate) struct FlagSet {
    specs: Vec<Spec>,
    values: BTreeMap<&'static str, String>,
    lists: BTreeMap<&'static str, Vec<String>>,
    args: Vec<String>,
}

impl FlagSet {
    pub(crate) fn new() -> Self {
        FlagSet::default()
    }

    fn add(mut self, name: &'static str, kind: Kind, default: &'static str, help: &'static str) -> Self {
        debug_assert!(self.spec(name).is_none(), "flag -{name} defined twice");
        self.specs.push(Spec {
            name,
            kind,
            default,
            help,
        });
        self
    }

    pub(crate) fn bool(self, name: &'static str, help: &'static str) -> Self {
        self.add(name, Kind::Bool, "false", help)
    }

    /// A boolean flag that is on unless `-name=false` is given.
    pub(crate) fn bool_on(self, name: &'static str, help: &'static str) -> Self {
        self.add(name, Kind::Bool, "true", help)
    }

    pub(crate) fn string(self, name: &'static str, default: &'static str, help: &'static str) -> Self {
        self.add(name, Kind::Str, default, help)
    }

    pub(crate) fn u64(self, name: &'static str, help: &'static str) -> Self {
        self.add(name, Kind::U64, "0", help)
    }

    pub(crate) fn list(self, name: &'static str, help: &'static str) -> Self {
        self.add(name, Kind::List, "", help)
    }

    fn spec(&self, name: &str) -> Option<&Spec> {
        self.specs.iter().find(|s| s.name == name)
    }

    pub(crate) fn parse(&mut self, args: &[String]) -> Result<(), FlagError> {
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if arg.len() < 2 || !arg.starts_with('-') {
                break;
            }
            i += 1;
            if arg == "--" {
                break;
            }
            let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
            if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
                return Err(FlagError::Bad(format!("bad flag syntax: {arg}")));
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(spec) = self.spec(name) else {
                if name == "h" || name == "help" {
                    return Err(FlagError::Help);
                }
                return Err(FlagError::Bad(format!("flag provided but not defined: -{name}")));
            };
            let (key, kind) = (spec.name, spec.kind);
            let value = match (kind, inline) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some(v)) => match parse_bool(&v) {
                    Some(b) => b.to_string(),
                    None => {
                        return Err(FlagError::Bad(format!(
                            "invalid boolean value {v:?} for -{name}: parse error"
                        )))
                    }
                },
                (_, Some(v)) => v,
                (_, None) if i < args.len() => {
                    i += 1;
                    args[i - 1].clone()
                }
                (_, None) => return Err(FlagError::Bad(format!("flag needs an argument: -{name}"))),
            };
            if kind == Kind::U64 && value.parse::<u64>().is_err() {
                return Err(FlagError::Bad(format!(
                    "invalid value {value:?} for flag -{name}: parse error"
                )));
            }
            if kind == Kind::List {
                self.lists.entry(key).or_default().push(value);
                continue;
            }
            self.values.insert(key, value);
        }
        self.args = args[i..].to_vec();
        Ok(())
    }

    fn raw(&self, name: &str) -> &str {
        match self.values.get(name) {
            Some(v) => v,
            None => self.spec(name).map_or("", |s| s.default),
        }
    }

    pub(crate) fn get_bool(&self, name: &str) -> bool {
        self.raw(name) == "true"
    }

    pub(crate) fn get_str(&self, name: &str) -> &str {
        self.raw(name)
    }

    /// Every value of a repeatable flag, in order.
    pub(crate) fn get_list(&self, name: &str) -> &[String] {
        self.lists.get(name).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn get_u64(&self, name: &str) -> u64 {
        self.raw(name).parse().unwrap_or(0)
    }

    /// Whether the flag was given on the command line.
    #[cfg(test)]
    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The positional arguments after the flags.
    pub(crate) fn args(&self) -> &[String] {
        &self.args
    }

    /// The flag list for `-help`, in Go's `PrintDefaults` layout.
    pub(crate) fn usage(&self) -> String {
        let mut out = String::new();
        for s in &self.specs {
            let arg = match s.kind {
                Kind::Bool => "",
                Kind::Str | Kind::List => "=<string>",
                Kind::U64 => "=<uint>",
            };
            out.push_str(&format!("\n  -{}{}\n     {}\n", s.name, arg, s.help));
        }
        out
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> FlagSet {
        FlagSet::new()
            .bool("recurse", "")
            .string("separator", "/", "")
            .u64("modify-index", "")
            .bool("cas", "")
    }

    fn parse(args: &[&str]) -> Result<FlagSet, FlagError> {
        let mut fs = set();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        fs.parse(&args).map(|()| fs)
    }

    #[test]
    fn single_and_double_dash_with_or_without_equals() {
        let fs = parse(&["-recurse", "--separator", ":", "-modify-index=7", "key"]).unwrap();
        assert!(fs.get_bool("recurse"));
        assert_eq!(fs.get_str("separator"), ":");
        assert_eq!(fs.get_u64("modify-index"), 7);
        assert_eq!(fs.args(), ["key"]);
        let fs = parse(&["--modify-index", "9", "--cas=true"]).unwrap();
        assert_eq!(fs.get_u64("modify-index"), 9);
        assert!(fs.get_bool("cas"));
        assert!(fs.args().is_empty());
    }

    #[test]
    fn defaults_apply_when_absent() {
        let fs = parse(&[]).unwrap();
        assert!(!fs.get_bool("recurse"));
        assert!(!fs.is_set("separator"));
        assert_eq!(fs.get_str("separator"), "/");
        assert_eq!(fs.get_u64("modify-index"), 0);
    }

    #[test]
    fn bool_flags_take_only_attached_values() {
        let fs = parse(&["-recurse=false", "-cas", "false"]).unwrap();
        assert!(!fs.get_bool("recurse"));
        assert!(fs.get_bool("cas"));
        assert_eq!(
            fs.args(),
            ["false"],
            "`-flag false` leaves false as a positional, as in Go"
        );
        assert_eq!(
            parse(&["-cas=maybe"]).err(),
            Some(FlagError::Bad(
                "invalid boolean value \"maybe\" for -cas: parse error".into()
            ))
        );
    }

    #[test]
    fn parsing_stops_at_the_first_positional_or_double_dash() {
        let fs = parse(&["key", "-recurse"]).unwrap();
        assert!(!fs.get_bool("recurse"));
        assert_eq!(fs.args(), ["key", "-recurse"]);
        let fs = parse(&["--", "-recurse"]).unwrap();
        assert_eq!(fs.args(), ["-recurse"]);
        let fs = parse(&["-", "x"]).unwrap();
        assert_eq!(fs.args(), ["-", "x"], "a lone dash is a positional (stdin)");
    }

    #[test]
    fn go_error_messages() {
        assert_eq!(
            parse(&["-nope"]).err(),
            Some(FlagError::Bad("flag provided but not defined: -nope".into()))
        );
        assert_eq!(
            parse(&["-separator"]).err(),
            Some(FlagError::Bad("flag needs an argument: -separator".into()))
        );
        assert_eq!(
            parse(&["-modify-index=x"]).err(),
            Some(FlagError::Bad(
                "invalid value \"x\" for flag -modify-index: parse error".into()
            ))
        );
        assert_eq!(
            parse(&["---x"]).err(),
            Some(FlagError::Bad("bad flag syntax: ---x".into()))
        );
        assert_eq!(parse(&["-h"]).err(), Some(FlagError::Help));
        assert_eq!(parse(&["--help"]).err(), Some(FlagError::Help));
    }

    #[test]
    fn no_combined_short_flags() {
        assert!(matches!(parse(&["-rc"]), Err(FlagError::Bad(_))));
    }
}
