//! Primitive families, one module each: a family's shape rule, evaluation,
//! jvp, transpose (vjp) and batching rule live together, so adding a
//! primitive is one module plus one arm per dispatch site.

pub(crate) mod patches;
