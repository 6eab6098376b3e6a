//! A threshold on a monitored instrument, `INSTRUMENT<X` or `INSTRUMENT>X`:
//! when late-phase training (Tatzel, Hennig & Schneider 2022, "Late-phase
//! second-order training") hands over from its first-order phase, as
//! `--switch-when` takes it. Typed once at parsing, so that a run compares
//! an [`Instrument`]'s [`Reading`](super::Reading) of each record and never
//! looks a name up.

use std::fmt;

use super::{Instrument, Record};
use crate::Error;

/// Which side of the threshold meets it (strictly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// `INSTRUMENT<X`: the value falls below `X`.
    Below,
    /// `INSTRUMENT>X`: the value rises above `X`.
    Above,
}

/// `instrument < value` or `instrument > value` on one record.
///
/// ```
/// use secondo::monitor::{Crossing, Instrument, Threshold};
/// use serde_json::json;
/// let t = Threshold::parse("grad_norm<0.05").unwrap();
/// assert_eq!(t, Threshold::new(Instrument::GradNorm, Crossing::Below, 0.05).unwrap());
/// assert_eq!(t.to_string(), "grad_norm<0.05");
/// // grad_norm is per parameter: the threshold compares the norm over all of them.
/// let record = |g: serde_json::Value| json!({"step": 3, "grad_norm": g}).as_object().unwrap().clone();
/// assert!(t.met_by(&record(json!([0.03, 0.03]))));
/// assert!(!t.met_by(&record(json!([0.03, 0.04]))), "0.05 is not below 0.05");
/// assert!(!t.met_by(&record(json!([0.03, 0.05]))));
/// assert!(!t.met_by(&record(json!(null))));
/// assert!(Threshold::parse("alpha>0.5").unwrap().met_by(&json!({"alpha": 0.7}).as_object().unwrap()));
/// for bad in ["grad_norm", "grad_norm<", "grad_norm<x", "grad_norm<inf", "gradnorm<1", "grad_hist_1d<1", "<1"] {
///     assert!(Threshold::parse(bad).unwrap_err().to_string().starts_with("--switch-when"), "{bad}");
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    instrument: Instrument,
    crossing: Crossing,
    value: f64,
}

impl Threshold {
    /// `instrument` against `value`, refused (naming `--switch-when`)
    /// unless the instrument reads as one number per step and `value` is
    /// finite.
    pub fn new(instrument: Instrument, crossing: Crossing, value: f64) -> Result<Threshold, Error> {
        let t = Threshold {
            instrument,
            crossing,
            value,
        };
        if !value.is_finite() {
            return Err(Error::Invalid(format!(
                "--switch-when {t}: the threshold must be a finite number"
            )));
        }
        if instrument.reading().is_none() {
            return Err(Error::Invalid(format!(
                "--switch-when {t}: {instrument} is not one number per step (one of: {})",
                comparable()
            )));
        }
        Ok(t)
    }

    /// The instrument compared.
    pub fn instrument(&self) -> Instrument {
        self.instrument
    }

    /// Parses `INSTRUMENT<X` or `INSTRUMENT>X` with `X` a finite number and
    /// an instrument that reads as one number per step.
    pub fn parse(text: &str) -> Result<Threshold, Error> {
        let bad = |why: String| Error::Invalid(format!("--switch-when '{text}': {why}"));
        let expected = || {
            bad(
                "expected INSTRUMENT<X or INSTRUMENT>X with X a finite number, e.g. grad_norm<0.05"
                    .into(),
            )
        };
        let at = text.find(['<', '>']).ok_or_else(expected)?;
        let crossing = match &text[at..at + 1] {
            "<" => Crossing::Below,
            _ => Crossing::Above,
        };
        let value: f64 = text[at + 1..]
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(expected)?;
        let name = text[..at].trim();
        let instrument: Instrument = name.parse().map_err(|_| {
            bad(format!(
                "unknown instrument '{name}' (one of: {})",
                comparable()
            ))
        })?;
        Threshold::new(instrument, crossing, value)
    }

    /// Whether `record` has the instrument on the threshold's side of it;
    /// a record without it, or with an undefined value, does not.
    pub fn met_by(&self, record: &Record) -> bool {
        record
            .get(self.instrument.name())
            .zip(self.instrument.reading())
            .and_then(|(v, reading)| reading.apply(v))
            .is_some_and(|v| match self.crossing {
                Crossing::Below => v < self.value,
                Crossing::Above => v > self.value,
            })
    }
}

/// The instruments a threshold can compare, for messages.
fn comparable() -> String {
    Instrument::all()
        .into_iter()
        .filter(|i| i.reading().is_some())
        .map(Instrument::name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.crossing {
            Crossing::Below => '<',
            Crossing::Above => '>',
        };
        write!(f, "{}{op}{}", self.instrument, self.value)
    }
}
