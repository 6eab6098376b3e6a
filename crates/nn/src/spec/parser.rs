//! The spec grammar and each layer's argument list.
//!
//! ```text
//! spec     := layers
//! layers   := layer (',' layer)*
//! layer    := 'residual' '(' layers ['|' layers] ')'
//!           | NAME ['(' [argument (',' argument)*] ')']
//! argument := [KEY '='] value
//! value    := NUMBER | true | false
//! ```
//!
//! Residual blocks nest at most [`MAX_DEPTH`] deep, which bounds the
//! recursion of the parser and of everything that walks a parsed spec.
//!
//! Names, keys and `true`/`false` match without regard to ASCII case.
//! Positional arguments fill a layer's slots in PyTorch's order, keyword
//! arguments (after all positional ones) fill them by name; each slot takes
//! at most one value.

use super::lexer::{quote, shorten, Kind, Lexer, Token};
use super::{Layer, LayerSpec, SpecError};

/// The name of a residual block, which takes layer lists, not arguments.
const RESIDUAL: &str = "residual";

/// How a residual block is written, shown when its `(` is missing.
const RESIDUAL_USAGE: &str = "residual(BODY[|SHORTCUT])";

/// How deep residual blocks may nest.
const MAX_DEPTH: usize = 64;

/// Where a list of layers stands, which decides what ends it.
#[derive(Debug, Clone, Copy)]
enum List {
    /// The whole spec, ended by the end of the input.
    Spec,
    /// A residual block's body, ended by `|` or `)`.
    Body,
    /// A residual block's shortcut, ended by `)`.
    Shortcut,
}

impl List {
    fn ends_with(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Self::Spec, Kind::End)
                | (Self::Body, Kind::Bar | Kind::RParen)
                | (Self::Shortcut, Kind::RParen)
        )
    }

    /// What may follow a layer of the list, in words.
    fn after_layer(self) -> &'static str {
        match self {
            Self::Spec => "',' or the end of the spec",
            Self::Body => "',', '|' or ')'",
            Self::Shortcut => "',' or ')'",
        }
    }

    /// What the list starts with, in words.
    fn first(self) -> &'static str {
        match self {
            Self::Spec => "a layer name",
            Self::Body => "a layer name after 'residual('",
            Self::Shortcut => "a layer name after '|'",
        }
    }
}

/// One argument a layer accepts: its name and the other keys that set it.
struct Slot {
    name: &'static str,
    aliases: &'static [&'static str],
}

/// A layer's argument list and how to build it from the arguments given.
struct LayerDef {
    name: &'static str,
    /// The documented form, shown with argument errors.
    usage: &'static str,
    slots: &'static [Slot],
    /// Whether the argument list may be left out.
    bare_ok: bool,
    build: fn(&Args) -> Result<Layer, SpecError>,
}

const fn slot(name: &'static str, aliases: &'static [&'static str]) -> Slot {
    Slot { name, aliases }
}

const BIAS: Slot = slot("bias", &[]);
const KERNEL: Slot = slot("k", &["kernel_size", "kernel"]);
const STRIDE: Slot = slot("s", &["stride"]);
const PADDING: Slot = slot("p", &["padding"]);
const FEATURES: Slot = slot("n", &["num_features", "features"]);

const POOL_SLOTS: &[Slot] = &[KERNEL, STRIDE, PADDING];

/// A layer with no arguments (an empty `()` is accepted).
const fn plain(name: &'static str, build: fn(&Args) -> Result<Layer, SpecError>) -> LayerDef {
    LayerDef {
        name,
        usage: name,
        slots: &[],
        bare_ok: true,
        build,
    }
}

/// Every layer, in the order of [`Layer::NAMES`].
const DEFS: &[LayerDef] = &[
    LayerDef {
        name: "linear",
        usage: "linear(in,out[,bias=false])",
        slots: &[
            slot("in_features", &["in"]),
            slot("out_features", &["out"]),
            BIAS,
        ],
        bare_ok: false,
        build: |a| {
            Ok(Layer::Linear {
                in_features: a.size(0)?,
                out_features: a.size(1)?,
                bias: a.flag_or(2, true)?,
            })
        },
    },
    LayerDef {
        name: "conv2d",
        usage: "conv2d(in,out,k=K[,s=S][,p=P][,d=D][,groups=G][,bias=false])",
        slots: &[
            slot("in_channels", &["in"]),
            slot("out_channels", &["out"]),
            KERNEL,
            STRIDE,
            PADDING,
            slot("d", &["dilation"]),
            slot("groups", &[]),
            BIAS,
        ],
        bare_ok: false,
        build: |a| {
            let (in_channels, out_channels) = (a.size(0)?, a.size(1)?);
            Ok(Layer::Conv2d {
                in_channels,
                out_channels,
                kernel: a.size(2)?,
                stride: a.size_or(3, 1)?,
                padding: a.count_or(4, 0)?,
                dilation: a.size_or(5, 1)?,
                groups: a.groups(6, in_channels, out_channels)?,
                bias: a.flag_or(7, true)?,
            })
        },
    },
    LayerDef {
        name: "maxpool2d",
        usage: "maxpool2d(K[,s=S][,p=P])",
        slots: POOL_SLOTS,
        bare_ok: false,
        build: |a| {
            let (kernel, stride, padding) = a.pool()?;
            Ok(Layer::MaxPool2d {
                kernel,
                stride,
                padding,
            })
        },
    },
    LayerDef {
        name: "avgpool2d",
        usage: "avgpool2d(K[,s=S][,p=P])",
        slots: POOL_SLOTS,
        bare_ok: false,
        build: |a| {
            let (kernel, stride, padding) = a.pool()?;
            Ok(Layer::AvgPool2d {
                kernel,
                stride,
                padding,
            })
        },
    },
    LayerDef {
        name: "adaptiveavgpool2d",
        usage: "adaptiveavgpool2d(S)",
        slots: &[slot("output_size", &[])],
        bare_ok: false,
        build: |a| Ok(Layer::AdaptiveAvgPool2d { size: a.size(0)? }),
    },
    plain("flatten", |_| Ok(Layer::Flatten)),
    plain("relu", |_| Ok(Layer::Relu)),
    plain("sigmoid", |_| Ok(Layer::Sigmoid)),
    plain("tanh", |_| Ok(Layer::Tanh)),
    LayerDef {
        name: "leakyrelu",
        usage: "leakyrelu(slope)",
        slots: &[slot("slope", &["negative_slope"])],
        bare_ok: true,
        build: |a| {
            Ok(Layer::LeakyRelu {
                slope: a.real_or(0, 0.01)?,
            })
        },
    },
    LayerDef {
        name: "elu",
        usage: "elu[(alpha)]",
        slots: &[slot("alpha", &[])],
        bare_ok: true,
        build: |a| {
            Ok(Layer::Elu {
                alpha: a.real_or(0, 1.0)?,
            })
        },
    },
    plain("selu", |_| Ok(Layer::Selu)),
    plain("softplus", |_| Ok(Layer::Softplus)),
    plain("gelu", |_| Ok(Layer::Gelu)),
    plain("identity", |_| Ok(Layer::Identity)),
    LayerDef {
        name: "dropout",
        usage: "dropout(p)",
        slots: &[slot("p", &[])],
        bare_ok: true,
        build: |a| {
            Ok(Layer::Dropout {
                p: a.probability_or(0, 0.5)?,
            })
        },
    },
    LayerDef {
        name: "batchnorm1d",
        usage: "batchnorm1d(n)",
        slots: &[FEATURES],
        bare_ok: false,
        build: |a| {
            Ok(Layer::BatchNorm1d {
                features: a.size(0)?,
            })
        },
    },
    LayerDef {
        name: "batchnorm2d",
        usage: "batchnorm2d(n)",
        slots: &[FEATURES],
        bare_ok: false,
        build: |a| {
            Ok(Layer::BatchNorm2d {
                features: a.size(0)?,
            })
        },
    },
    LayerDef {
        name: "layernorm",
        usage: "layernorm(n)",
        slots: &[slot("n", &["normalized_shape", "features"])],
        bare_ok: false,
        build: |a| {
            Ok(Layer::LayerNorm {
                features: a.size(0)?,
            })
        },
    },
];

impl LayerDef {
    fn find(name: &str) -> Option<&'static LayerDef> {
        DEFS.iter().find(|d| d.name.eq_ignore_ascii_case(name))
    }

    fn slot_index(&self, key: &str) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.name.eq_ignore_ascii_case(key)
                || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(key))
        })
    }
}

/// The error for `token` standing where the grammar wants `expected`; a word
/// with characters outside ASCII is reported by its first such character,
/// whatever was expected.
fn syntax(lx: &Lexer<'_>, token: Token, expected: impl Into<String>) -> SpecError {
    if let Some((position, c)) = lx.foreign_char(token) {
        return SpecError::Character {
            position,
            found: quote(&c.to_string()),
        };
    }
    SpecError::Syntax {
        position: token.start,
        expected: expected.into(),
        found: lx.describe(token),
    }
}

fn invalid(position: usize, message: String) -> SpecError {
    SpecError::InvalidArgument { position, message }
}

fn is_bool(text: &str) -> bool {
    text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false")
}

/// Parses a whole spec into its layers.
pub(super) fn parse(input: &str) -> Result<Vec<LayerSpec>, SpecError> {
    let chars: Vec<char> = input.chars().collect();
    let mut lx = Lexer::new(&chars);
    parse_layers(&mut lx, List::Spec, 0).map(|(layers, _)| layers)
}

/// Parses the layers of a `list` inside `depth` residual blocks, up to and
/// including the token that ends it, which it returns.
fn parse_layers(
    lx: &mut Lexer<'_>,
    list: List,
    depth: usize,
) -> Result<(Vec<LayerSpec>, Token), SpecError> {
    let mut layers = Vec::new();
    loop {
        let token = lx.next_token();
        if token.kind != Kind::Ident {
            let expected = if layers.is_empty() {
                list.first()
            } else {
                "a layer name after ','"
            };
            return Err(syntax(lx, token, expected));
        }
        let layer = parse_layer(lx, token, depth)?;
        let name = layer.layer.name();
        layers.push(layer);
        let separator = lx.next_token();
        if list.ends_with(separator.kind) {
            return Ok((layers, separator));
        }
        if separator.kind != Kind::Comma {
            let opening = if LayerDef::find(name).is_some_and(|d| d.bare_ok && !d.slots.is_empty())
            {
                "'(', "
            } else {
                ""
            };
            let expected = format!("{opening}{} after {name}", list.after_layer());
            return Err(syntax(lx, separator, expected));
        }
    }
}

/// Parses one layer whose name is `name`, up to its closing parenthesis.
fn parse_layer(lx: &mut Lexer<'_>, name: Token, depth: usize) -> Result<LayerSpec, SpecError> {
    let text = lx.text(name);
    if text.eq_ignore_ascii_case(RESIDUAL) {
        return parse_residual(lx, name, depth);
    }
    let def = LayerDef::find(&text).ok_or_else(|| SpecError::UnknownLayer {
        name: shorten(&text),
        position: name.start,
    })?;
    let mut args = Args::new(def, name.end);
    if lx.peek().kind == Kind::LParen {
        lx.next_token();
        parse_arguments(lx, &mut args)?;
    } else if !def.bare_ok {
        let expected = format!("'(' after {} (usage: {})", def.name, def.usage);
        return Err(syntax(lx, lx.peek(), expected));
    }
    let layer = (def.build)(&args)?;
    countable(lx, layer, name, args.end)
}

/// Parses a residual block whose name is `name` (inside `depth` others),
/// up to its closing parenthesis.
fn parse_residual(lx: &mut Lexer<'_>, name: Token, depth: usize) -> Result<LayerSpec, SpecError> {
    if depth >= MAX_DEPTH {
        let message = format!("residual blocks nest at most {MAX_DEPTH} deep");
        return Err(invalid(name.start, message));
    }
    if lx.peek().kind != Kind::LParen {
        let expected = format!("'(' after {RESIDUAL} (usage: {RESIDUAL_USAGE})");
        return Err(syntax(lx, lx.peek(), expected));
    }
    lx.next_token();
    let (body, mut end) = parse_layers(lx, List::Body, depth + 1)?;
    let shortcut = if end.kind == Kind::Bar {
        let (shortcut, close) = parse_layers(lx, List::Shortcut, depth + 1)?;
        end = close;
        Some(shortcut)
    } else {
        None
    };
    countable(lx, Layer::Residual { body, shortcut }, name, end.end)
}

/// The layer named by `name` and written up to `end`, unless its
/// parameters are too many to count (which later sums could not survive).
fn countable(
    lx: &Lexer<'_>,
    layer: Layer,
    name: Token,
    end: usize,
) -> Result<LayerSpec, SpecError> {
    if layer.parameter_count().is_none() {
        let message = format!("{} has too many parameters to count", layer.name());
        return Err(invalid(name.start, message));
    }
    Ok(LayerSpec {
        layer,
        position: name.start,
        text: lx.slice(name.start, end),
    })
}

/// Parses the arguments after `(` up to and including `)`.
fn parse_arguments(lx: &mut Lexer<'_>, args: &mut Args) -> Result<(), SpecError> {
    let mut first = true;
    loop {
        let token = lx.next_token();
        if first && token.kind == Kind::RParen {
            args.end = token.end;
            args.close = token.start;
            return Ok(());
        }
        let value = match token.kind {
            Kind::Ident if lx.peek().kind == Kind::Equals => {
                lx.next_token();
                let value = lx.next_token();
                if !matches!(value.kind, Kind::Number | Kind::Ident) {
                    let expected = format!("a value after '{}='", lx.text(token));
                    return Err(syntax(lx, value, expected));
                }
                args.keyword(lx, token, value)?;
                value
            }
            Kind::Ident
                if !is_bool(&lx.text(token)) && args.def.slot_index(&lx.text(token)).is_some() =>
            {
                let expected = format!("'=' after {}", lx.text(token));
                return Err(syntax(lx, lx.peek(), expected));
            }
            Kind::Ident | Kind::Number => {
                args.positional(lx, token)?;
                token
            }
            _ => {
                let expected = if first {
                    "an argument or ')'"
                } else {
                    "an argument after ','"
                };
                return Err(syntax(lx, token, expected));
            }
        };
        first = false;
        let separator = lx.next_token();
        match separator.kind {
            Kind::Comma => {}
            Kind::RParen => {
                args.end = separator.end;
                args.close = separator.start;
                return Ok(());
            }
            _ => {
                let after = if value.kind == Kind::Number {
                    "the number"
                } else {
                    "the value"
                };
                return Err(syntax(lx, separator, format!("',' or ')' after {after}")));
            }
        }
    }
}

/// An argument's value as written.
struct Arg {
    kind: Kind,
    text: String,
    position: usize,
}

impl Arg {
    /// A syntax error saying that `expected` should stand where this is.
    fn unexpected(&self, expected: String) -> SpecError {
        SpecError::Syntax {
            position: self.position,
            expected,
            found: quote(&self.text),
        }
    }
}

/// The arguments given to one layer, by slot.
struct Args {
    def: &'static LayerDef,
    values: Vec<Option<Arg>>,
    positional: usize,
    seen_keyword: bool,
    /// Position of the closing parenthesis (where a missing argument is
    /// reported).
    close: usize,
    /// End of the layer's text.
    end: usize,
}

impl Args {
    fn new(def: &'static LayerDef, end: usize) -> Self {
        Self {
            def,
            values: def.slots.iter().map(|_| None).collect(),
            positional: 0,
            seen_keyword: false,
            close: end,
            end,
        }
    }

    fn arg(lx: &Lexer<'_>, token: Token) -> Arg {
        Arg {
            kind: token.kind,
            text: lx.text(token),
            position: token.start,
        }
    }

    fn no_arguments(&self, position: usize) -> SpecError {
        invalid(position, format!("{} takes no arguments", self.def.name))
    }

    fn positional(&mut self, lx: &Lexer<'_>, token: Token) -> Result<(), SpecError> {
        let layer = self.def.name;
        if self.def.slots.is_empty() {
            return Err(self.no_arguments(token.start));
        }
        if self.seen_keyword {
            let message = format!("positional argument after keyword arguments in {layer}");
            return Err(invalid(token.start, message));
        }
        let Some(value) = self.values.get_mut(self.positional) else {
            let message = format!("too many arguments for {layer} (usage: {})", self.def.usage);
            return Err(invalid(token.start, message));
        };
        *value = Some(Self::arg(lx, token));
        self.positional += 1;
        Ok(())
    }

    fn keyword(&mut self, lx: &Lexer<'_>, key: Token, value: Token) -> Result<(), SpecError> {
        let layer = self.def.name;
        if self.def.slots.is_empty() {
            return Err(self.no_arguments(key.start));
        }
        self.seen_keyword = true;
        let key_text = lx.text(key);
        let Some(index) = self.def.slot_index(&key_text) else {
            let names: Vec<&str> = self.def.slots.iter().map(|s| s.name).collect();
            let message = format!(
                "unknown argument {} for {layer} (expected one of: {})",
                quote(&key_text),
                names.join(", ")
            );
            return Err(invalid(key.start, message));
        };
        let name = self.def.slots[index].name;
        match self.values.get_mut(index) {
            Some(slot @ None) => {
                *slot = Some(Self::arg(lx, value));
                Ok(())
            }
            _ => {
                let message = format!("argument {name} of {layer} given more than once");
                Err(invalid(key.start, message))
            }
        }
    }

    /// The slot's name and value, if given.
    fn get(&self, index: usize) -> (&'static str, Option<&Arg>) {
        let name = self.def.slots.get(index).map_or("?", |s| s.name);
        (name, self.values.get(index).and_then(Option::as_ref))
    }

    /// A non-negative integer; `positive` also rules out 0.
    fn integer(&self, index: usize, positive: bool) -> Result<Option<usize>, SpecError> {
        let layer = self.def.name;
        let (name, Some(arg)) = self.get(index) else {
            return Ok(None);
        };
        let what = if positive { "positive" } else { "non-negative" };
        if arg.kind != Kind::Number || !arg.text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(arg.unexpected(format!("a {what} integer for {name} of {layer}")));
        }
        let Ok(value) = arg.text.parse::<usize>() else {
            let message = format!("{name} of {layer} is too large: {}", quote(&arg.text));
            return Err(invalid(arg.position, message));
        };
        if positive && value == 0 {
            let message = format!("{name} of {layer} must be at least 1, found 0");
            return Err(invalid(arg.position, message));
        }
        Ok(Some(value))
    }

    /// A required positive integer.
    fn size(&self, index: usize) -> Result<usize, SpecError> {
        self.integer(index, true)?.ok_or_else(|| {
            let (name, _) = self.get(index);
            let message = format!(
                "{} is missing {name} (usage: {})",
                self.def.name, self.def.usage
            );
            invalid(self.close, message)
        })
    }

    fn size_or(&self, index: usize, default: usize) -> Result<usize, SpecError> {
        Ok(self.integer(index, true)?.unwrap_or(default))
    }

    fn count_or(&self, index: usize, default: usize) -> Result<usize, SpecError> {
        Ok(self.integer(index, false)?.unwrap_or(default))
    }

    /// A finite real number.
    fn real(&self, index: usize) -> Result<Option<(f64, &Arg)>, SpecError> {
        let layer = self.def.name;
        let (name, Some(arg)) = self.get(index) else {
            return Ok(None);
        };
        let parsed = if arg.kind == Kind::Number {
            arg.text.parse::<f64>().ok()
        } else {
            None
        };
        let Some(value) = parsed else {
            return Err(arg.unexpected(format!("a number for {name} of {layer}")));
        };
        if !value.is_finite() {
            let message = format!(
                "{name} of {layer} must be finite, found {}",
                quote(&arg.text)
            );
            return Err(invalid(arg.position, message));
        }
        Ok(Some((value, arg)))
    }

    fn real_or(&self, index: usize, default: f64) -> Result<f64, SpecError> {
        Ok(self.real(index)?.map_or(default, |(value, _)| value))
    }

    /// A real number in `[0, 1)`.
    fn probability_or(&self, index: usize, default: f64) -> Result<f64, SpecError> {
        match self.real(index)? {
            None => Ok(default),
            Some((value, _)) if (0.0..1.0).contains(&value) => Ok(value),
            Some((_, arg)) => {
                let (name, _) = self.get(index);
                let message = format!(
                    "{name} of {} must be at least 0 and less than 1, found {}",
                    self.def.name,
                    quote(&arg.text)
                );
                Err(invalid(arg.position, message))
            }
        }
    }

    fn flag_or(&self, index: usize, default: bool) -> Result<bool, SpecError> {
        let (name, Some(arg)) = self.get(index) else {
            return Ok(default);
        };
        if arg.kind == Kind::Ident && is_bool(&arg.text) {
            Ok(arg.text.eq_ignore_ascii_case("true"))
        } else {
            let expected = format!("true or false for {name} of {}", self.def.name);
            Err(arg.unexpected(expected))
        }
    }

    /// A convolution's channel groups (default 1), which must divide both
    /// channel counts: PyTorch splits the channels into that many equal parts.
    fn groups(&self, index: usize, inputs: usize, outputs: usize) -> Result<usize, SpecError> {
        let groups = self.size_or(index, 1)?;
        match self.get(index) {
            (name, Some(arg))
                if !inputs.is_multiple_of(groups) || !outputs.is_multiple_of(groups) =>
            {
                let message = format!(
                    "{name} of {} must divide in_channels {inputs} and out_channels {outputs}, found {groups}",
                    self.def.name
                );
                Err(invalid(arg.position, message))
            }
            _ => Ok(groups),
        }
    }

    /// Kernel, stride (defaulting to the kernel) and padding (at most half
    /// the kernel, as PyTorch requires) of a pooling layer.
    fn pool(&self) -> Result<(usize, usize, usize), SpecError> {
        let kernel = self.size(0)?;
        let stride = self.size_or(1, kernel)?;
        let padding = self.count_or(2, 0)?;
        if padding > kernel / 2 {
            let position = self.get(2).1.map_or(self.close, |arg| arg.position);
            let message = format!(
                "padding of {} must be at most half the kernel size {kernel}, found {padding}",
                self.def.name
            );
            return Err(invalid(position, message));
        }
        Ok((kernel, stride, padding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_follow_layer_names() {
        let names: Vec<&str> = DEFS.iter().map(|d| d.name).chain([RESIDUAL]).collect();
        assert_eq!(names, Layer::NAMES);
        for def in DEFS {
            assert!(def.usage.starts_with(def.name));
            // Only layers whose every argument is optional may appear bare.
            let bare = (def.build)(&Args::new(def, def.name.len()));
            assert_eq!(bare.is_ok(), def.bare_ok, "{}", def.name);
            if let Ok(layer) = bare {
                assert_eq!(layer.name(), def.name);
            }
        }
    }
}
