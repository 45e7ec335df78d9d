//! How the reports of `dtxn` round what they print.
//!
//! Floating-point arithmetic leaves noise in the last digits (`4.015 ms`
//! computed as `4.015000000000001`). Every report therefore rounds:
//!
//! * durations the CLI measures itself are milliseconds at microsecond
//!   resolution ([`millis`]: at most 3 decimals);
//! * every other float in a JSON report is cut to
//!   [`SIGNIFICANT_DIGITS`] significant digits, never rounding into its
//!   integer part ([`significant`]), which [`json_line`] applies to the
//!   whole report;
//! * human output prints with a fixed precision per figure.

use std::time::Duration;

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};

/// Significant digits kept of a float in JSON output: far above what a
/// measurement means, far below the noise of `f64` arithmetic.
pub const SIGNIFICANT_DIGITS: i32 = 6;

/// `d` in milliseconds, rounded to the microsecond.
pub fn millis(d: Duration) -> f64 {
    // Whole microseconds, half up; the division by 1000 then gives the
    // double nearest the 3-decimal value, which prints without noise.
    let micros = (d.as_nanos() + 500) / 1000;
    micros as f64 / 1000.0
}

/// `value` rounded to `decimals` decimal places.
pub fn round(value: f64, decimals: u32) -> f64 {
    if !value.is_finite() {
        return value;
    }
    // Formatting rounds the exact binary value correctly; parsing gives
    // the double nearest that decimal, which prints without noise.
    format!("{value:.*}", decimals as usize)
        .parse()
        .unwrap_or(value)
}

/// `value` rounded to [`SIGNIFICANT_DIGITS`] significant digits, but never
/// into its integer part (`1234567.891` becomes `1234568`, not `1234570`).
pub fn significant(value: f64) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return value;
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (SIGNIFICANT_DIGITS - 1 - magnitude).clamp(0, 340);
    round(value, decimals.unsigned_abs())
}

/// A compact JSON formatter that writes every float rounded with
/// [`significant`].
struct Tidy;

impl Formatter for Tidy {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        CompactFormatter.write_f64(writer, significant(value))
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        CompactFormatter.write_f64(writer, significant(f64::from(value)))
    }
}

/// `report` as one line of JSON (fields in declaration order), every float
/// rounded with [`significant`].
///
/// # Errors
///
/// When `report` cannot be serialized (a map with non-string keys).
pub fn json_line<T: Serialize>(report: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    report.serialize(&mut serde_json::Serializer::with_formatter(&mut out, Tidy))?;
    // serde_json writes only valid UTF-8.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_have_microsecond_resolution_without_noise() {
        // 4.015 ms computed the naive way carries float noise...
        let d = Duration::from_nanos(4_015_000);
        assert_eq!(
            (d.as_secs_f64() * 1e3).to_string(),
            "4.015000000000001",
            "the noise this module exists for"
        );
        // ...which millis does not.
        assert_eq!(millis(d).to_string(), "4.015");
        assert_eq!(millis(Duration::from_nanos(4_015_499)).to_string(), "4.015");
        assert_eq!(millis(Duration::from_nanos(4_015_500)).to_string(), "4.016");
        assert_eq!(millis(Duration::from_secs(6)).to_string(), "6000");
        assert_eq!(millis(Duration::ZERO), 0.0);
    }

    #[test]
    fn significant_digits_cut_noise_not_integers() {
        assert_eq!(significant(4.015000000000001).to_string(), "4.015");
        assert_eq!(significant(1.0 / 3.0).to_string(), "0.333333");
        assert_eq!(significant(0.000123456789).to_string(), "0.000123457");
        assert_eq!(significant(1234567.891).to_string(), "1234568");
        assert_eq!(significant(-83.00000000000001).to_string(), "-83");
        assert_eq!(significant(0.0), 0.0);
        assert!(significant(f64::NAN).is_nan());
        assert_eq!(significant(1e-300), 1e-300);
        assert_eq!(
            round(2.675, 2).to_string(),
            "2.67",
            "the binary value rounds"
        );
    }

    #[test]
    fn json_lines_carry_no_float_noise() {
        #[derive(Serialize)]
        struct Report {
            count: u64,
            p50_ms: f64,
            nested: Vec<[f64; 2]>,
        }
        let report = Report {
            count: 7,
            p50_ms: Duration::from_nanos(4_015_000).as_secs_f64() * 1e3,
            nested: vec![[0.1 + 0.2, 1.0]],
        };
        assert_eq!(
            json_line(&report).unwrap(),
            r#"{"count":7,"p50_ms":4.015,"nested":[[0.3,1.0]]}"#
        );
    }
}
