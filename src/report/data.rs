//! The monitor's records as the panels read them: one number per tracked
//! step, or the latest value of an instrument. Everything undefined (null,
//! absent, non-finite, an array with such an element) reads as missing, so a
//! panel never draws it.

use serde_json::{Map, Value};

pub use crate::monitor::reading::{number, numbers, Reading};

/// One tracked step: `step`, `epoch`, `lr`, `batch_size` and one key per
/// instrument computed at that step.
pub type Record = Map<String, Value>;

/// The steps and values of a series, as many of one as of the other.
pub type Points = (Vec<f64>, Vec<f64>);

/// An increasing pair `[lo, hi]` of finite numbers (a histogram's range).
pub fn range(value: Option<&Value>) -> Option<(f64, f64)> {
    match numbers(value?)?.as_slice() {
        &[lo, hi] if lo < hi => Some((lo, hi)),
        _ => None,
    }
}

/// The records of a run with the step of each (its `step`, or its position
/// when a record lacks one).
pub struct Run<'a> {
    records: &'a [Record],
    steps: Vec<f64>,
}

impl<'a> Run<'a> {
    /// Reads the steps of `records`.
    pub fn new(records: &'a [Record]) -> Run<'a> {
        let steps = records
            .iter()
            .enumerate()
            .map(|(i, r)| r.get("step").and_then(number).unwrap_or(i as f64))
            .collect();
        Run { records, steps }
    }

    /// How many steps were tracked.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The first and last tracked step.
    pub fn span(&self) -> Option<(f64, f64)> {
        Some((*self.steps.first()?, *self.steps.last()?))
    }

    /// Every step at which `key` has a non-null value, with the value.
    pub fn values(&self, key: &'a str) -> impl Iterator<Item = (f64, &'a Value)> + '_ {
        self.steps
            .iter()
            .zip(self.records)
            .filter_map(move |(&s, r)| r.get(key).filter(|v| !v.is_null()).map(|v| (s, v)))
    }

    /// The steps and numbers of `key` read by `get`, where defined.
    pub fn series(&self, key: &'a str, get: Reading) -> Points {
        self.values(key)
            .filter_map(|(s, v)| get.apply(v).map(|y| (s, y)))
            .unzip()
    }

    /// The last step at which `key` has a non-null value, with the value.
    pub fn latest(&self, key: &'a str) -> Option<(f64, &'a Value)> {
        self.values(key).last()
    }

    /// Whether `key` has a value at some step.
    pub fn has(&self, key: &'a str) -> bool {
        self.values(key).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn undefined_values_read_as_missing() {
        assert_eq!(range(Some(&json!([1.0, -1.0]))), None);
        let records: Vec<Record> = [
            json!({"step": 3, "loss": 1.0}),
            json!({"step": 4, "loss": null}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let run = Run::new(&records);
        assert_eq!(run.series("loss", Reading::Number), (vec![3.0], vec![1.0]));
        assert_eq!(run.latest("loss").map(|(s, _)| s), Some(3.0));
        assert!(!run.has("alpha"));
    }
}
