//! Integers in request bodies as JSON Schema counts them: `3` and `3.0` are the same integer
//! (a client's serializer may write either), `3.5` is not one, and neither is a number out of
//! the field's range.

use serde::{Deserialize, Deserializer, de::Error};
use serde_json::Number;

/// Above this, an f64 no longer holds every integer exactly.
const EXACT: f64 = 9_007_199_254_740_992.0;

fn whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(n: Number) -> Result<T, D::Error> {
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
                .map(|f| f as i64)
        })
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number in range")))
}

pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    whole::<D, T>(Number::deserialize(d)?)
}

pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Number>::deserialize(d)?
        .map(whole::<D, T>)
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::required")]
        n: i32,
        #[serde(default, deserialize_with = "super::optional")]
        m: Option<i64>,
    }

    fn parse(json: &str) -> Option<(i32, Option<i64>)> {
        serde_json::from_str::<Body>(json).ok().map(|b| (b.n, b.m))
    }

    #[test]
    fn whole_numbers_in_either_spelling() {
        assert_eq!(parse(r#"{"n": 3}"#), Some((3, None)));
        assert_eq!(parse(r#"{"n": 3.0, "m": -4.0}"#), Some((3, Some(-4))));
        assert_eq!(parse(r#"{"n": 3, "m": null}"#), Some((3, None)));
        for bad in [
            r#"{"n": 3.5}"#,
            r#"{"n": 2147483648}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "3"}"#,
            r#"{"n": 1, "m": 18446744073709551615}"#,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
