//! Parameter groups: the parameters a second-order optimizer owns in mixed
//! training (`--second-order 'body.*,3.weight'`), selected by name patterns.

use secondo_tensor::Tensor;

use crate::{Error, Objective};

/// A subset of a network's parameters, as indices into its parameter list,
/// in the network's order.
///
/// ```
/// use secondo::second_order::ParamGroup;
/// use secondo::{Objective, ObjectiveConfig};
/// let obj = Objective::from_config(&ObjectiveConfig { spec: "linear(4,3),relu,linear(3,2)".into(), input_shape: vec![4], ..Default::default() }).unwrap();
/// let g = ParamGroup::matching(&obj, "2.*").unwrap();
/// assert_eq!(g.names(&obj), ["2.weight", "2.bias"]);
/// assert_eq!(g.complement(&obj).names(&obj), ["0.weight", "0.bias"]);
/// assert!(ParamGroup::matching(&obj, "3.*").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamGroup {
    indices: Vec<usize>,
}

impl ParamGroup {
    /// Every parameter.
    pub fn all(objective: &Objective) -> ParamGroup {
        ParamGroup {
            indices: (0..objective.network.params().len()).collect(),
        }
    }

    /// The parameters whose names match one of the comma-separated
    /// patterns (`*` matches any run of characters); refuses a pattern that
    /// matches nothing.
    pub fn matching(objective: &Objective, patterns: &str) -> Result<ParamGroup, Error> {
        let names = all_names(objective);
        let patterns: Vec<&str> = patterns.split(',').map(str::trim).collect();
        for p in &patterns {
            if !names.iter().any(|n| glob(p, n)) {
                return Err(Error::Invalid(format!(
                    "--second-order '{p}' matches no parameter (the model has: {})",
                    names.join(", ")
                )));
            }
        }
        Ok(ParamGroup {
            indices: (0..names.len())
                .filter(|&i| patterns.iter().any(|p| glob(p, &names[i])))
                .collect(),
        })
    }

    /// The other parameters.
    pub fn complement(&self, objective: &Objective) -> ParamGroup {
        ParamGroup {
            indices: (0..objective.network.params().len())
                .filter(|i| !self.contains(*i))
                .collect(),
        }
    }

    /// Whether parameter `index` is in the group.
    pub fn contains(&self, index: usize) -> bool {
        self.indices.binary_search(&index).is_ok()
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The indices, ascending.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The parameters' names, in order.
    pub fn names(&self, objective: &Objective) -> Vec<String> {
        let all = objective.network.params();
        self.indices.iter().map(|&i| all[i].name.clone()).collect()
    }

    /// The number of scalars in the group.
    pub fn numel(&self, objective: &Objective) -> usize {
        let all = objective.network.params();
        self.indices
            .iter()
            .map(|&i| all[i].shape.iter().product::<usize>())
            .sum()
    }

    /// The group's tensors of `tensors` (one per parameter) as one flat vector.
    pub(crate) fn gather(&self, tensors: &[Tensor]) -> Vec<f64> {
        let mut out = Vec::new();
        for &i in &self.indices {
            out.extend(tensors[i].to_f64_vec());
        }
        out
    }
}

fn all_names(objective: &Objective) -> Vec<String> {
    objective
        .network
        .params()
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

/// Whether `name` matches `pattern`, `*` matching any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&k| tail.is_char_boundary(k))
                .any(|k| glob(rest, &tail[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("body.*", "body.0.weight"));
        assert!(glob("*.bias", "3.bias") && !glob("*.bias", "3.weight"));
        assert!(glob("3.weight", "3.weight") && !glob("3.weight", "3.weights"));
        assert!(glob("*", "anything") && glob("a*b*c", "a12b3c") && !glob("a*b*c", "a12b3"));
    }
}
