//! Go's formatting as templates see it: `fmt.Sprintf` verbs for `printf`, the escapers behind `html`,
//! `js` and `urlquery`, and time layouts for `timestamp`.

use super::value::{format_float_g, Value};
use std::fmt::Write as _;

pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn escape_js(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            '\n' => out.push_str("\\u000A"),
            '\r' => out.push_str("\\u000D"),
            '\t' => out.push_str("\\u0009"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn escape_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%v %s %d %q %f %e %g %x %X %o %b %t %c %%`, with
/// flags `-+ 0#`, width and precision.
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space, mut sharp) = (false, false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => sharp = true,
                _ => break,
            }
            chars.next();
        }
        let mut width = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some(
                width
                    .unwrap_or(0usize)
                    .saturating_mul(10)
                    .saturating_add(d as usize)
                    .min(4096),
            );
            chars.next();
        }
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p.saturating_mul(10).saturating_add(d as usize).min(4096);
                chars.next();
            }
            prec = Some(p);
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let body = format_verb(verb, arg, prec, plus, space, sharp);
        let len = body.chars().count();
        match width {
            Some(w) if w > len => {
                let pad = w - len;
                if minus {
                    out.push_str(&body);
                    out.extend(std::iter::repeat_n(' ', pad));
                } else if zero
                    && matches!(verb, 'd' | 'f' | 'F' | 'e' | 'g' | 'x' | 'X' | 'o' | 'b')
                    && matches!(arg, Value::Int(_) | Value::Float(_))
                {
                    let (sign, digits) = match body.strip_prefix(['-', '+']) {
                        Some(d) => (&body[..1], d),
                        None => ("", body.as_str()),
                    };
                    out.push_str(sign);
                    out.extend(std::iter::repeat_n('0', pad));
                    out.push_str(digits);
                } else {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[next..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", go_type(a), a.to_text());
        }
        out.push(')');
    }
    out
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float64",
        Value::Str(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
    }
}

fn format_verb(verb: char, arg: &Value, prec: Option<usize>, plus: bool, space: bool, sharp: bool) -> String {
    let bad = || format!("%!{verb}({}={})", go_type(arg), arg.to_text());
    let signed = |s: String, neg: bool| {
        if neg {
            s
        } else if plus {
            format!("+{s}")
        } else if space {
            format!(" {s}")
        } else {
            s
        }
    };
    match (verb, arg) {
        ('v', Value::Null) | ('s', Value::Null) => "<nil>".into(),
        ('v' | 's', Value::Str(s)) => match prec {
            Some(p) => s.chars().take(p).collect(),
            None => s.clone(),
        },
        ('v' | 'd', Value::Int(i)) => signed(i.to_string(), *i < 0),
        ('v', Value::Float(f)) => signed(format_float_g(*f), *f < 0.0),
        ('v' | 't', Value::Bool(b)) => b.to_string(),
        ('v' | 's', Value::List(_) | Value::Map(_)) => {
            let mut s = String::new();
            arg.write_text(&mut s, false);
            s
        }
        ('q', Value::Str(s)) => go_quote(s),
        ('q', Value::Int(i)) => match u32::try_from(*i).ok().and_then(char::from_u32) {
            Some(c) => format!("'{c}'"),
            None => bad(),
        },
        ('c', Value::Int(i)) => u32::try_from(*i)
            .ok()
            .and_then(char::from_u32)
            .map_or_else(bad, String::from),
        ('x' | 'X', Value::Int(i)) => {
            let s = format!("{:x}", i.unsigned_abs());
            let s = if sharp { format!("0x{s}") } else { s };
            let s = if verb == 'X' { s.to_uppercase() } else { s };
            signed(if *i < 0 { format!("-{s}") } else { s }, *i < 0)
        }
        ('x' | 'X', Value::Str(s)) => {
            let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            if verb == 'X' {
                hex.to_uppercase()
            } else {
                hex
            }
        }
        ('o', Value::Int(i)) => signed(
            format!("{}{:o}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
            *i < 0,
        ),
        ('b', Value::Int(i)) => signed(
            format!("{}{:b}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
            *i < 0,
        ),
        ('f' | 'F' | 'e' | 'g', Value::Int(_) | Value::Float(_)) => {
            let f = match arg {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                _ => return bad(),
            };
            if matches!(arg, Value::Int(_)) {
                return bad();
            }
            let s = match verb {
                'f' | 'F' => format!("{:.*}", prec.unwrap_or(6), f),
                'e' => {
                    let s = format!("{:.*e}", prec.unwrap_or(6), f);
                    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                    let (sign, d) = match e.strip_prefix('-') {
                        Some(d) => ('-', d),
                        None => ('+', e),
                    };
                    format!("{m}e{sign}{d:0>2}")
                }
                _ => format_float_g(f),
            };
            signed(s, f < 0.0)
        }
        _ => bad(),
    }
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Unix seconds → civil UTC date (Howard Hinnant's algorithm).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
    (year, month, day, rem / 3600, rem / 60 % 60, rem % 60, weekday)
}

/// `timestamp`: the time in UTC formatted with a Go layout (`2006-01-02T15:04:05Z07:00` by default).
pub(crate) fn timestamp(now: i64, layout: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let (y, mo, d, h, mi, s, wd) = civil(now);
    let tokens: &[(&str, String)] = &[
        ("2006", format!("{y:04}")),
        ("January", MONTHS[mo as usize - 1].to_string()),
        ("Monday", DAYS[wd as usize].to_string()),
        ("Z07:00", "Z".into()),
        ("-07:00", "+00:00".into()),
        ("-0700", "+0000".into()),
        ("Jan", MONTHS[mo as usize - 1][..3].to_string()),
        ("Mon", DAYS[wd as usize][..3].to_string()),
        ("MST", "UTC".into()),
        ("01", format!("{mo:02}")),
        ("02", format!("{d:02}")),
        ("15", format!("{h:02}")),
        ("03", format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })),
        ("04", format!("{mi:02}")),
        ("05", format!("{s:02}")),
        ("06", format!("{:02}", y.rem_euclid(100))),
        ("PM", if h >= 12 { "PM" } else { "AM" }.into()),
        ("pm", if h >= 12 { "pm" } else { "am" }.into()),
        ("_2", format!("{d:>2}")),
        ("1", mo.to_string()),
        ("2", d.to_string()),
        ("3", (if h % 12 == 0 { 12 } else { h % 12 }).to_string()),
        ("4", mi.to_string()),
        ("5", s.to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}
