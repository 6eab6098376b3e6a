//! Hostile but realistic input, through the binary: one row per way the
//! commands once broke INTERFACES.md's contract (one line, exit status 2,
//! nothing written, inputs intact, the same bytes on every run). Memory cases
//! use declared sizes or `SECONDO_MEMORY_LIMIT`, never real allocations.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::binary::{assert_bad_input, s, secondo, secondo_with, stderr};
use secondo_data::{Dataset, Targets};

/// A scratch directory with data files in it.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// The first `n` digits (pixels in [0, 16]) as a safetensors data file.
    fn digits(&self, name: &str, n: usize) -> PathBuf {
        self.dataset(name, first_digits(n))
    }

    fn dataset(&self, name: &str, data: Dataset) -> PathBuf {
        let path = self.path(name);
        secondo_data::save_safetensors(&data, &path).unwrap();
        path
    }

    /// The names in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.0.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn first_digits(n: usize) -> Dataset {
    secondo_data::digits()
        .select(&(0..n).collect::<Vec<_>>())
        .unwrap()
}

/// `train` for one epoch, unless `args` say otherwise.
fn train(args: &[&str], out: &Path) -> Output {
    let mut all = vec!["train", "--out", s(out)];
    if !args.contains(&"--epochs") {
        all.extend(["--epochs", "1"]);
    }
    all.extend_from_slice(args);
    secondo(&all)
}

/// A small classifier of the digits' 64 pixels into 10 classes.
const MODEL: &str = "linear(64,16),relu,linear(16,10)";

/// `quantities --quantities grad` of [`MODEL`] on `data`.
fn quantities(data: &str, extra: &[&str], out: &Path) -> Output {
    quantities_of(MODEL, "grad", data, extra, out)
}

fn quantities_of(model: &str, list: &str, data: &str, extra: &[&str], out: &Path) -> Output {
    let mut all = vec![
        "quantities",
        "--model",
        model,
        "--data",
        data,
        "--quantities",
        list,
        "--out",
        s(out),
    ];
    all.extend_from_slice(extra);
    secondo(&all)
}

// 1. Memory: refused from the estimate, before the allocation.

#[test]
fn parameters_beyond_memory_are_refused_before_initialisation() {
    let t = Scratch::new();
    let out = t.path("q.safetensors");
    for model in [
        "linear(64,100000000),relu,linear(100000000,10)",
        "linear(64,40000000),relu,linear(40000000,64),relu,linear(64,40000000),relu,linear(40000000,10)",
    ] {
        let o = quantities_of(model, "grad", "digits", &[], &out);
        assert_bad_input(&o, "parameters of --model would need", &out);
    }
}

#[test]
fn training_and_operators_beyond_memory_are_refused_before_the_work() {
    let t = Scratch::new();
    let out = t.path("w.safetensors");
    let wide = "linear(64,20000),relu,linear(20000,10)";
    let limit = [("SECONDO_MEMORY_LIMIT", "150M")];
    let o = secondo_with(
        &[
            "train",
            "--model",
            wide,
            "--batch",
            "1437",
            "--out",
            s(&out),
        ],
        &limit,
    );
    assert_bad_input(&o, "training with --batch 1437 would need", &out);
    let dir = t.path("spectrum");
    let o = secondo_with(
        &[
            "spectrum",
            "--model",
            wide,
            "--data",
            "digits",
            "--batch",
            "1797",
            "--out",
            s(&dir),
        ],
        &limit,
    );
    assert_bad_input(&o, "the hessian of 1797 samples would need", &dir);
    let o = secondo(&[
        "bench",
        "--only",
        "hvp",
        "--batch",
        "100000000",
        "--no-torch",
    ]);
    assert_bad_input(&o, "--batch 100000000 of 784-value inputs would need", &dir);
}

#[test]
fn readers_check_declared_sizes_before_reading() {
    let t = Scratch::new();
    let out = t.path("q.safetensors");
    for stream in ["/dev/zero", "/dev/urandom"] {
        assert_bad_input(&quantities(stream, &[], &out), stream, &out);
        let o = quantities("digits", &["--weights", stream], &out);
        assert_bad_input(&o, stream, &out);
    }
    // A few bytes of gzip whose IDX header claims 468,750,000 images of 28×28.
    let images = t.path("images.gz");
    let header = [
        &[0u8, 0, 0x08, 3][..],
        &468_750_000u32.to_be_bytes(),
        &28u32.to_be_bytes(),
        &28u32.to_be_bytes(),
    ]
    .concat();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &header).unwrap();
    std::fs::write(&images, gz.finish().unwrap()).unwrap();
    let labels = t.path("labels");
    std::fs::write(&labels, [0u8, 0, 0x08, 1, 0, 0, 0, 1, 0]).unwrap();
    let idx = format!("{},{}", s(&images), s(&labels));
    assert_bad_input(
        &quantities(&idx, &[], &out),
        "of shape [468750000, 28, 28]",
        &out,
    );
}

#[test]
fn weights_and_data_must_be_what_they_claim() {
    let t = Scratch::new();
    let out = t.path("q.safetensors");
    let weights = t.path("w.safetensors");
    assert!(train(&["--model", MODEL], &weights).status.success());
    let mut tensors = secondo_nn::read_safetensors(&weights).unwrap();
    tensors.insert("9.weight".into(), tensors["0.bias"].clone());
    let extra = t.path("extra.safetensors");
    secondo_nn::write_safetensors(
        &extra,
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &Default::default(),
    )
    .unwrap();
    let o = quantities("digits", &["--weights", s(&extra)], &out);
    assert_bad_input(&o, "unexpected tensors '9.weight'", &out);
    let o = quantities_of(
        "linear(64,16,bias=false),relu,linear(16,10)",
        "grad",
        "digits",
        &["--weights", s(&weights)],
        &out,
    );
    assert_bad_input(&o, "unexpected tensors '0.bias'", &out);

    let x = secondo_tensor::Tensor::from_vec(vec![100], vec![0.5f32; 100]).unwrap();
    let y = secondo_tensor::Tensor::from_vec(vec![100], vec![1.0f32; 100]).unwrap();
    let flat = t.path("flat.safetensors");
    secondo_nn::write_safetensors(&flat, [("x", &x), ("y", &y)], &Default::default()).unwrap();
    let o = quantities(s(&flat), &[], &out);
    assert_bad_input(&o, "expected a sample axis and at least one feature", &out);
    assert!(
        stderr(&o).contains("flat.safetensors") && stderr(&o).contains("`x`"),
        "{}",
        stderr(&o)
    );

    let header = br#"{"x":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let twice = t.path("twice.safetensors");
    std::fs::write(
        &twice,
        [&(header.len() as u64).to_le_bytes()[..], header, &[0; 8]].concat(),
    )
    .unwrap();
    assert_bad_input(&quantities(s(&twice), &[], &out), "`y` appears twice", &out);

    let o = quantities_of("linéar(64,10)", "grad", "digits", &[], &out);
    assert_bad_input(&o, "unexpected character 'é'", &out);
}

// 2. Bad input accepted with exit 0.

#[test]
fn training_on_nothing_or_testing_on_nothing_is_refused() {
    let t = Scratch::new();
    let out = t.path("w.safetensors");
    let one = t.digits("one.safetensors", 1);
    let hundred = t.digits("hundred.safetensors", 100);
    let o = train(&["--data", s(&one)], &out);
    assert_bad_input(&o, "leaves none to train on", &out);
    let o = train(&["--data", s(&hundred), "--test-fraction", "0.999"], &out);
    assert_bad_input(
        &o,
        "--test-fraction 0.999 of 100 samples leaves none to train on",
        &out,
    );
    let empty = t.digits("empty.safetensors", 0);
    let o = train(&["--data", s(&hundred), "--test-data", s(&empty)], &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists());
    let o = train(&["--data", s(&empty)], &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn data_that_overflows_the_forward_pass_is_refused() {
    let t = Scratch::new();
    let mut data = first_digits(20);
    data.x[..64].iter_mut().for_each(|v| *v = 3e38);
    let path = t.dataset("huge.safetensors", data);
    let out = t.path("q.safetensors");
    let o = quantities(s(&path), &[], &out);
    assert_bad_input(&o, "overflows", &out);
    let o = train(&["--data", s(&path)], &out);
    assert_bad_input(&o, "before any update: the forward pass overflows", &out);
}

#[test]
fn bench_refuses_rows_and_sizes_it_cannot_time() {
    let nowhere = Path::new("/nonexistent-bench-output");
    for (args, needle) in [
        (&["--only", "nosuchrow"][..], "unknown row 'nosuchrow'"),
        (&["--only", ""], "no row named"),
        (&["--only", ","], "no row named"),
        (&["--batch", "0"], "must be at least 1"),
        (&["--repeats", "0"], "must be at least 1"),
    ] {
        let mut all = vec!["bench", "--no-torch"];
        all.extend_from_slice(args);
        assert_bad_input(&secondo(&all), needle, nowhere);
    }
}

// 3. Inputs destroyed.

#[test]
fn an_output_never_replaces_an_input_or_a_special_file() {
    let t = Scratch::new();
    let data = t.digits("d.safetensors", 50);
    let before = std::fs::read(&data).unwrap();
    let o = quantities(s(&data), &[], &data);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is also the input --data"),
        "{}",
        stderr(&o)
    );
    let o = train(&["--data", s(&data)], &data);
    assert!(
        stderr(&o).contains("is also the input --data"),
        "{}",
        stderr(&o)
    );
    let weights = t.path("w.safetensors");
    let o = train(&["--data", s(&data)], &weights);
    assert!(o.status.success(), "{}", stderr(&o));
    let weights_before = std::fs::read(&weights).unwrap();
    let o = quantities(s(&data), &["--weights", s(&weights)], &weights);
    assert!(
        stderr(&o).contains("is also the input --weights"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&data).unwrap(), before);
    assert_eq!(std::fs::read(&weights).unwrap(), weights_before);
    let o = train(&["--data", s(&data)], Path::new("/dev/null"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    assert!(Path::new("/dev/null")
        .metadata()
        .unwrap()
        .file_type()
        .is_char_device_like());
}

/// `is_char_device` where the platform has it.
trait CharDevice {
    fn is_char_device_like(&self) -> bool;
}

impl CharDevice for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileTypeExt::is_char_device(self)
        }
        #[cfg(not(unix))]
        {
            !self.is_file()
        }
    }
}

// 4. Partial output.

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let t = Scratch::new();
    let dir = t.path("spectrum");
    // Files may hold at most 1 KiB: the density plot cannot be written.
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 1; trap '' XFSZ; exec '{}' spectrum --model 'linear(64,10)' --data digits \
             --top 2 --density --out '{}'",
            env!("CARGO_BIN_EXE_secondo"),
            s(&dir)
        ))
        .output()
        .unwrap();
    assert_bad_input(&o, "File too large", &dir);
    assert!(t.listing().is_empty(), "left: {:?}", t.listing());
}

#[test]
fn a_signal_while_writing_removes_the_staged_output() {
    let t = Scratch::new();
    let out = t.path("q.safetensors");
    // Per-sample gradients of 1797 digits: about 0.5 GB to write.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_secondo"))
        .args([
            "quantities",
            "--model",
            "linear(64,1024),relu,linear(1024,10)",
            "--data",
            "digits",
            "--quantities",
            "batch_grad",
            "--out",
            s(&out),
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let staged = loop {
        if let Some(name) = t.listing().into_iter().find(|n| n.starts_with('.')) {
            break Some(name);
        }
        if child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert!(staged.is_some(), "finished before anything was staged");
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("interrupted by SIGTERM"),
        "{}",
        stderr(&o)
    );
    assert!(t.listing().is_empty(), "left: {:?}", t.listing());
}

// 5. More than one line.

#[test]
fn errors_found_late_are_still_one_line() {
    let t = Scratch::new();
    let out = t.path("w.safetensors");
    for (args, needle) in [
        (&["--optimizer", "sgd", "--lr=-1"][..], "lr"),
        (&["--optimizer", "sgd", "--momentum", "nan"], "momentum"),
    ] {
        assert_bad_input(&train(args, &out), needle, &out);
    }
    let o = train(&[], &t.path("no/such/dir/w.safetensors"));
    assert_bad_input(&o, "does not exist", &out);
    let dir = t.path("s");
    let o = secondo(&[
        "spectrum",
        "--model",
        "linear(64,10)",
        "--data",
        "digits",
        "--top",
        "651",
        "--out",
        s(&dir),
    ]);
    assert_bad_input(&o, "--top 651", &dir);
    let o = secondo(&["quantities", "--model", "linear(64,10)"]);
    assert_bad_input(
        &o,
        "--data <DATA> --quantities <QUANTITIES> --out <OUT>",
        &dir,
    );
}

// 6. Misleading messages.

#[test]
fn messages_name_the_real_place_and_cause() {
    let t = Scratch::new();
    let out = t.path("w.safetensors");
    let mut data = first_digits(100);
    if let Targets::Classes {
        labels,
        num_classes,
    } = &mut data.y
    {
        labels[7] = 10;
        *num_classes = 11;
    }
    let bad_label = t.dataset("labels.safetensors", data);
    let o = train(&["--model", MODEL, "--data", s(&bad_label)], &out);
    assert_bad_input(&o, "label 10 of sample 7 is not one of", &out);
    assert!(stderr(&o).contains("--data "), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("labels.safetensors: label"),
        "{}",
        stderr(&o)
    );

    let o = quantities("/no/such/file.safetensors", &[], &out);
    assert_bad_input(&o, "No such file or directory", &out);
    assert_eq!(
        stderr(&o).matches("No such file").count(),
        1,
        "{}",
        stderr(&o)
    );

    for (data, needle) in [
        ("img,lab,lab", "got 3 names"),
        ("img,", "got 2 names (1 empty)"),
    ] {
        assert_bad_input(&quantities(data, &[], &out), needle, &out);
    }

    let o = train(
        &[
            "--optimizer",
            "sgd",
            "--lr",
            "0.5",
            "--momentum",
            "2",
            "--epochs",
            "20",
        ],
        &out,
    );
    assert_bad_input(&o, "--momentum 2 keeps every past gradient", &out);

    let file = t.digits("file.safetensors", 10);
    let o = train(&[], &file.join("out.safetensors"));
    assert_bad_input(&o, "is not a directory", &out);
}

#[test]
fn spectrum_computes_what_was_asked_on_small_models() {
    let t = Scratch::new();
    let dir = t.path("s");
    // 2-parameter model: --trace alone must not ask for the default top 10.
    let data = Dataset::new(
        (0..20).map(|i| i as f64 / 20.0).collect(),
        vec![1],
        Targets::Values {
            values: (0..20).map(|i| (i % 7) as f64 / 3.0).collect(),
            width: 1,
        },
        "line",
    )
    .unwrap();
    let line = t.dataset("line.safetensors", data);
    let o = secondo(&[
        "spectrum",
        "--model",
        "linear(1,1)",
        "--loss",
        "mse",
        "--data",
        s(&line),
        "--trace",
        "--out",
        s(&dir),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Every eigenvalue of a model with more than 1,000 parameters.
    let o = secondo(&[
        "spectrum",
        "--model",
        "linear(64,16),relu,linear(16,10)",
        "--data",
        "digits",
        "--batch",
        "1797",
        "--top",
        "1210",
        "--out",
        s(&dir),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

// 7. Nondeterministic bytes (across thread counts: tests/determinism.rs).

#[test]
fn the_same_command_writes_the_same_bytes() {
    let t = Scratch::new();
    let runs: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            let out = t.path(&format!("q{i}.safetensors"));
            let o = quantities_of(MODEL, "grad,variance", "digits", &[], &out);
            assert!(o.status.success(), "{}", stderr(&o));
            std::fs::read(out).unwrap()
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
}

// 8. One file-mode policy: the umask's.

#[test]
fn every_command_creates_files_with_the_umask() {
    let t = Scratch::new();
    let bin = env!("CARGO_BIN_EXE_secondo");
    let w = t.path("w.safetensors");
    let q = t.path("q.safetensors");
    let dir = t.path("s");
    let script = format!(
        "umask 027 && '{bin}' train --epochs 1 --out '{w}' && \
         '{bin}' quantities --model 'linear(64,256),relu,linear(256,10)' --weights '{w}' \
         --data digits --quantities grad --out '{q}' && \
         '{bin}' spectrum --model 'linear(64,10)' --data digits --top 2 --out '{dir}'",
        w = s(&w),
        q = s(&q),
        dir = s(&dir)
    );
    let o = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| p.metadata().unwrap().permissions().mode() & 0o777;
        for file in [w, q, dir.join("spectrum.json"), dir.join("spectrum.svg")] {
            assert_eq!(mode(&file), 0o640, "{}", file.display());
        }
        assert_eq!(mode(&dir), 0o750);
    }
}
