//! Describing a JSON error to the peer that sent the JSON, without quoting what it sent.
//!
//! serde_json's messages quote the offending value: `invalid type: string "…", expected i64`,
//! ``unknown variant `…` ``. Echoing a client's bytes back in an error frame or an HTTP body
//! is how reflected-content bugs start (a dashboard rendering `details` as HTML, a log line
//! with attacker-chosen text), so error replies say *what kind* of value was wrong and where,
//! never the value itself. Names from our own schema (`missing field `room_id``, the
//! `expected …` part) are kept: they are the useful part of the message.

/// `e`'s message with every quoted piece of input removed, at most [`MAX_LEN`] bytes.
pub fn describe(e: &serde_json::Error) -> String {
    scrub(&e.to_string())
}

/// Longest description returned.
pub const MAX_LEN: usize = 160;

/// Words after which serde puts a quoted piece of *input* in backticks.
const INPUT_BEFORE_BACKTICK: [&str; 7] = [
    "unknown field ",
    "unknown variant ",
    "integer ",
    "floating point ",
    "boolean ",
    "character ",
    "invalid value: ",
];

fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_LEN));
    let mut chars = message.chars().peekable();
    // Everything after "expected" describes our schema, not the input.
    let mut in_expected = false;
    while let Some(c) = chars.next() {
        match c {
            // A Debug-quoted string: always input (serde quotes strings it received this way).
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                trim_trailing_space(&mut out);
            }
            '`' if !in_expected && INPUT_BEFORE_BACKTICK.iter().any(|w| out.ends_with(w)) => {
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
                trim_trailing_space(&mut out);
            }
            c if c.is_control() => out.push(' '),
            c => {
                out.push(c);
                if out.ends_with("expected") {
                    in_expected = true;
                }
            }
        }
    }
    if out.len() > MAX_LEN {
        let mut end = MAX_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

fn trim_trailing_space(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
}

/// What kind of JSON value `raw` is, for messages such as "must be an integer, got a string".
pub fn kind_of(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a non-integer or out-of-range number",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        room_id: String,
        n: Option<i64>,
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Red,
    }

    fn err(json: &str) -> String {
        describe(&serde_json::from_str::<Req>(json).unwrap_err())
    }

    const SECRET: &str = "<script>alert(1)</script>";

    #[test]
    fn input_never_appears_but_schema_names_do() {
        let cases = [
            format!(r#"{{"room_id": 5, "x": "{SECRET}"}}"#),
            format!(r#"{{"room_id": "r", "n": "{SECRET}"}}"#),
            format!(r#"{{"room_id": "r", "kind": "{SECRET}"}}"#),
            format!(r#"{{"room_id": "r", "{SECRET}": 1}}"#),
            format!(r#"{{"room_id": "r", "n": 1.5e300, "x": "{SECRET}"}}"#),
            r#"{"room_id": "r", "n": true}"#.to_string(),
            format!(r#"{{"room_id": ["{SECRET}"]}}"#),
            format!(r#"{{"room_id": "{SECRET}\"#),
        ];
        for case in &cases {
            let d = err(case);
            assert!(!d.contains("script"), "{case} -> {d}");
            assert!(!d.contains('"'), "{case} -> {d}");
        }
        assert_eq!(err("{}"), "missing field `room_id` at line 1 column 2");
        let wrong_type = err(&format!(r#"{{"room_id": "r", "n": "{SECRET}"}}"#));
        assert!(
            wrong_type.starts_with("invalid type: string, expected i64"),
            "{wrong_type}"
        );
        let variant = err(&format!(r#"{{"room_id": "r", "kind": "{SECRET}"}}"#));
        assert!(
            variant.contains("unknown variant, expected `red`"),
            "{variant}"
        );
        let field = err(r#"{"room_id": "r", "zzz": 1}"#);
        assert!(
            field.starts_with("unknown field, expected one of `room_id`, `n`, `kind`"),
            "{field}"
        );
        assert!(
            err(r#"{"room_id": "r", "n": true}"#).starts_with("invalid type: boolean, expected")
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = format!("expected {}", "é".repeat(200));
        let s = scrub(&long);
        assert!(s.len() <= MAX_LEN + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of(r#""7""#), "a string");
        assert_eq!(kind_of("7.5"), "a non-integer or out-of-range number");
        assert_eq!(kind_of("{}"), "an object");
    }
}
