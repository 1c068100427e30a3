//! Kubernetes resource quantities (`100Mi`, `250m`, `1Gi`, `0.5`, `1e3`),
//! parsed exactly (no floating point).

/// A parsed non-negative quantity: `mantissa * 10^exp10 * 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses the Kubernetes quantity grammar: an optional sign, a decimal
    /// number, then a binary suffix (`Ki`..`Ei`), a decimal suffix
    /// (`n u m k M G T P E`) or a decimal exponent (`e3`, `E-2`).
    /// Negative values are rejected (no limit may be negative).
    pub fn parse(s: &str) -> Result<Quantity, String> {
        let bad = || format!("invalid quantity {s:?}");
        let t = s.trim();
        let t = t.strip_prefix('+').unwrap_or(t);
        if t.starts_with('-') {
            return Err(format!("invalid quantity {s:?}: must not be negative"));
        }
        let num_end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, suffix) = t.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return Err(format!("invalid quantity {s:?}: too many digits"));
        }
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| bad())?
        };
        let frac_len = i32::try_from(frac_part.len()).map_err(|_| bad())?;
        let (exp10, exp2): (i32, u32) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            other => {
                let exp = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))
                    .ok_or_else(bad)?;
                let exp: i32 = exp.parse().map_err(|_| bad())?;
                if !(-100..=100).contains(&exp) {
                    return Err(format!("invalid quantity {s:?}: exponent out of range"));
                }
                (exp, 0)
            }
        };
        Ok(Quantity {
            mantissa,
            exp10: exp10 - frac_len,
            exp2,
        })
    }

    /// `ceil(self * scale)` as an integer, `None` on overflow.
    fn ceil_scaled(&self, scale: u128) -> Option<u64> {
        if self.mantissa == 0 {
            return Some(0);
        }
        let mut num = self.mantissa.checked_mul(scale)?;
        num = num.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let mut den: u128 = 1;
        if self.exp10 >= 0 {
            num = num.checked_mul(10u128.checked_pow(self.exp10.unsigned_abs())?)?;
        } else {
            // A denominator beyond u128 means the value is far below 1: ceil is 1.
            match 10u128.checked_pow(self.exp10.unsigned_abs()) {
                Some(d) => den = d,
                None => return Some(1),
            }
        }
        u64::try_from(num.div_ceil(den)).ok()
    }

    /// The value rounded up to a whole number (Kubernetes `Value()`), e.g. bytes.
    pub fn value(&self) -> Option<u64> {
        self.ceil_scaled(1)
    }

    /// The value in thousandths, rounded up (Kubernetes `MilliValue()`), e.g. millicores.
    pub fn milli_value(&self) -> Option<u64> {
        self.ceil_scaled(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> u64 {
        Quantity::parse(s).unwrap().value().unwrap()
    }
    fn m(s: &str) -> u64 {
        Quantity::parse(s).unwrap().milli_value().unwrap()
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(v("100Mi"), 100 * 1024 * 1024);
        assert_eq!(v("1Gi"), 1 << 30);
        assert_eq!(v("128974848"), 128_974_848);
        assert_eq!(v("129e6"), 129_000_000);
        assert_eq!(v("129M"), 129_000_000);
        assert_eq!(v("123Mi"), 128_974_848);
        assert_eq!(v("1.5Gi"), 1_610_612_736);
        assert_eq!(v("0.5"), 1);
        assert_eq!(m("250m"), 250);
        assert_eq!(m("0.5"), 500);
        assert_eq!(m("1"), 1000);
        assert_eq!(m("2.0005"), 2001);
        assert_eq!(m("100u"), 1);
        assert_eq!(m("1k"), 1_000_000);
        assert_eq!(v("0"), 0);
        assert_eq!(v("+5"), 5);
        assert_eq!(v("1E3"), 1000);
        assert_eq!(v("1e-3"), 1);
    }

    #[test]
    fn rejects_bad() {
        for s in [
            "", "Mi", "1.2.3", "-1", "1Qi", "1e", "1e1000", "abc", "1 Mi", ".",
        ] {
            assert!(Quantity::parse(s).is_err(), "{s:?} should fail");
        }
        assert_eq!(Quantity::parse("1000Ei").unwrap().value(), None);
    }
}
