use super::*;

const MLP: &str = "linear(784,256),relu,linear(256,10)";
const CNN: &str = "conv2d(1,32,k=5,p=2),relu,maxpool2d(2),flatten,linear(1568,10)";

fn layer(spec: &str) -> Layer {
    let parsed = ModelSpec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    assert_eq!(parsed.layers().len(), 1, "{spec}");
    parsed.layers()[0].layer.clone()
}

fn error(spec: &str) -> SpecError {
    match ModelSpec::parse(spec) {
        Ok(parsed) => panic!("{spec:?} parsed as {parsed}"),
        Err(e) => e,
    }
}

/// Asserts the full message and that the variant's position is `position`.
fn assert_error(spec: &str, position: usize, message: &str) {
    let e = error(spec);
    assert_eq!(e.to_string(), message, "{spec:?}");
    assert_eq!(e.position(), position, "{spec:?}");
}

fn conv(kernel: usize, stride: usize, padding: usize, dilation: usize, bias: bool) -> Layer {
    Layer::Conv2d {
        in_channels: 3,
        out_channels: 8,
        kernel,
        stride,
        padding,
        dilation,
        groups: 1,
        bias,
    }
}

#[test]
fn linear_with_every_option() {
    let plain = Layer::Linear {
        in_features: 784,
        out_features: 256,
        bias: true,
    };
    let no_bias = Layer::Linear {
        in_features: 784,
        out_features: 256,
        bias: false,
    };
    for spec in [
        "linear(784,256)",
        "linear(784,256,bias=true)",
        " linear ( 784 , 256 , bias = TRUE ) ",
        "Linear(784,256,true)",
        "linear(in_features=784,out_features=256)",
        "linear(784,out=256)",
        "linear(0784,256)",
        "LINEAR(784,256,Bias=True)",
        "linear(784,256)\n",
    ] {
        assert_eq!(layer(spec), plain, "{spec}");
    }
    for spec in ["linear(784,256,bias=false)", "linear(784,256,False)"] {
        assert_eq!(layer(spec), no_bias, "{spec}");
    }
}

#[test]
fn conv2d_with_every_option() {
    assert_eq!(layer("conv2d(3,8,k=5)"), conv(5, 1, 0, 1, true));
    assert_eq!(layer("conv2d(3,8,k=5,s=2)"), conv(5, 2, 0, 1, true));
    assert_eq!(layer("conv2d(3,8,k=5,p=2)"), conv(5, 1, 2, 1, true));
    assert_eq!(layer("conv2d(3,8,k=5,d=3)"), conv(5, 1, 0, 3, true));
    assert_eq!(layer("conv2d(3,8,k=5,bias=false)"), conv(5, 1, 0, 1, false));
    assert_eq!(
        layer("conv2d(3,8,k=5,p=0,bias=true)"),
        conv(5, 1, 0, 1, true)
    );
    assert_eq!(
        layer("conv2d(3,8,k=3,s=2,p=1,d=2,bias=false)"),
        conv(3, 2, 1, 2, false)
    );
    // Keyword order is free; PyTorch's names and positional order also work.
    assert_eq!(
        layer("conv2d(3,8,bias=false,d=2,p=1,s=2,k=3)"),
        conv(3, 2, 1, 2, false)
    );
    assert_eq!(
        layer("conv2d(in_channels=3,out_channels=8,kernel_size=3,stride=2,padding=1,dilation=2)"),
        conv(3, 2, 1, 2, true)
    );
    assert_eq!(
        layer("conv2d(3,8,3,2,1,2,1,false)"),
        conv(3, 2, 1, 2, false)
    );
    assert_eq!(layer("Conv2D( 3 , 8 , K = 3 )"), conv(3, 1, 0, 1, true));
}

#[test]
fn pooling_with_every_option() {
    for (name, make) in [
        (
            "maxpool2d",
            (|kernel, stride, padding| Layer::MaxPool2d {
                kernel,
                stride,
                padding,
            }) as fn(usize, usize, usize) -> Layer,
        ),
        ("avgpool2d", |kernel, stride, padding| Layer::AvgPool2d {
            kernel,
            stride,
            padding,
        }),
    ] {
        assert_eq!(layer(&format!("{name}(2)")), make(2, 2, 0));
        assert_eq!(layer(&format!("{name}(3,s=1)")), make(3, 1, 0));
        assert_eq!(layer(&format!("{name}(3,p=1)")), make(3, 3, 1));
        assert_eq!(layer(&format!("{name}(3,s=2,p=1)")), make(3, 2, 1));
        assert_eq!(layer(&format!("{name}(k=3,p=1,s=2)")), make(3, 2, 1));
        assert_eq!(layer(&format!("{name}(3,2,1)")), make(3, 2, 1));
        assert_eq!(
            layer(&format!("{name}(kernel_size=4,stride=4,padding=2)")),
            make(4, 4, 2)
        );
    }
}

#[test]
fn argument_free_layers() {
    for (spec, expected) in [
        ("flatten", Layer::Flatten),
        ("relu", Layer::Relu),
        ("sigmoid", Layer::Sigmoid),
        ("tanh", Layer::Tanh),
        ("selu", Layer::Selu),
        ("softplus", Layer::Softplus),
        ("gelu", Layer::Gelu),
        ("identity", Layer::Identity),
        ("ReLU", Layer::Relu),
        ("GELU()", Layer::Gelu),
        ("flatten ( )", Layer::Flatten),
    ] {
        assert_eq!(layer(spec), expected, "{spec}");
        assert!(!expected.has_parameters());
    }
}

#[test]
fn layers_with_a_real_argument() {
    for (spec, expected) in [
        ("leakyrelu", Layer::LeakyRelu { slope: 0.01 }),
        ("leakyrelu()", Layer::LeakyRelu { slope: 0.01 }),
        ("leakyrelu(0.2)", Layer::LeakyRelu { slope: 0.2 }),
        ("leakyrelu(-1.5)", Layer::LeakyRelu { slope: -1.5 }),
        (
            "LeakyReLU(negative_slope=.1)",
            Layer::LeakyRelu { slope: 0.1 },
        ),
        ("leakyrelu(slope=1e-3)", Layer::LeakyRelu { slope: 1e-3 }),
        ("leakyrelu(2)", Layer::LeakyRelu { slope: 2.0 }),
        ("elu", Layer::Elu { alpha: 1.0 }),
        ("elu(0.5)", Layer::Elu { alpha: 0.5 }),
        ("elu(alpha=2.)", Layer::Elu { alpha: 2.0 }),
        ("dropout", Layer::Dropout { p: 0.5 }),
        ("dropout(0)", Layer::Dropout { p: 0.0 }),
        ("dropout(0.25)", Layer::Dropout { p: 0.25 }),
        ("dropout(p=0.999)", Layer::Dropout { p: 0.999 }),
        ("dropout(+1E-1)", Layer::Dropout { p: 0.1 }),
    ] {
        assert_eq!(layer(spec), expected, "{spec}");
    }
}

#[test]
fn normalization_layers() {
    for (spec, expected) in [
        ("batchnorm1d(16)", Layer::BatchNorm1d { features: 16 }),
        (
            "BatchNorm1d(num_features=16)",
            Layer::BatchNorm1d { features: 16 },
        ),
        ("batchnorm2d(32)", Layer::BatchNorm2d { features: 32 }),
        ("batchnorm2d(n=32)", Layer::BatchNorm2d { features: 32 }),
        ("layernorm(64)", Layer::LayerNorm { features: 64 }),
        (
            "LayerNorm(normalized_shape=64)",
            Layer::LayerNorm { features: 64 },
        ),
    ] {
        assert_eq!(layer(spec), expected, "{spec}");
        assert!(expected.has_parameters());
    }
}

#[test]
fn layer_positions_and_texts() {
    let spec =
        ModelSpec::parse(" conv2d( 1,32 , k=5,p=2),relu ,\tmaxpool2d(2),flatten,linear(1568,10) ")
            .unwrap();
    let found: Vec<(usize, &str)> = spec
        .layers()
        .iter()
        .map(|l| (l.position, l.text.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (1, "conv2d( 1,32 , k=5,p=2)"),
            (25, "relu"),
            (32, "maxpool2d(2)"),
            (45, "flatten"),
            (53, "linear(1568,10)"),
        ]
    );
    // Positions count characters, not bytes.
    let spec = ModelSpec::parse("relu,\u{a0}é".replace('é', "tanh").as_str()).unwrap();
    assert_eq!(spec.layers()[1].position, 6);
}

#[test]
fn names_and_parameter_flags() {
    for name in Layer::NAMES {
        let spec = match *name {
            "linear" => "linear(2,3)".to_owned(),
            "conv2d" => "conv2d(2,3,k=1)".to_owned(),
            "maxpool2d" | "avgpool2d" | "adaptiveavgpool2d" | "batchnorm1d" | "batchnorm2d"
            | "layernorm" => {
                format!("{name}(2)")
            }
            "leakyrelu" => "leakyrelu(0.01)".to_owned(),
            "dropout" => "dropout(0.5)".to_owned(),
            "residual" => "residual(linear(2,3)|relu)".to_owned(),
            _ => (*name).to_owned(),
        };
        let l = layer(&spec);
        assert_eq!(l.name(), *name);
        assert_eq!(l.to_string(), spec);
        let expect_params = matches!(
            *name,
            "linear" | "conv2d" | "batchnorm1d" | "batchnorm2d" | "layernorm" | "residual"
        );
        assert_eq!(l.has_parameters(), expect_params, "{name}");
    }
}

fn names_and_shapes(params: Vec<ParamInfo>) -> Vec<(String, Vec<usize>)> {
    params.into_iter().map(|p| (p.name, p.shape)).collect()
}

fn named(list: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    list.iter()
        .map(|(n, s)| ((*n).to_owned(), s.to_vec()))
        .collect()
}

#[test]
fn mlp_parameters_and_shapes() {
    let spec = ModelSpec::parse(MLP).unwrap();
    assert_eq!(
        names_and_shapes(spec.parameters()),
        named(&[
            ("0.weight", &[256, 784]),
            ("0.bias", &[256]),
            ("2.weight", &[10, 256]),
            ("2.bias", &[10]),
        ])
    );
    let params = spec.parameters();
    assert_eq!(
        params.iter().map(|p| (p.layer, p.kind)).collect::<Vec<_>>(),
        [
            (0, ParamKind::Weight),
            (0, ParamKind::Bias),
            (2, ParamKind::Weight),
            (2, ParamKind::Bias),
        ]
    );
    assert_eq!(
        spec.num_parameters(),
        params.iter().map(ParamInfo::numel).sum::<usize>()
    );
    assert!(spec.buffers().is_empty());
    assert_eq!(
        spec.output_shapes(&[784]).unwrap(),
        [vec![256], vec![256], vec![10]]
    );
    // Linear acts on the last axis.
    assert_eq!(
        spec.output_shapes(&[5, 784]).unwrap(),
        [vec![5, 256], vec![5, 256], vec![5, 10]]
    );
    assert_eq!(spec.input_shape_hint(), Some(vec![784]));
}

#[test]
fn cnn_parameters_and_shapes() {
    let spec = ModelSpec::parse(CNN).unwrap();
    assert_eq!(
        names_and_shapes(spec.parameters()),
        named(&[
            ("0.weight", &[32, 1, 5, 5]),
            ("0.bias", &[32]),
            ("4.weight", &[10, 1568]),
            ("4.bias", &[10]),
        ])
    );
    assert_eq!(spec.num_parameters(), 32 * 25 + 32 + 15680 + 10);
    // As PyTorch computes it: 28x28 stays 28x28 through the padded
    // convolution and pools to 14x14, so flatten gives 32 * 14 * 14 = 6272
    // features; linear(1568,10) fits a 14x14 input (or 8 channels at 28x28).
    assert_eq!(
        spec.output_shapes(&[1, 28, 28]).unwrap_err().to_string(),
        "model spec: layer 4 `linear(1568,10)` at position 47 expects 1568 input features, got 6272"
    );
    assert_eq!(
        spec.output_shapes(&[1, 14, 14]).unwrap(),
        [
            vec![32, 14, 14],
            vec![32, 14, 14],
            vec![32, 7, 7],
            vec![1568],
            vec![10]
        ]
    );
    let mnist = ModelSpec::parse(&CNN.replace("1568", "6272")).unwrap();
    assert_eq!(
        mnist.output_shapes(&[1, 28, 28]).unwrap(),
        [
            vec![32, 28, 28],
            vec![32, 28, 28],
            vec![32, 14, 14],
            vec![6272],
            vec![10]
        ]
    );
    assert_eq!(spec.input_shape_hint(), None);
    assert_eq!(
        spec.output_shapes(&[1, 20, 20]).unwrap_err().to_string(),
        "model spec: layer 4 `linear(1568,10)` at position 47 expects 1568 input features, got 3200"
    );
    assert_eq!(
        spec.output_shapes(&[3, 28, 28]).unwrap_err().to_string(),
        "model spec: layer 0 `conv2d(1,32,k=5,p=2)` at position 0 expects 1 input channels, got 3"
    );
}

#[test]
fn normalization_parameters_and_buffers() {
    let spec = ModelSpec::parse(
        "conv2d(3,8,k=3,bias=false),batchnorm2d(8),flatten,layernorm(72),batchnorm1d(72)",
    )
    .unwrap();
    assert_eq!(
        names_and_shapes(spec.parameters()),
        named(&[
            ("0.weight", &[8, 3, 3, 3]),
            ("1.weight", &[8]),
            ("1.bias", &[8]),
            ("3.weight", &[72]),
            ("3.bias", &[72]),
            ("4.weight", &[72]),
            ("4.bias", &[72]),
        ])
    );
    assert_eq!(
        names_and_shapes(spec.buffers()),
        named(&[
            ("1.running_mean", &[8]),
            ("1.running_var", &[8]),
            ("4.running_mean", &[72]),
            ("4.running_var", &[72]),
        ])
    );
    let kinds: Vec<ParamKind> = spec.buffers().iter().map(|b| b.kind).collect();
    assert_eq!(
        kinds,
        [
            ParamKind::RunningMean,
            ParamKind::RunningVar,
            ParamKind::RunningMean,
            ParamKind::RunningVar
        ]
    );
    assert!(spec.is_ignored_state_entry("1.num_batches_tracked"));
    assert!(spec.is_ignored_state_entry("4.num_batches_tracked"));
    for name in [
        "3.num_batches_tracked",
        "01.num_batches_tracked",
        "+1.num_batches_tracked",
        "9.num_batches_tracked",
        "num_batches_tracked",
        "1.running_mean",
        "",
    ] {
        assert!(!spec.is_ignored_state_entry(name), "{name}");
    }
    assert_eq!(
        spec.output_shapes(&[3, 5, 5]).unwrap(),
        [vec![8, 3, 3], vec![8, 3, 3], vec![72], vec![72], vec![72]]
    );
    assert_eq!(spec.num_parameters(), 8 * 27 + 16 + 144 + 144);
}

/// The shape after the single layer of `spec`, or the error message.
fn shape_after(spec: &str, input: &[usize]) -> Result<Vec<usize>, String> {
    let parsed = ModelSpec::parse(spec).unwrap();
    parsed
        .output_shapes(input)
        .map(|mut shapes| shapes.remove(0))
        .map_err(|e| {
            assert_eq!(e.position(), 0);
            e.to_string()
        })
}

#[test]
fn shapes_of_each_layer() {
    let ok = |spec: &str, input: &[usize], expected: &[usize]| {
        assert_eq!(
            shape_after(spec, input),
            Ok(expected.to_vec()),
            "{spec} {input:?}"
        );
    };
    ok("linear(3,4)", &[3], &[4]);
    ok("linear(3,4)", &[2, 7, 3], &[2, 7, 4]);
    ok("conv2d(3,8,k=3)", &[3, 32, 32], &[8, 30, 30]);
    ok("conv2d(3,8,k=3,p=1)", &[3, 32, 32], &[8, 32, 32]);
    ok("conv2d(3,8,k=3,s=2,p=1)", &[3, 32, 31], &[8, 16, 16]);
    ok("conv2d(3,8,k=3,d=2)", &[3, 10, 9], &[8, 6, 5]);
    ok("conv2d(3,8,k=5)", &[3, 5, 5], &[8, 1, 1]);
    ok("maxpool2d(2)", &[4, 7, 8], &[4, 3, 4]);
    ok("maxpool2d(3,s=1,p=1)", &[4, 7, 8], &[4, 7, 8]);
    ok("avgpool2d(2,s=1)", &[4, 7, 8], &[4, 6, 7]);
    ok("avgpool2d(4,p=2)", &[1, 6, 6], &[1, 2, 2]);
    ok("conv2d(4,8,k=1,groups=4)", &[4, 3, 3], &[8, 3, 3]);
    ok("adaptiveavgpool2d(3)", &[4, 7, 8], &[4, 3, 3]);
    ok("flatten", &[2, 3, 4], &[24]);
    ok("flatten", &[5], &[5]);
    ok("flatten", &[0, 3], &[0]);
    ok("batchnorm1d(3)", &[3], &[3]);
    ok("batchnorm1d(3)", &[3, 9], &[3, 9]);
    ok("batchnorm2d(3)", &[3, 4, 5], &[3, 4, 5]);
    ok("layernorm(5)", &[2, 5], &[2, 5]);
    for spec in [
        "relu",
        "sigmoid",
        "tanh",
        "leakyrelu",
        "elu",
        "selu",
        "softplus",
        "gelu",
        "identity",
        "dropout",
    ] {
        ok(spec, &[2, 3], &[2, 3]);
        ok(spec, &[], &[]);
    }

    let err = |spec: &str, input: &[usize], message: &str| {
        let expected = format!("model spec: layer 0 `{spec}` at position 0 {message}");
        assert_eq!(shape_after(spec, input), Err(expected), "{spec} {input:?}");
    };
    err(
        "linear(3,4)",
        &[],
        "expects at least one input axis, got shape []",
    );
    err("linear(3,4)", &[3, 2], "expects 3 input features, got 2");
    err(
        "conv2d(3,8,k=3)",
        &[3, 9],
        "expects a [C, H, W] input, got shape [3, 9]",
    );
    err(
        "conv2d(3,8,k=3)",
        &[1, 9, 9],
        "expects 3 input channels, got 1",
    );
    err(
        "conv2d(3,8,k=3,d=2)",
        &[3, 4, 9],
        "has a window of 5 that does not fit the input axis of size 4 (padded to 4)",
    );
    err(
        "maxpool2d(3,p=1)",
        &[3, 9, 0],
        "has a window of 3 that does not fit the input axis of size 0 (padded to 2)",
    );
    err(
        "avgpool2d(2)",
        &[4, 4],
        "expects a [C, H, W] input, got shape [4, 4]",
    );
    err(
        "flatten",
        &[],
        "expects at least one input axis, got shape []",
    );
    err(
        "flatten",
        &[usize::MAX, 2],
        "gives an output size that overflows",
    );
    err(
        "batchnorm1d(3)",
        &[4],
        "expects a [C] or [C, L] input with C = 3, got shape [4]",
    );
    err(
        "batchnorm1d(3)",
        &[3, 4, 5],
        "expects a [C] or [C, L] input with C = 3, got shape [3, 4, 5]",
    );
    err(
        "batchnorm2d(3)",
        &[3, 4],
        "expects a [C, H, W] input with C = 3, got shape [3, 4]",
    );
    err(
        "layernorm(5)",
        &[5, 4],
        "expects a last axis of size 5, got shape [5, 4]",
    );
    err(
        "layernorm(5)",
        &[],
        "expects a last axis of size 5, got shape []",
    );
    err(
        "conv2d(3,8,k=3,p=9223372036854775807)",
        &[3, 4, 4],
        "gives an output size that overflows",
    );
    err(
        "conv2d(3,8,k=3,d=9223372036854775808)",
        &[3, 4, 4],
        "gives an output size that overflows",
    );
}

#[test]
fn shape_errors_show_the_text_on_one_line() {
    let spec = ModelSpec::parse("relu,\nlinear(\n3,\t4)").unwrap();
    assert_eq!(
        spec.output_shapes(&[2]).unwrap_err().to_string(),
        "model spec: layer 1 `linear( 3, 4)` at position 6 expects 3 input features, got 2"
    );
    assert_eq!(spec.layers()[1].text, "linear(\n3,\t4)");
}

#[test]
fn hand_built_layers_never_panic() {
    // The fields are public, so shapes must cope with values a parse rejects.
    for layer in [
        Layer::Conv2d {
            in_channels: 1,
            out_channels: 1,
            kernel: 0,
            stride: 0,
            padding: 0,
            dilation: 0,
            groups: 0,
            bias: true,
        },
        conv(3, 0, 0, 1, true),
        conv(3, 1, 0, 0, true),
        Layer::MaxPool2d {
            kernel: 0,
            stride: 0,
            padding: usize::MAX,
        },
        Layer::AvgPool2d {
            kernel: 2,
            stride: 0,
            padding: 0,
        },
    ] {
        assert!(layer.output_shape(&[3, 4, 4]).is_err(), "{layer:?}");
        assert!(layer.output_shape(&[1, 4, 4]).is_err(), "{layer:?}");
    }
    // A hand-built block may have an empty body: the identity.
    let empty = Layer::Residual {
        body: Vec::new(),
        shortcut: Some(Vec::new()),
    };
    assert_eq!(empty.output_shape(&[2]).ok(), Some(vec![2]));
    let info = ParamInfo {
        name: "0.weight".into(),
        shape: vec![usize::MAX, 2],
        layer: 0,
        kind: ParamKind::Weight,
        fan_in: None,
    };
    assert_eq!(info.numel(), usize::MAX);
}

#[test]
fn input_shape_hints() {
    for (spec, hint) in [
        ("linear(3,4)", Some(vec![3])),
        ("relu,dropout,flatten,linear(7,2)", Some(vec![7])),
        ("batchnorm1d(5),linear(5,2)", Some(vec![5])),
        ("tanh,layernorm(6)", Some(vec![6])),
        ("conv2d(1,8,k=3),flatten,linear(8,2)", None),
        ("maxpool2d(2)", None),
        ("flatten,batchnorm2d(3)", None),
        ("avgpool2d(2),linear(3,3)", None),
        ("adaptiveavgpool2d(1),flatten,linear(3,3)", None),
        ("relu,sigmoid", None),
    ] {
        let parsed = ModelSpec::parse(spec).unwrap();
        assert_eq!(parsed.input_shape_hint(), hint, "{spec}");
        if let Some(shape) = hint {
            assert!(parsed.output_shapes(&shape).is_ok(), "{spec}");
        }
    }
}

#[test]
fn display_is_canonical_and_round_trips() {
    for (spec, canonical) in [
        (MLP, MLP),
        (CNN, CNN),
        (
            " Linear( 784 , 256, bias=True ) , ReLU ",
            "linear(784,256),relu",
        ),
        ("linear(3,4,false)", "linear(3,4,bias=false)"),
        (
            "conv2d(3,8,3,2,1,2,1,false)",
            "conv2d(3,8,k=3,s=2,p=1,d=2,bias=false)",
        ),
        ("conv2d(4,8,k=3,groups=4)", "conv2d(4,8,k=3,groups=4)"),
        ("conv2d(3,8,k=3,s=1,p=0,d=1)", "conv2d(3,8,k=3)"),
        ("maxpool2d(2,s=2,p=0)", "maxpool2d(2)"),
        ("maxpool2d(3,s=2,p=1)", "maxpool2d(3,s=2,p=1)"),
        ("avgpool2d(2,s=1)", "avgpool2d(2,s=1)"),
        ("leakyrelu", "leakyrelu(0.01)"),
        ("leakyrelu(-0)", "leakyrelu(-0)"),
        ("leakyrelu(1e20)", "leakyrelu(1e20)"),
        ("leakyrelu(123456.5)", "leakyrelu(123456.5)"),
        ("leakyrelu(0.000001)", "leakyrelu(1e-6)"),
        ("elu(1.0)", "elu"),
        ("elu(.5)", "elu(0.5)"),
        ("dropout", "dropout(0.5)"),
        ("dropout(0)", "dropout(0)"),
        ("dropout(1e-300)", "dropout(1e-300)"),
        ("relu(),gelu( )", "relu,gelu"),
        (
            "batchnorm1d(4),batchnorm2d(4),layernorm(4)",
            "batchnorm1d(4),batchnorm2d(4),layernorm(4)",
        ),
        ("linear(007,8)", "linear(7,8)"),
    ] {
        let parsed = ModelSpec::parse(spec).unwrap();
        assert_eq!(parsed.to_string(), canonical, "{spec}");
        let again: ModelSpec = canonical.parse().unwrap();
        assert_eq!(again, parsed, "{spec}");
        assert_eq!(again.to_string(), canonical, "{spec}");
    }
    assert_ne!(
        ModelSpec::parse("relu").unwrap(),
        ModelSpec::parse("relu,relu").unwrap()
    );
    assert_ne!(
        ModelSpec::parse("elu").unwrap(),
        ModelSpec::parse("elu(2)").unwrap()
    );
}

#[test]
fn characters_outside_ascii_are_named_with_their_position() {
    for (spec, position, found) in [
        ("ℓinear(1,2)", 0, "ℓ"),
        ("linéar(64,10)", 3, "é"),
        ("relu,tanhñ", 9, "ñ"),
        ("linear(64,10,bias=fälse)", 19, "ä"),
        ("linear(6٣,10)", 8, "٣"),
    ] {
        let e = error(spec);
        assert!(matches!(e, SpecError::Character { .. }), "{spec:?}: {e:?}");
        let message = format!(
            "model spec: at position {position}: unexpected character '{found}' (names are ASCII letters, digits and '_')"
        );
        assert_error(spec, position, &message);
    }
}

#[test]
fn syntax_errors_name_the_position() {
    for (spec, position, message) in [
        ("", 0, "at position 0: expected a layer name, found end of input"),
        ("   ", 3, "at position 3: expected a layer name, found end of input"),
        (",relu", 0, "at position 0: expected a layer name, found ','"),
        (
            "relu,",
            5,
            "at position 5: expected a layer name after ',', found end of input",
        ),
        (
            "relu,,tanh",
            5,
            "at position 5: expected a layer name after ',', found ','",
        ),
        ("42", 0, "at position 0: expected a layer name, found '42'"),
        ("relu\u{0}", 4, "at position 4: expected ',' or the end of the spec after relu, found '\\0'"),
        (
            "relu tanh",
            5,
            "at position 5: expected ',' or the end of the spec after relu, found 'tanh'",
        ),
        (
            "leakyrelu 0.1",
            10,
            "at position 10: expected '(', ',' or the end of the spec after leakyrelu, found '0.1'",
        ),
        (
            "linear",
            6,
            "at position 6: expected '(' after linear (usage: linear(in,out[,bias=false])), found end of input",
        ),
        (
            "maxpool2d,relu",
            9,
            "at position 9: expected '(' after maxpool2d (usage: maxpool2d(K[,s=S][,p=P])), found ','",
        ),
        (
            "linear(784,256x)",
            14,
            "at position 14: expected ',' or ')' after the number, found 'x'",
        ),
        (
            "conv2d(1,32,k=5x,p=2),relu",
            15,
            "at position 15: expected ',' or ')' after the number, found 'x'",
        ),
        (
            "linear(784,256,bias=false",
            25,
            "at position 25: expected ',' or ')' after the value, found end of input",
        ),
        (
            "linear(784,256,)",
            15,
            "at position 15: expected an argument after ',', found ')'",
        ),
        (
            "linear(",
            7,
            "at position 7: expected an argument or ')', found end of input",
        ),
        (
            "linear((784),10)",
            7,
            "at position 7: expected an argument or ')', found '('",
        ),
        (
            "conv2d(1,32,k=)",
            14,
            "at position 14: expected a value after 'k=', found ')'",
        ),
        (
            "conv2d(1,32,k 5)",
            14,
            "at position 14: expected '=' after k, found '5'",
        ),
        (
            "linear(7.5,10)",
            7,
            "at position 7: expected a positive integer for in_features of linear, found '7.5'",
        ),
        (
            "linear(784,-10)",
            11,
            "at position 11: expected a positive integer for out_features of linear, found '-10'",
        ),
        (
            "linear(784,1e3)",
            11,
            "at position 11: expected a positive integer for out_features of linear, found '1e3'",
        ),
        (
            "linear(784, ten)",
            12,
            "at position 12: expected a positive integer for out_features of linear, found 'ten'",
        ),
        (
            "conv2d(1,32,k=5,p=-1)",
            18,
            "at position 18: expected a non-negative integer for p of conv2d, found '-1'",
        ),
        (
            "linear(3,4,bias=0)",
            16,
            "at position 16: expected true or false for bias of linear, found '0'",
        ),
        (
            "linear(3,4,bias=yes)",
            16,
            "at position 16: expected true or false for bias of linear, found 'yes'",
        ),
        (
            "leakyrelu(true)",
            10,
            "at position 10: expected a number for slope of leakyrelu, found 'true'",
        ),
        (
            "dropout(p=nan)",
            10,
            "at position 10: expected a number for p of dropout, found 'nan'",
        ),
        (
            "relu,linear(1,2)x",
            16,
            "at position 16: expected ',' or the end of the spec after linear, found 'x'",
        ),
        (
            "relu;tanh",
            4,
            "at position 4: expected ',' or the end of the spec after relu, found ';'",
        ),
        (
            "relu(",
            5,
            "at position 5: expected an argument or ')', found end of input",
        ),
        (
            "relu,\n\ntanh(\n",
            13,
            "at position 13: expected an argument or ')', found end of input",
        ),
    ] {
        let e = error(spec);
        assert!(matches!(e, SpecError::Syntax { .. }), "{spec:?}: {e:?}");
        assert_error(spec, position, &format!("model spec: {message}"));
    }
}

#[test]
fn unknown_layers() {
    let list = Layer::NAMES.join(", ");
    for (spec, name, position) in [
        ("lineer(784,10)", "lineer", 0),
        ("linear(2,3), Conv3d(1,2,k=3)", "Conv3d", 13),
        ("relu,leaky_relu", "leaky_relu", 5),
    ] {
        let e = error(spec);
        assert_eq!(
            e,
            SpecError::UnknownLayer {
                name: name.to_owned(),
                position
            }
        );
        assert_eq!(
            e.to_string(),
            format!("model spec: unknown layer '{name}' at position {position} (expected one of: {list})")
        );
    }
    assert!(
        list.starts_with("linear, conv2d, maxpool2d, avgpool2d, adaptiveavgpool2d, flatten, relu,")
    );
    let long = "x".repeat(500);
    let e = error(&long);
    assert!(e.to_string().contains(&format!("'{}...'", "x".repeat(37))));
}

#[test]
fn invalid_arguments() {
    for (spec, position, message) in [
        (
            "linear(0,10)",
            7,
            "in_features of linear must be at least 1, found 0",
        ),
        (
            "linear(784,000)",
            11,
            "out_features of linear must be at least 1, found 0",
        ),
        ("conv2d(1,32,k=0)", 14, "k of conv2d must be at least 1, found 0"),
        ("conv2d(1,32,k=3,s=0)", 18, "s of conv2d must be at least 1, found 0"),
        ("conv2d(1,32,k=3,d=0)", 18, "d of conv2d must be at least 1, found 0"),
        ("maxpool2d(0)", 10, "k of maxpool2d must be at least 1, found 0"),
        ("batchnorm1d(0)", 12, "n of batchnorm1d must be at least 1, found 0"),
        ("layernorm(n=0)", 12, "n of layernorm must be at least 1, found 0"),
        (
            "linear(99999999999999999999999,2)",
            7,
            "in_features of linear is too large: '99999999999999999999999'",
        ),
        (
            "linear(1,2,3)",
            11,
            "expected true or false for bias of linear, found '3'",
        ),
        (
            "linear(1,2,true,4)",
            16,
            "too many arguments for linear (usage: linear(in,out[,bias=false]))",
        ),
        ("relu(1)", 5, "relu takes no arguments"),
        ("flatten(start_dim=1)", 8, "flatten takes no arguments"),
        (
            "linear(784)",
            10,
            "linear is missing out_features (usage: linear(in,out[,bias=false]))",
        ),
        (
            "linear()",
            7,
            "linear is missing in_features (usage: linear(in,out[,bias=false]))",
        ),
        (
            "conv2d(1,32, p=2)",
            16,
            "conv2d is missing k (usage: conv2d(in,out,k=K[,s=S][,p=P][,d=D][,groups=G][,bias=false]))",
        ),
        (
            "batchnorm2d()",
            12,
            "batchnorm2d is missing n (usage: batchnorm2d(n))",
        ),
        (
            "conv2d(1,32,k=5,q=2)",
            16,
            "unknown argument 'q' for conv2d (expected one of: in_channels, out_channels, k, s, p, d, groups, bias)",
        ),
        (
            "linear(1,2,bais=false)",
            11,
            "unknown argument 'bais' for linear (expected one of: in_features, out_features, bias)",
        ),
        (
            "conv2d(1,32,k=5,k=3)",
            16,
            "argument k of conv2d given more than once",
        ),
        (
            "conv2d(1,32,5,kernel_size=3)",
            14,
            "argument k of conv2d given more than once",
        ),
        (
            "linear(in=3,in_features=4)",
            12,
            "argument in_features of linear given more than once",
        ),
        (
            "conv2d(1,k=5,32)",
            13,
            "positional argument after keyword arguments in conv2d",
        ),
        (
            "dropout(1)",
            8,
            "p of dropout must be at least 0 and less than 1, found '1'",
        ),
        (
            "dropout(p=-0.1)",
            10,
            "p of dropout must be at least 0 and less than 1, found '-0.1'",
        ),
        (
            "dropout(1.5)",
            8,
            "p of dropout must be at least 0 and less than 1, found '1.5'",
        ),
        (
            "leakyrelu(1e400)",
            10,
            "slope of leakyrelu must be finite, found '1e400'",
        ),
        ("elu(-1e309)", 4, "alpha of elu must be finite, found '-1e309'"),
        (
            "maxpool2d(3,p=2)",
            14,
            "padding of maxpool2d must be at most half the kernel size 3, found 2",
        ),
        (
            "avgpool2d(1,1,1)",
            14,
            "padding of avgpool2d must be at most half the kernel size 1, found 1",
        ),
        (
            "relu,linear(4294967296,4294967296)",
            5,
            "linear has too many parameters to count",
        ),
        (
            "conv2d(65536,65536,k=65536)",
            0,
            "conv2d has too many parameters to count",
        ),
        (
            "linear(4294967295,4294967295),linear(4294967295,4294967295)",
            30,
            "the model has too many parameters to count",
        ),
    ] {
        let e = error(spec);
        let expected = if message.starts_with("expected") {
            assert!(matches!(e, SpecError::Syntax { .. }), "{spec}: {e:?}");
            format!("model spec: at position {position}: {message}")
        } else {
            assert!(matches!(e, SpecError::InvalidArgument { .. }), "{spec}: {e:?}");
            format!("model spec: at position {position}: {message}")
        };
        assert_error(spec, position, &expected);
    }
}

/// A small deterministic generator (SplitMix64) for the randomized tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Checks the properties every parse result must have.
fn check_any(input: &str, rng: &mut Rng) {
    match ModelSpec::parse(input) {
        Ok(spec) => {
            let text = spec.to_string();
            let again =
                ModelSpec::parse(&text).unwrap_or_else(|e| panic!("{input:?} -> {text:?}: {e}"));
            assert_eq!(again, spec, "{input:?}");
            assert_eq!(again.to_string(), text);
            let count = input.chars().count();
            for layer in spec.layers() {
                assert!(layer.position + layer.text.chars().count() <= count);
                let at: String = input
                    .chars()
                    .skip(layer.position)
                    .take(layer.text.chars().count())
                    .collect();
                assert_eq!(at, layer.text);
            }
            let _ = spec.parameters();
            let _ = spec.buffers();
            let _ = spec.input_shape_hint();
            for _ in 0..4 {
                let rank = rng.below(5);
                let shape: Vec<usize> = (0..rank)
                    .map(|_| *rng.pick(&[0, 1, 2, 3, 7, 28, 784, usize::MAX]))
                    .collect();
                if let Err(e) = spec.output_shapes(&shape) {
                    let message = e.to_string();
                    assert!(message.starts_with("model spec: layer "), "{message}");
                    assert!(!message.contains('\n'), "{message}");
                }
            }
            if let Some(hint) = spec.input_shape_hint() {
                let _ = spec.output_shapes(&hint);
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("model spec: "), "{message}");
            assert!(
                !message.contains(['\n', '\r']),
                "{input:?} gave a message over several lines: {message}"
            );
            assert!(
                e.position() <= input.chars().count(),
                "{input:?}: {message}"
            );
        }
    }
}

const FRAGMENTS: &[&str] = &[
    "linear",
    "conv2d",
    "maxpool2d",
    "avgpool2d",
    "adaptiveavgpool2d",
    "flatten",
    "relu",
    "sigmoid",
    "tanh",
    "leakyrelu",
    "elu",
    "selu",
    "softplus",
    "gelu",
    "identity",
    "dropout",
    "batchnorm1d",
    "batchnorm2d",
    "layernorm",
    "residual",
    "|",
    "groups",
    "(",
    ")",
    ",",
    "=",
    " ",
    "\t",
    "\n",
    "k",
    "s",
    "p",
    "d",
    "bias",
    "true",
    "false",
    "in",
    "out",
    "0",
    "1",
    "2",
    "3",
    "28",
    "784",
    "0.5",
    "-1",
    "1e-3",
    "1e400",
    ".",
    "+",
    "-",
    "e",
    "99999999999999999999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "é",
    "ℓ",
    "\u{0}",
    "\u{202e}",
    "🦀",
    "\u{2028}",
    "\u{a0}",
    "_",
    "x",
    ";",
];

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng(0x5eed);
    for _ in 0..20_000 {
        let len = rng.below(12);
        let input: String = (0..len).map(|_| *rng.pick(FRAGMENTS)).collect();
        check_any(&input, &mut rng);
    }
    for _ in 0..5_000 {
        let len = rng.below(40);
        let input: String = (0..len)
            .map(|_| char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('?'))
            .collect();
        check_any(&input, &mut rng);
        let ascii: String = (0..len).map(|_| char::from(rng.below(128) as u8)).collect();
        check_any(&ascii, &mut rng);
    }
}

/// A random valid layer, written with random but legal spelling; inside
/// `depth` residual blocks, which may nest two deep.
fn random_layer(rng: &mut Rng, depth: usize) -> String {
    let size = |rng: &mut Rng| 1 + rng.below(40);
    let space = |rng: &mut Rng| (*rng.pick(&["", "", " ", "\t", "\n "])).to_owned();
    let w = space(rng);
    match rng.below(if depth < 2 { 14 } else { 13 }) {
        0 => format!(
            "linear({w}{},{}{w}{})",
            size(rng),
            size(rng),
            rng.pick(&["", ",bias=false", ",bias=true", ",False"])
        ),
        1 => {
            let k = size(rng);
            let mut s = format!("conv2d({},{w}{},k={k}", size(rng), size(rng));
            if rng.below(2) == 0 {
                s += &format!(",s={}", size(rng));
            }
            if rng.below(2) == 0 {
                s += &format!(",{w}p{w}={w}{}", rng.below(4));
            }
            if rng.below(2) == 0 {
                s += &format!(",d={}", size(rng));
            }
            if rng.below(2) == 0 {
                s += ",groups=1";
            }
            s + *rng.pick(&["", ",bias=false"]) + ")"
        }
        2 | 3 => {
            let k = size(rng);
            format!(
                "{}({k},s={},p={})",
                rng.pick(&["maxpool2d", "avgpool2d"]),
                size(rng),
                rng.below(k / 2 + 1)
            )
        }
        4 => format!(
            "leakyrelu({})",
            rng.pick(&["0.01", "-2.5", "1e-7", "3E20", "0"])
        ),
        5 => format!("elu{}", rng.pick(&["", "(2)", "(0.25)"])),
        6 => format!("dropout{}", rng.pick(&["", "(0)", "(0.1)", "(p=.9)"])),
        7 => format!("batchnorm1d({})", size(rng)),
        8 => format!("batchnorm2d({w}{})", size(rng)),
        9 => format!("layernorm(n={})", size(rng)),
        12 => format!("adaptiveavgpool2d({w}{})", size(rng)),
        13 => {
            let mut branches = vec![random_layers(rng, depth + 1)];
            if rng.below(2) == 0 {
                branches.push(random_layers(rng, depth + 1));
            }
            format!("residual({w}{}{w})", branches.join(&format!("{w}|{w}")))
        }
        _ => (*rng.pick(&[
            "flatten", "relu", "sigmoid", "tanh", "selu", "softplus", "gelu", "identity", "ReLU()",
        ]))
        .to_owned(),
    }
}

/// One to three random layers inside `depth` residual blocks.
fn random_layers(rng: &mut Rng, depth: usize) -> String {
    let count = 1 + rng.below(3);
    let layers: Vec<String> = (0..count).map(|_| random_layer(rng, depth)).collect();
    layers.join(",")
}

#[test]
fn random_valid_specs_round_trip_and_mutations_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..3_000 {
        let count = 1 + rng.below(6);
        let spec: Vec<String> = (0..count).map(|_| random_layer(&mut rng, 0)).collect();
        let spec = spec.join(*rng.pick(&[",", " , ", ",\n"]));
        let parsed = ModelSpec::parse(&spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        assert_eq!(parsed.layers().len(), count);
        check_any(&spec, &mut rng);

        // Mutate: delete, insert or replace a few characters.
        let mut chars: Vec<char> = spec.chars().collect();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(chars.len() + 1);
            match rng.below(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => chars.insert(
                    at,
                    *rng.pick(&['(', ')', ',', '=', '0', '9', '.', 'x', ' ', 'é', '-']),
                ),
                _ if at < chars.len() => {
                    chars[at] = *rng.pick(&['(', ')', ',', '=', '0', 'k', '\n'])
                }
                _ => {}
            }
        }
        let mutated: String = chars.into_iter().collect();
        check_any(&mutated, &mut rng);
    }
}

#[test]
fn huge_inputs_never_panic() {
    let mut rng = Rng(7);
    let long = "relu,".repeat(10_000) + "linear(3,4)";
    check_any(&long, &mut rng);
    let nested = "(".repeat(10_000);
    check_any(&nested, &mut rng);
    check_any(&"residual(".repeat(10_000), &mut rng);
    check_any(
        &("residual(relu|".repeat(10_000) + &")".repeat(10_000)),
        &mut rng,
    );
    let digits = format!("linear({},1)", "9".repeat(10_000));
    check_any(&digits, &mut rng);
    let real = format!("leakyrelu(0.{}1)", "0".repeat(10_000));
    assert_eq!(layer(&real), Layer::LeakyRelu { slope: 0.0 });
    check_any(&format!("dropout({}e-10000)", "1".repeat(5000)), &mut rng);
    check_any(&format!("dropout(1e{})", "9".repeat(5000)), &mut rng);
}

#[test]
fn grouped_convolutions() {
    let grouped = |groups| Layer::Conv2d {
        in_channels: 4,
        out_channels: 8,
        kernel: 3,
        stride: 1,
        padding: 0,
        dilation: 1,
        groups,
        bias: true,
    };
    assert_eq!(layer("conv2d(4,8,k=3,groups=2)"), grouped(2));
    assert_eq!(layer("conv2d(4,8,3,1,0,1,4)"), grouped(4));
    assert_eq!(layer("conv2d(4,8,k=3,groups=1)"), grouped(1));
    assert_eq!(
        layer("conv2d(4,8,k=3,groups=2)").to_string(),
        "conv2d(4,8,k=3,groups=2)"
    );
    let spec = ModelSpec::parse("conv2d(4,8,k=3,groups=2,bias=false)").unwrap();
    assert_eq!(
        names_and_shapes(spec.parameters()),
        named(&[("0.weight", &[8, 2, 3, 3])])
    );
    assert_eq!(spec.num_parameters(), 8 * 2 * 9);
    assert_eq!(spec.output_shapes(&[4, 5, 5]).unwrap(), [vec![8, 3, 3]]);
    for (spec, position, message) in [
        (
            "conv2d(4,8,k=3,groups=3)",
            22,
            "groups of conv2d must divide in_channels 4 and out_channels 8, found 3",
        ),
        (
            "conv2d(4,6,k=3,groups=4)",
            22,
            "groups of conv2d must divide in_channels 4 and out_channels 6, found 4",
        ),
        (
            "conv2d(4,8,k=3,groups=0)",
            22,
            "groups of conv2d must be at least 1, found 0",
        ),
    ] {
        assert_error(
            spec,
            position,
            &format!("model spec: at position {position}: {message}"),
        );
    }
}

#[test]
fn adaptive_average_pooling() {
    assert_eq!(
        layer("adaptiveavgpool2d(1)"),
        Layer::AdaptiveAvgPool2d { size: 1 }
    );
    assert_eq!(
        layer("AdaptiveAvgPool2d(output_size=7)"),
        Layer::AdaptiveAvgPool2d { size: 7 }
    );
    assert_eq!(
        layer("adaptiveavgpool2d(3)").to_string(),
        "adaptiveavgpool2d(3)"
    );
    assert!(!layer("adaptiveavgpool2d(3)").has_parameters());
    for input in [[16, 1, 1], [16, 7, 5], [16, 32, 32]] {
        assert_eq!(
            shape_after("adaptiveavgpool2d(2)", &input),
            Ok(vec![16, 2, 2])
        );
    }
    assert_eq!(
        shape_after("adaptiveavgpool2d(2)", &[16, 0, 3]),
        Err("model spec: layer 0 `adaptiveavgpool2d(2)` at position 0 expects a [C, H, W] input with H and W at least 1, got shape [16, 0, 3]".to_owned())
    );
    assert_eq!(
        shape_after("adaptiveavgpool2d(2)", &[16, 3]),
        Err("model spec: layer 0 `adaptiveavgpool2d(2)` at position 0 expects a [C, H, W] input with H and W at least 1, got shape [16, 3]".to_owned())
    );
    assert_error(
        "adaptiveavgpool2d(0)",
        18,
        "model spec: at position 18: output_size of adaptiveavgpool2d must be at least 1, found 0",
    );
    assert_error(
        "adaptiveavgpool2d",
        17,
        "model spec: at position 17: expected '(' after adaptiveavgpool2d (usage: adaptiveavgpool2d(S)), found end of input",
    );
}

/// The example of the task: a stem, one block with a projection shortcut, a head.
const RESNET: &str = "conv2d(3,16,k=3,p=1,bias=false),batchnorm2d(16),relu,\
residual(conv2d(16,32,k=3,s=2,p=1,bias=false),batchnorm2d(32),relu,\
conv2d(32,32,k=3,p=1,bias=false),batchnorm2d(32) | conv2d(16,32,k=1,s=2,bias=false),batchnorm2d(32)),\
relu,adaptiveavgpool2d(1),flatten,linear(32,10)";

fn layers_of(spec: &str) -> Vec<Layer> {
    let parsed = ModelSpec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    parsed.layers().iter().map(|l| l.layer.clone()).collect()
}

#[test]
fn residual_blocks_parse() {
    let Layer::Residual { body, shortcut } = layer("residual(linear(4,4),relu)") else {
        panic!("not a residual block");
    };
    assert_eq!(
        body.iter().map(|l| l.layer.clone()).collect::<Vec<_>>(),
        layers_of("linear(4,4),relu")
    );
    assert_eq!((body[1].position, body[1].text.as_str()), (21, "relu"));
    assert_eq!(shortcut, None);
    let projection = layer(" Residual( relu , tanh | linear(4,4) ) ");
    let Layer::Residual { body, shortcut } = &projection else {
        panic!("not a residual block");
    };
    assert_eq!(body.len(), 2);
    assert_eq!(shortcut.as_ref().map(Vec::len), Some(1));
    assert_eq!(projection.to_string(), "residual(relu,tanh|linear(4,4))");
    assert_eq!(projection.name(), "residual");
    assert!(projection.has_parameters());
    assert!(!layer("residual(relu)").has_parameters());
    let spec = ModelSpec::parse(RESNET).unwrap();
    assert_eq!(spec.layers().len(), 8);
    assert_eq!(spec.layers()[3].position, 53);
    assert!(spec.layers()[3].text.starts_with("residual(conv2d(16,32"));
    assert!(spec.layers()[3].text.ends_with("batchnorm2d(32))"));
    // Where a block's layers were written does not make it another block.
    assert_eq!(
        ModelSpec::parse("residual( relu )").unwrap(),
        ModelSpec::parse("residual(relu)").unwrap()
    );
    assert_ne!(
        ModelSpec::parse("residual(relu|relu)").unwrap(),
        ModelSpec::parse("residual(relu,relu)").unwrap()
    );
}

#[test]
fn nested_residual_blocks() {
    let spec = ModelSpec::parse(
        "residual(linear(4,4),residual(layernorm(4),linear(4,4)|linear(4,4,bias=false)))",
    )
    .unwrap();
    assert_eq!(
        spec.to_string(),
        "residual(linear(4,4),residual(layernorm(4),linear(4,4)|linear(4,4,bias=false)))"
    );
    assert_eq!(
        names_and_shapes(spec.parameters()),
        named(&[
            ("0.body.0.weight", &[4, 4]),
            ("0.body.0.bias", &[4]),
            ("0.body.1.body.0.weight", &[4]),
            ("0.body.1.body.0.bias", &[4]),
            ("0.body.1.body.1.weight", &[4, 4]),
            ("0.body.1.body.1.bias", &[4]),
            ("0.body.1.shortcut.0.weight", &[4, 4]),
        ])
    );
    assert!(spec.parameters().iter().all(|p| p.layer == 0));
    assert_eq!(spec.num_parameters(), 20 + 8 + 20 + 16);
    assert_eq!(spec.output_shapes(&[4]).unwrap(), [vec![4]]);
    assert_eq!(spec.input_shape_hint(), Some(vec![4]));
    assert_eq!(
        ModelSpec::parse("relu,residual(relu|flatten),linear(3,2)")
            .unwrap()
            .input_shape_hint(),
        Some(vec![3])
    );
    assert_eq!(
        ModelSpec::parse("residual(relu|conv2d(1,1,k=1))")
            .unwrap()
            .input_shape_hint(),
        None
    );
}

#[test]
fn residual_state_dict_names_follow_pytorch() {
    let spec = ModelSpec::parse(RESNET).unwrap();
    assert_eq!(
        names_and_shapes(spec.parameters()),
        named(&[
            ("0.weight", &[16, 3, 3, 3]),
            ("1.weight", &[16]),
            ("1.bias", &[16]),
            ("3.body.0.weight", &[32, 16, 3, 3]),
            ("3.body.1.weight", &[32]),
            ("3.body.1.bias", &[32]),
            ("3.body.3.weight", &[32, 32, 3, 3]),
            ("3.body.4.weight", &[32]),
            ("3.body.4.bias", &[32]),
            ("3.shortcut.0.weight", &[32, 16, 1, 1]),
            ("3.shortcut.1.weight", &[32]),
            ("3.shortcut.1.bias", &[32]),
            ("7.weight", &[10, 32]),
            ("7.bias", &[10]),
        ])
    );
    let buffers: Vec<String> = spec.buffers().into_iter().map(|b| b.name).collect();
    assert_eq!(
        buffers,
        [
            "1.running_mean",
            "1.running_var",
            "3.body.1.running_mean",
            "3.body.1.running_var",
            "3.body.4.running_mean",
            "3.body.4.running_var",
            "3.shortcut.1.running_mean",
            "3.shortcut.1.running_var",
        ]
    );
    let layers: Vec<usize> = spec.parameters().iter().map(|p| p.layer).collect();
    assert_eq!(layers, [0, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 7, 7]);
    assert!(spec.is_ignored_state_entry("3.body.1.num_batches_tracked"));
    assert!(spec.is_ignored_state_entry("3.shortcut.1.num_batches_tracked"));
    assert!(!spec.is_ignored_state_entry("3.body.0.num_batches_tracked"));
    assert!(!spec.is_ignored_state_entry("3.num_batches_tracked"));
    let total: usize = spec.parameters().iter().map(ParamInfo::numel).sum();
    assert_eq!(spec.num_parameters(), total);
    assert_eq!(
        spec.output_shapes(&[3, 32, 32]).unwrap(),
        [
            vec![16, 32, 32],
            vec![16, 32, 32],
            vec![16, 32, 32],
            vec![32, 16, 16],
            vec![32, 16, 16],
            vec![32, 1, 1],
            vec![32],
            vec![10]
        ]
    );
}

#[test]
fn residual_shape_errors_name_the_block_and_both_shapes() {
    let spec = ModelSpec::parse("relu,residual(linear(4,8))").unwrap();
    assert_eq!(
        spec.output_shapes(&[4]).unwrap_err().to_string(),
        "model spec: layer 1 `residual(linear(4,8))` at position 5 gives a body output of shape [8], \
         which cannot be added to its input of shape [4]"
    );
    let spec = ModelSpec::parse("residual(linear(4,8)|linear(4,6))").unwrap();
    let e = spec.output_shapes(&[4]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "model spec: layer 0 `residual(linear(4,8)|linear(4,6))` at position 0 gives a body output \
         of shape [8], which cannot be added to its shortcut's output of shape [6]"
    );
    assert_eq!(e.position(), 0);
    // A layer inside a block is named by its path, as its parameters are.
    let spec = ModelSpec::parse("relu,residual(relu|residual(linear(4,4)),linear(5,4))").unwrap();
    let e = spec.output_shapes(&[4]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "model spec: layer 1.shortcut.1 `linear(5,4)` at position 41 expects 5 input features, got 4"
    );
    assert_eq!(e.position(), 41);
    let spec = ModelSpec::parse("residual(conv2d(3,3,k=1)|relu)").unwrap();
    assert_eq!(
        spec.output_shapes(&[3]).unwrap_err().to_string(),
        "model spec: layer 0.body.0 `conv2d(3,3,k=1)` at position 9 expects a [C, H, W] input, got shape [3]"
    );
}

#[test]
fn residual_syntax_errors() {
    for (spec, position, message) in [
        (
            "relu|relu",
            4,
            "expected ',' or the end of the spec after relu, found '|'",
        ),
        (
            "residual(relu|relu|relu)",
            18,
            "expected ',' or ')' after relu, found '|'",
        ),
        (
            "residual(relu",
            13,
            "expected ',', '|' or ')' after relu, found end of input",
        ),
        (
            "residual(elu|relu",
            17,
            "expected ',' or ')' after relu, found end of input",
        ),
        (
            "residual(elu x)",
            13,
            "expected '(', ',', '|' or ')' after elu, found 'x'",
        ),
        (
            "residual(relu))",
            14,
            "expected ',' or the end of the spec after residual, found ')'",
        ),
        (
            "residual()",
            9,
            "expected a layer name after 'residual(', found ')'",
        ),
        (
            "residual(relu|)",
            14,
            "expected a layer name after '|', found ')'",
        ),
        (
            "residual(relu,)",
            14,
            "expected a layer name after ',', found ')'",
        ),
        (
            "residual",
            8,
            "expected '(' after residual (usage: residual(BODY[|SHORTCUT])), found end of input",
        ),
        (
            "residual(relu)(2)",
            14,
            "expected ',' or the end of the spec after residual, found '('",
        ),
    ] {
        let e = error(spec);
        assert!(matches!(e, SpecError::Syntax { .. }), "{spec}: {e:?}");
        assert_error(
            spec,
            position,
            &format!("model spec: at position {position}: {message}"),
        );
    }
    assert_error(
        "residual(lineer(2,2))",
        9,
        &format!(
            "model spec: unknown layer 'lineer' at position 9 (expected one of: {})",
            Layer::NAMES.join(", ")
        ),
    );
    assert!(Layer::NAMES.join(", ").ends_with("layernorm, residual"));
    let deep = "residual(".repeat(65) + "relu" + &")".repeat(65);
    assert_error(
        &deep,
        576,
        "model spec: at position 576: residual blocks nest at most 64 deep",
    );
    let deepest = "residual(".repeat(64) + "relu" + &")".repeat(64);
    assert_eq!(ModelSpec::parse(&deepest).unwrap().to_string(), deepest);
    assert_error(
        "residual(conv2d(65536,65536,k=65535,bias=false),conv2d(65536,65536,k=65535,bias=false))",
        0,
        "model spec: at position 0: residual has too many parameters to count",
    );
}
