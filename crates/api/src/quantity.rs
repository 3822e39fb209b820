//! Resource quantities (`100m`, `1.5`, `64Mi`, `1G`) as integers: CPU in
//! millicores, everything else in bytes/units, as the scheduler compares them.

/// Parses a quantity into milli-units (`"100m"` → 100, `"2"` → 2000,
/// `"64Mi"` → 64·2²⁰·1000). `None` when malformed.
pub fn parse_milli(q: &str) -> Option<i128> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    // Decimal exponent form: 1e3, 1E3.
    let (num, suffix) = if let Some(exp) = suffix.strip_prefix(['e', 'E']).and_then(|e| e.parse::<i32>().ok()) {
        return decimal_milli(num, 3 + exp);
    } else {
        (num, suffix)
    };
    let binary = |p: u32| -> Option<i128> { decimal_milli(num, 3).map(|m| m * (1i128 << p)) };
    match suffix {
        "" => decimal_milli(num, 3),
        "n" => decimal_milli(num, -6),
        "u" => decimal_milli(num, -3),
        "m" => decimal_milli(num, 0),
        "k" => decimal_milli(num, 6),
        "M" => decimal_milli(num, 9),
        "G" => decimal_milli(num, 12),
        "T" => decimal_milli(num, 15),
        "P" => decimal_milli(num, 18),
        "E" => decimal_milli(num, 21),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => None,
    }
}

/// `num` × 10^`exp`, rounded up to an integer (Kubernetes rounds up).
fn decimal_milli(num: &str, exp: i32) -> Option<i128> {
    let neg = num.starts_with('-');
    let num = num.trim_start_matches(['+', '-']);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    let mut v: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    let mut e = exp - frac.len() as i32;
    while e > 0 {
        v = v.checked_mul(10)?;
        e -= 1;
    }
    let mut rem = false;
    while e < 0 {
        rem |= v % 10 != 0;
        v /= 10;
        e += 1;
    }
    if rem {
        v += 1;
    }
    Some(if neg { -v } else { v })
}

/// CPU in millicores.
pub fn cpu_millis(q: &str) -> Option<i64> {
    parse_milli(q).and_then(|m| i64::try_from(m).ok())
}

/// Bytes (or plain units) of a non-CPU quantity, rounded up.
pub fn value(q: &str) -> Option<i64> {
    parse_milli(q).and_then(|m| i64::try_from((m + 999) / 1000).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(cpu_millis("100m"), Some(100));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("0.1"), Some(100));
        assert_eq!(value("64Mi"), Some(64 << 20));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1Ki"), Some(1024));
        assert_eq!(value("110"), Some(110));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("junk"), None);
        assert_eq!(value(""), None);
    }
}
