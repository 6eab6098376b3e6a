//! Which weights the Laplace approximation covers: all, the last layer
//! (Kristiadi et al. 2020, "Being Bayesian, even just a bit, fixes
//! overconfidence in ReLU networks"), or a subnetwork chosen by parameter
//! names (Daxberger et al. 2021, "Bayesian deep learning via subnetwork
//! inference"). The rest stay at their MAP values.

use std::fmt;
use std::str::FromStr;

use secondo_nn::Network;

use crate::Error;

/// The selected weights (`--subset`).
///
/// ```
/// use secondo::laplace::Subset;
/// let s: Subset = "subnetwork:2.*".parse().unwrap();
/// assert_eq!(s, Subset::Pattern("2.*".into()));
/// assert!("some".parse::<Subset>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subset {
    /// Every parameter.
    All,
    /// The parameters of the last layer that has any.
    LastLayer,
    /// The parameters whose names match a pattern where `*` stands for any
    /// run of characters (e.g. `2.*`, `*.bias`).
    Pattern(String),
    /// The `K` single weights of largest marginal variance under a diagonal
    /// Laplace approximation (`subnetwork:variance:K`).
    LargestVariance(usize),
}

impl FromStr for Subset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Subset, Error> {
        match s {
            "all" => Ok(Subset::All),
            "last-layer" => Ok(Subset::LastLayer),
            _ => match s.strip_prefix("subnetwork:") {
                Some(p) if p.starts_with("variance:") => {
                    match p["variance:".len()..].parse::<usize>() {
                        Ok(k) if k > 0 => Ok(Subset::LargestVariance(k)),
                        _ => Err(Error::Invalid(format!(
                            "--subset '{s}': expected subnetwork:variance:K with K ≥ 1"
                        ))),
                    }
                }
                Some(p) if !p.is_empty() => Ok(Subset::Pattern(p.to_string())),
                _ => Err(Error::Invalid(format!(
                    "--subset '{s}': expected all, last-layer, subnetwork:PATTERN or \
                     subnetwork:variance:K"
                ))),
            },
        }
    }
}

impl fmt::Display for Subset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subset::All => f.write_str("all"),
            Subset::LastLayer => f.write_str("last-layer"),
            Subset::Pattern(p) => write!(f, "subnetwork:{p}"),
            Subset::LargestVariance(k) => write!(f, "subnetwork:variance:{k}"),
        }
    }
}

impl Subset {
    /// The selected parameters' names, in the network's order (every
    /// parameter for [`Subset::LargestVariance`], whose weights the fit picks).
    ///
    /// ```
    /// use secondo::laplace::Subset;
    /// use secondo_nn::Network;
    /// let net = Network::new("linear(4,3),tanh,linear(3,2)".parse().unwrap(), &[4]).unwrap();
    /// assert_eq!(Subset::LastLayer.resolve(&net).unwrap(), ["2.weight", "2.bias"]);
    /// assert_eq!(Subset::Pattern("*.bias".into()).resolve(&net).unwrap(), ["0.bias", "2.bias"]);
    /// assert!(Subset::Pattern("3.*".into()).resolve(&net).is_err());
    /// ```
    pub fn resolve(&self, network: &Network) -> Result<Vec<String>, Error> {
        let names: Vec<&str> = network.params().iter().map(|p| p.name.as_str()).collect();
        let chosen: Vec<String> = match self {
            Subset::All | Subset::LargestVariance(_) => {
                names.iter().map(|n| n.to_string()).collect()
            }
            Subset::LastLayer => {
                let layer = names.last().map(|n| layer_of(n)).unwrap_or_default();
                names
                    .iter()
                    .filter(|n| layer_of(n) == layer)
                    .map(|n| n.to_string())
                    .collect()
            }
            Subset::Pattern(p) => names
                .iter()
                .filter(|n| matches(p, n))
                .map(|n| n.to_string())
                .collect(),
        };
        if chosen.is_empty() {
            return Err(Error::Invalid(format!(
                "--subset {self} selects no parameter (the model has: {})",
                names.join(", ")
            )));
        }
        Ok(chosen)
    }
}

/// The layer path of a parameter name (`"2.weight"` → `"2"`).
fn layer_of(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(layer, _)| layer)
}

/// Whether `name` matches `pattern` as a whole, `*` matching any run.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|skip| {
                    name.is_char_boundary(head.len() + skip)
                        && matches(tail, &name[head.len() + skip..])
                })
        }
    }
}
