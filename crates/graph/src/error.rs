use thiserror::Error;

/// Errors from building, transforming or running a graph; each message is one line.
///
/// ```
/// use secondo_graph::Builder;
/// use secondo_tensor::DType;
/// let b = Builder::new(DType::F32);
/// let x = b.input("x", &[2, 3]);
/// let y = b.input("y", &[4]);
/// let _ = x + y;
/// assert!(b.finish().unwrap_err().to_string().contains("[2, 3]"));
/// ```
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GraphError {
    /// An operation got operands of the wrong shape or dtype.
    #[error("building {op}: {reason}")]
    Build {
        /// The operation being added.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// A feed is missing or does not match its input node.
    #[error("input '{name}': {reason}")]
    Feed {
        /// The input's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A kernel failed while running.
    #[error("running node {node} ({op}): {reason}")]
    Run {
        /// The node id.
        node: usize,
        /// The operation.
        op: String,
        /// The kernel's message.
        reason: String,
    },
    /// A node id that does not belong to the graph.
    #[error("node {0} is not in the graph")]
    UnknownNode(usize),
}
