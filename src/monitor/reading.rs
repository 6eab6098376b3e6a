//! How an instrument's recorded value reads as one number: what the
//! report's charts draw and what a `--switch-when` threshold compares.
//! Everything undefined (null, absent, non-finite, an array with such an
//! element) reads as missing.

use serde_json::Value;

/// How a recorded value turns into one number.
///
/// ```
/// use secondo::monitor::Reading;
/// use serde_json::json;
/// assert_eq!(Reading::Norm.apply(&json!([3.0, 4.0])), Some(5.0));
/// assert_eq!(Reading::Norm.apply(&json!([3.0, null])), None);
/// assert_eq!(Reading::Sum.apply(&json!([1.5, 2.0])), Some(3.5));
/// assert_eq!(Reading::Field("k").apply(&json!({"k": 2})), Some(2.0));
/// assert_eq!(Reading::Number.apply(&json!(null)), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The value itself (a scalar instrument).
    Number,
    /// `sqrt(Σ v²)` of a per-parameter array of norms: the norm over all
    /// parameters together.
    Norm,
    /// `Σ v` of a per-parameter array (traces add over diagonal blocks).
    Sum,
    /// A numeric field of an object-valued instrument.
    Field(&'static str),
}

impl Reading {
    /// The number, if defined.
    pub fn apply(self, value: &Value) -> Option<f64> {
        match self {
            Reading::Number => number(value),
            Reading::Norm => numbers(value).map(|v| v.iter().map(|x| x * x).sum::<f64>().sqrt()),
            Reading::Sum => numbers(value).map(|v| v.iter().sum()),
            Reading::Field(name) => value.get(name).and_then(number),
        }
    }
}

/// A finite number.
pub fn number(value: &Value) -> Option<f64> {
    value.as_f64().filter(|x| x.is_finite())
}

/// An array of finite numbers; undefined as a whole if one element is not.
pub fn numbers(value: &Value) -> Option<Vec<f64>> {
    value.as_array()?.iter().map(number).collect()
}
