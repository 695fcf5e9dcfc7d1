//! Kubernetes resource quantities (`100m`, `128Mi`, `1.5Gi`, `2`, `1e3`, `500k`) as exact
//! integers.
//!
//! The scheduler and the agent compare and sum quantities, so they must never go through a
//! float: a quantity is parsed into milli-units held in an `i128`, and rounded up (away from
//! zero) the way Kubernetes rounds anything finer than a thousandth.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A string that is not a Kubernetes quantity, or one too large to use.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{quantity:?} is not a quantity: {reason}")]
pub struct QuantityError {
    /// The input, shortened if it is long.
    pub quantity: String,
    pub reason: String,
}

impl QuantityError {
    fn new(quantity: &str, reason: impl Into<String>) -> Self {
        const MAX: usize = 40;
        let quantity = match quantity.char_indices().nth(MAX) {
            Some((end, _)) => format!("{}...", &quantity[..end]),
            None => quantity.to_string(),
        };
        QuantityError {
            quantity,
            reason: reason.into(),
        }
    }
}

/// The suffixes Kubernetes accepts, as (power of ten, power of two).
fn suffix_scale(suffix: &str) -> Option<(i32, u32)> {
    Some(match suffix {
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "" => (0, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => return None,
    })
}

/// The value in milli-units (thousandths), rounded up like Kubernetes does. "100m" -> 100, "2"
/// -> 2000, "128Mi" -> 128*1024*1024*1000.
pub fn parse_milli(s: &str) -> Result<i128, QuantityError> {
    let error = |reason: &str| QuantityError::new(s, reason);
    if s.is_empty() {
        return Err(error("it is empty"));
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(error("expected a number like 100m, 128Mi or 1.5"));
    }
    if fraction.contains('.') {
        return Err(error("it has more than one decimal point"));
    }

    let (mut power_of_ten, power_of_two) = match suffix_scale(suffix) {
        Some(scale) => scale,
        None => match suffix.strip_prefix(['e', 'E']) {
            Some(exponent) if is_signed_integer(exponent) => {
                // Anything beyond a few hundred is out of range either way; clamping keeps
                // the arithmetic below in bounds.
                let exponent = exponent.parse::<i64>().unwrap_or(if exponent.starts_with('-') {
                    i64::MIN
                } else {
                    i64::MAX
                });
                (exponent.clamp(-1000, 1000) as i32, 0)
            }
            _ => {
                return Err(error(&format!(
                    "unknown suffix {suffix:?} (expected one of n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or an exponent like e3)"
                )))
            }
        },
    };

    // mantissa * 10^(power_of_ten - fraction digits) * 2^power_of_two, in thousandths.
    let fraction = fraction.trim_end_matches('0');
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    power_of_ten += 3 - fraction.len() as i32;
    if digits.is_empty() {
        return Ok(0);
    }
    let too_large = || error("it is too large");
    let mantissa: i128 = digits.parse().map_err(|_| too_large())?;
    let mut value = mantissa
        .checked_mul(1i128.checked_shl(power_of_two).ok_or_else(too_large)?)
        .ok_or_else(too_large)?;
    if power_of_ten >= 0 {
        value = 10i128
            .checked_pow(power_of_ten as u32)
            .and_then(|scale| value.checked_mul(scale))
            .ok_or_else(too_large)?;
    } else {
        // Finer than a thousandth: round up, so that 0.1m is 1m as in Kubernetes.
        value = match 10i128.checked_pow(power_of_ten.unsigned_abs()) {
            Some(scale) => value.div_euclid(scale) + i128::from(value % scale != 0),
            None => 1,
        };
    }
    Ok(if negative { -value } else { value })
}

fn is_signed_integer(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A CPU quantity in millicores: `500m` -> 500, `2` -> 2000.
pub fn cpu_millis(q: &Quantity) -> Result<i64, QuantityError> {
    let milli = parse_milli(&q.0)?;
    i64::try_from(milli).map_err(|_| QuantityError::new(&q.0, "it is too large"))
}

/// A quantity in whole units (bytes, for memory), rounded up: `128Mi` -> 134217728.
pub fn bytes(q: &Quantity) -> Result<i64, QuantityError> {
    let milli = parse_milli(&q.0)?;
    let units = milli.abs().div_euclid(1000) + i128::from(milli % 1000 != 0);
    let units = if milli < 0 { -units } else { units };
    i64::try_from(units).map_err(|_| QuantityError::new(&q.0, "it is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    #[test]
    fn decimal_suffixes_scale_by_powers_of_ten() {
        for (input, milli) in [
            ("100m", 100),
            ("2", 2000),
            ("0", 0),
            ("500k", 500_000_000),
            ("1M", 1_000_000_000),
            ("1G", 1_000_000_000_000),
            ("1T", 1_000_000_000_000_000),
            ("1P", 1_000_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000_000),
            ("1500u", 2),
            ("1000000n", 1),
            ("1n", 1),
        ] {
            assert_eq!(parse_milli(input), Ok(milli), "{input}");
        }
    }

    #[test]
    fn binary_suffixes_scale_by_powers_of_two() {
        assert_eq!(parse_milli("128Mi"), Ok(128 * 1024 * 1024 * 1000));
        assert_eq!(parse_milli("1Ki"), Ok(1024 * 1000));
        assert_eq!(parse_milli("1.5Gi"), Ok(1536 * 1024 * 1024 * 1000));
        assert_eq!(parse_milli("1Ei"), Ok((1i128 << 60) * 1000));
        assert_eq!(parse_milli("1Ti"), Ok((1i128 << 40) * 1000));
        assert_eq!(parse_milli("1Pi"), Ok((1i128 << 50) * 1000));
    }

    #[test]
    fn fractions_exponents_and_signs() {
        assert_eq!(parse_milli("0.5"), Ok(500));
        assert_eq!(parse_milli(".5"), Ok(500));
        assert_eq!(parse_milli("1."), Ok(1000));
        assert_eq!(parse_milli("1e3"), Ok(1_000_000));
        assert_eq!(parse_milli("1E3"), Ok(1_000_000));
        assert_eq!(parse_milli("1.5e-3"), Ok(2));
        assert_eq!(parse_milli("12e+1"), Ok(120_000));
        assert_eq!(parse_milli("-100m"), Ok(-100));
        assert_eq!(parse_milli("+2"), Ok(2000));
        assert_eq!(parse_milli("-0.1m"), Ok(-1));
        assert_eq!(parse_milli("0.1m"), Ok(1));
        assert_eq!(parse_milli("1e-400"), Ok(1));
        assert_eq!(parse_milli("0e9999"), Ok(0));
        assert_eq!(parse_milli("0.000"), Ok(0));
    }

    #[test]
    fn rejects_garbage() {
        for input in [
            "", "m", "Mi", "-", ".", "12x", "1Mm", "1KiB", "1 Mi", " 1", "1e", "1e3.5", "1.2.3",
            "1ki", "1mi", "Ki1", "1e+", "--1", "1Gi ", "0x10", "1,5",
        ] {
            assert!(parse_milli(input).is_err(), "{input:?} parsed");
        }
        assert!(parse_milli("1e100").is_err());
        assert!(parse_milli("99999999999999999999999999999999999999999").is_err());
    }

    #[test]
    fn errors_name_the_input_and_the_reason() {
        assert_eq!(
            parse_milli("12x").unwrap_err().to_string(),
            "\"12x\" is not a quantity: unknown suffix \"x\" (expected one of n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or an exponent like e3)"
        );
        assert_eq!(
            parse_milli("").unwrap_err().to_string(),
            "\"\" is not a quantity: it is empty"
        );
        let long = "9".repeat(10_000) + "x";
        assert!(parse_milli(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn cpu_and_bytes() {
        assert_eq!(cpu_millis(&q("100m")), Ok(100));
        assert_eq!(cpu_millis(&q("1.5")), Ok(1500));
        assert_eq!(cpu_millis(&q("0.5")), Ok(500));
        assert_eq!(bytes(&q("128Mi")), Ok(134_217_728));
        assert_eq!(bytes(&q("1.5Gi")), Ok(1_610_612_736));
        assert_eq!(bytes(&q("1k")), Ok(1000));
        assert_eq!(bytes(&q("1500m")), Ok(2));
        assert_eq!(bytes(&q("1m")), Ok(1));
        assert_eq!(bytes(&q("-1500m")), Ok(-2));
        assert!(bytes(&q("16Ei")).is_err());
        assert!(cpu_millis(&q("10E")).is_err());
        assert!(bytes(&q("lots")).is_err());
    }
}
