//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `2e3`), as
//! accepted by the API server for container resources.

/// Checks a quantity's syntax: a signed decimal number with an optional
/// binary-SI (`Ki`…`Ei`), decimal-SI (`n`, `u`, `m`, `k`, `M`…`E`) or
/// exponent (`e3`, `E-2`) suffix. Resources must not be negative.
pub fn check(value: &str) -> Result<(), QuantityError> {
    let bad = || QuantityError::Syntax(value.to_owned());
    let v = value.trim();
    let v = v.strip_prefix('+').unwrap_or(v);
    if v.starts_with('-') {
        return Err(QuantityError::Negative(value.to_owned()));
    }
    let number_len = v
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(v.len());
    let (number, suffix) = v.split_at(number_len);
    let digits = number.bytes().filter(u8::is_ascii_digit).count();
    let dots = number.bytes().filter(|b| *b == b'.').count();
    if digits == 0 || dots > 1 {
        return Err(bad());
    }
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    if SUFFIXES.contains(&suffix) {
        return Ok(());
    }
    let exponent = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
        .ok_or_else(bad)?;
    let exponent = exponent
        .strip_prefix('+')
        .or_else(|| exponent.strip_prefix('-'))
        .unwrap_or(exponent);
    if !exponent.is_empty() && exponent.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A quantity's value as a number (`64Mi` → 67108864.0, `100m` → 0.1), to
/// compare a request with its limit. Checks the syntax first.
pub fn value(quantity: &str) -> Result<f64, QuantityError> {
    check(quantity)?;
    let v = quantity.trim();
    let v = v.strip_prefix('+').unwrap_or(v);
    let split = v
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(v.len());
    let (number, suffix) = v.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| QuantityError::Syntax(quantity.to_owned()))?;
    let scale = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent => {
            let power: i32 = exponent[1..]
                .parse()
                .map_err(|_| QuantityError::Syntax(quantity.to_owned()))?;
            10f64.powi(power)
        }
    };
    Ok(number * scale)
}

/// A resource quantity Kubernetes would not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "`{0}` is not a Kubernetes quantity; use e.g. `100m` or `0.5` for CPU and `64Mi` or `128M` for memory"
    )]
    Syntax(String),
    #[error("`{0}` is negative; resources must be zero or more")]
    Negative(String),
}

#[cfg(test)]
mod tests {
    use super::{check, value};

    #[test]
    fn accepts_what_kubernetes_accepts() {
        for ok in [
            "100m", "0.5", "1", "64Mi", "128M", "1Gi", "2e3", "1E-2", ".5", "+1",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn values() {
        assert_eq!(value("64Mi"), Ok(64.0 * 1024.0 * 1024.0));
        assert_eq!(value("100m"), Ok(0.1));
        assert_eq!(value("2e3"), Ok(2000.0));
        assert_eq!(value("+1.5"), Ok(1.5));
        assert!(value("128M").unwrap() < value("128Mi").unwrap());
        assert!(value("x").is_err());
    }

    #[test]
    fn refuses_the_rest() {
        for bad in ["", "m", "1.2.3", "64MB", "1 Gi", "-1", "ten", "1e", "1x"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
