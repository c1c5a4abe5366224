//! Go's `time.ParseDuration`, as Consul's `?wait=` and config files use it: a sequence of decimal numbers
//! with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, e.g. `60000ms`, `1h15m30.5s`. A bare `0` is allowed.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: use a Go duration such as 10s, 1500ms or 5m")]
pub struct BadDuration(pub String);

pub fn parse_go_duration(s: &str) -> Result<Duration, BadDuration> {
    let bad = || BadDuration(s.to_string());
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if frac.contains('.') {
            return Err(bad());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        total_ns = int
            .checked_mul(unit_ns)
            .and_then(|v| total_ns.checked_add(v))
            .ok_or_else(bad)?;
        let mut scale = unit_ns;
        for d in frac.bytes().take(30) {
            scale /= 10;
            total_ns = total_ns.checked_add(u128::from(d - b'0') * scale).ok_or_else(bad)?;
        }
        rest = tail;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, (total_ns % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_consul_clients_send() {
        assert_eq!(parse_go_duration("60000ms"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h15m30.5s"), Ok(Duration::from_millis(4_530_500)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("10µs"), Ok(Duration::from_micros(10)));
    }

    #[test]
    fn rejects_what_go_rejects() {
        for s in ["", "10", "-5s", "5x", "s", ".s", "1..2s", "99999999999999999999h"] {
            assert!(parse_go_duration(s).is_err(), "{s:?} should be rejected");
        }
    }
}

/// Go's `time.Duration.String()`: `0s`, `1.5ms`, `10s`, `1m30s`, `2h0m0s`, as Consul prints check
/// intervals and timeouts.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    // A value below one second is printed in the largest unit that keeps it >= 1.
    let fraction = |whole: u128, frac: u128, digits: usize, unit: &str| {
        let mut s = whole.to_string();
        if frac > 0 {
            let f = format!("{frac:0digits$}");
            s.push('.');
            s.push_str(f.trim_end_matches('0'));
        }
        s.push_str(unit);
        s
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return fraction(ns / 1_000, ns % 1_000, 3, "µs");
    }
    if ns < 1_000_000_000 {
        return fraction(ns / 1_000_000, ns % 1_000_000, 6, "ms");
    }
    let secs = ns / 1_000_000_000;
    let seconds = fraction(secs % 60, ns % 1_000_000_000, 9, "s");
    let (minutes, hours) = ((secs / 60) % 60, secs / 3600);
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (10_000_000_000, "10s"),
            (90_000_000_000, "1m30s"),
            (7_200_000_000_000, "2h0m0s"),
            (61_500_000_000, "1m1.5s"),
        ];
        for (ns, want) in cases {
            assert_eq!(format_go_duration(Duration::from_nanos(ns)), want);
            assert_eq!(parse_go_duration(want).unwrap(), Duration::from_nanos(ns));
        }
    }
}
