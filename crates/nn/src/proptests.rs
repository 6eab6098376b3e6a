//! Random model specs and damaged weights files: every parse and load either
//! succeeds or fails with a one-line message, and never panics.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use secondo_tensor::DType;

use crate::spec::ModelSpec;
use crate::ParamStore;

/// Valid specs in the syntax of shared/INTERFACES.md.
const SPECS: &[&str] = &[
    "linear(784,256),relu,linear(256,10)",
    "conv2d(1,32,k=5,p=2),relu,maxpool2d(2),flatten,linear(6272,10)",
    "conv2d(3,16,k=3,p=1,bias=false),batchnorm2d(16),relu,avgpool2d(2,s=2),flatten,linear(16,10)",
    "linear(4,3,bias=false),leakyrelu(0.1),dropout(p=0.5),layernorm(3),tanh",
    "conv2d(3,16,k=3,p=1,bias=false),batchnorm2d(16),relu,residual(conv2d(16,16,k=3,p=1,groups=4),batchnorm2d(16) | conv2d(16,16,k=1)),adaptiveavgpool2d(1),flatten,linear(16,10)",
    "residual(linear(4,4),residual(relu|linear(4,4))),linear(4,2)",
];

/// The model whose weights are damaged.
const WEIGHTS_SPEC: &str = "linear(3,2),relu,linear(2,2,bias=false)";

/// One edit of a spec: a character deleted, inserted or replaced.
#[derive(Debug, Clone)]
enum Edit {
    Delete(Index),
    Insert(Index, char),
    Replace(Index, char),
}

/// Characters that matter to the grammar, and any character at all.
fn character() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            '(', ')', ',', '=', '|', '.', '-', '0', '9', 'e', 'é', ' ', '\n', '\0'
        ]),
        any::<char>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), character()).prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<Index>(), character()).prop_map(|(i, c)| Edit::Replace(i, c)),
    ]
}

fn edited(spec: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = spec.chars().collect();
    for e in edits {
        let len = chars.len();
        match *e {
            Edit::Delete(i) if len > 0 => {
                chars.remove(i.index(len));
            }
            Edit::Insert(i, c) => chars.insert(i.index(len + 1), c),
            Edit::Replace(i, c) if len > 0 => chars[i.index(len)] = c,
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Passes a result that is a value or a one-line error.
fn one_line<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        let message = e.to_string();
        prop_assert!(!message.contains('\n'), "{message}");
    }
    Ok(())
}

/// The bytes of a valid weights file for [`WEIGHTS_SPEC`].
fn valid_weights(dir: &Path) -> Vec<u8> {
    let spec: ModelSpec = WEIGHTS_SPEC.parse().unwrap();
    let path = dir.join("valid.safetensors");
    ParamStore::init(&spec, 0, DType::F32).save(&path).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn the_specs_to_edit_are_valid() {
    for spec in SPECS.iter().chain([&WEIGHTS_SPEC]) {
        ModelSpec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn edited_specs_parse_or_fail_in_one_line(
        spec in prop::sample::select(SPECS),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        one_line(ModelSpec::parse(&edited(spec, &edits)))?;
    }

    #[test]
    fn any_text_parses_or_fails_in_one_line(text in proptest::collection::vec(any::<char>(), 0..40)) {
        one_line(ModelSpec::parse(&text.into_iter().collect::<String>()))?;
    }

    /// Overwritten bytes reach every part of the file: the header length,
    /// the JSON (names, dtypes, shapes, offsets) and the values.
    #[test]
    fn damaged_weights_load_or_fail_in_one_line(
        overwrites in proptest::collection::vec((any::<Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = valid_weights(dir.path());
        for (i, b) in overwrites {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let path = dir.path().join("w.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let spec: ModelSpec = WEIGHTS_SPEC.parse().unwrap();
        one_line(ParamStore::load(&path, &spec, DType::F64))?;
    }
}
