//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `2e3`), as
//! accepted by the API server for container resources.

/// Checks a quantity's syntax: a signed decimal number with an optional
/// binary-SI (`Ki`…`Ei`), decimal-SI (`n`, `u`, `m`, `k`, `M`…`E`) or
/// exponent (`e3`, `E-2`) suffix. Resources must not be negative.
pub fn check(value: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{value}` is not a Kubernetes quantity; use e.g. `100m` or `0.5` for CPU and `64Mi` or `128M` for memory"
        )
    };
    let v = value.trim();
    let v = v.strip_prefix('+').unwrap_or(v);
    if v.starts_with('-') {
        return Err(format!("`{value}` is negative; resources must be zero or more"));
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

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_what_kubernetes_accepts() {
        for ok in ["100m", "0.5", "1", "64Mi", "128M", "1Gi", "2e3", "1E-2", ".5", "+1"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_the_rest() {
        for bad in ["", "m", "1.2.3", "64MB", "1 Gi", "-1", "ten", "1e", "1x"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
