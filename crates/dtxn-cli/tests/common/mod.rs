//! Helpers shared by the end-to-end tests of the `dtxn` binary.

/// Asserts that no number in the JSON text `line` carries float noise:
/// every float has at most 6 significant digits, or no fraction beyond its
/// integer part (`4.015`, `1234568.0`, never `4.015000000000001`).
pub fn assert_no_float_noise(line: &str) {
    for token in numbers(line) {
        let mantissa = token.split(['e', 'E']).next().unwrap_or_default();
        let mantissa = mantissa.trim_start_matches('-');
        let Some((int, frac)) = mantissa.split_once('.') else {
            continue;
        };
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let (digits, allowed) = if int.is_empty() {
            (frac.trim_start_matches('0').len(), 6)
        } else {
            (int.len() + frac.len(), int.len().max(6))
        };
        assert!(
            digits <= allowed,
            "{token} has float noise ({digits} significant digits) in {line}"
        );
    }
}

/// The number tokens of JSON text, outside strings.
fn numbers(json: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    let mut start = None;
    for (i, c) in json.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        let numeric = c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E');
        match (start, numeric) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                tokens.push(&json[s..i]);
                start = None;
            }
            _ => {}
        }
        if c == '"' {
            in_string = true;
        }
    }
    if let Some(s) = start {
        tokens.push(&json[s..]);
    }
    tokens
}

#[test]
fn float_noise_is_caught() {
    assert_no_float_noise(
        r#"{"a":4.015,"b":1234568.0,"c":0.000123457,"d":"4.0150000000001","e":7}"#,
    );
    for noisy in [
        r#"{"p50_ms":4.015000000000001}"#,
        r#"[261.49612300000004]"#,
        r#"{"x":0.30000000000000004}"#,
    ] {
        let caught = std::panic::catch_unwind(|| assert_no_float_noise(noisy));
        assert!(caught.is_err(), "{noisy} passes");
    }
}
