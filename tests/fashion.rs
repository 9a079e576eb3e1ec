//! The built-in model and the datasets: Fashion-MNIST from Debian's `dataset-fashion-mnist`
//! (or `$MICROSCOPE_FASHION_MNIST`), image folders, and `zoo::fashion()`.

use std::path::{Path, PathBuf};
use std::process::Command;

use microscope::data::{Dataset, ImageSpec, Split};
use microscope::zoo::train::{self, TrainConfig};
use microscope::{npy, zoo, Device};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fashion")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn builtin_model_reaches_90_percent_on_the_test_set() {
    let model = zoo::fashion().unwrap();
    let test = Dataset::fashion_mnist(Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    let accuracy = train::accuracy(model.network(), &test, &Device::cpu()).unwrap();
    println!("zoo:fashion test accuracy {:.2}%", accuracy * 100.0);
    assert!(accuracy >= 0.90, "accuracy {accuracy}");
    let names: Vec<&str> = model
        .network()
        .nodes()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    for layer in ["conv1", "conv2", "conv3", "logits"] {
        assert!(names.contains(&layer), "{layer} in {names:?}");
    }
    assert_eq!(model.classes().unwrap()[9], "Ankle boot");
    assert_eq!(model.input_spec().unwrap(), ImageSpec::unit(1, 28, 28));
}

#[test]
fn cli_eval_agrees_with_the_library() {
    let test = Dataset::fashion_mnist(Split::Test).unwrap().take(1000);
    let spec = ImageSpec::unit(1, 28, 28);
    let x = test.batch(0..1000, &spec, Device::cpu().burn()).unwrap();
    let dir = tmp("eval");
    let input = dir.join("test1000.npy");
    npy::write(&input, &x.dims(), &x.to_vec()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_microscope"))
        .args([
            "eval",
            "zoo:fashion",
            "--input",
            input.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logits = npy::read(&dir.join("logits.npy")).unwrap();
    assert_eq!(logits.shape, vec![1000, 10]);
    let cli_correct = logits
        .data
        .chunks(10)
        .zip(test.labels())
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            best == label
        })
        .count();
    let library =
        train::accuracy(zoo::fashion().unwrap().network(), &test, &Device::cpu()).unwrap();
    assert_eq!(
        cli_correct as f32 / 1000.0,
        library,
        "CLI and library disagree"
    );
}

#[test]
fn info_needs_no_dataset() {
    let out = Command::new(env!("CARGO_BIN_EXE_microscope"))
        .args(["info", "zoo:fashion"])
        .env("MICROSCOPE_FASHION_MNIST", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("conv3 ") && l.contains("[1, 64, 7, 7]")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("logits ") && l.contains("[1, 10]")),
        "{text}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_microscope"))
        .args(["info", "zoo:imagenet"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fashion"));
}

#[test]
fn missing_or_corrupt_fashion_mnist_says_how_to_get_it() {
    let empty = tmp("empty");
    let err = Dataset::fashion_mnist_in(&empty, Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dataset-fashion-mnist") && err.contains("MICROSCOPE_FASHION_MNIST"),
        "{err}"
    );
    let corrupt = tmp("corrupt");
    std::fs::write(corrupt.join("t10k-images-idx3-ubyte.gz"), b"not gzip").unwrap();
    std::fs::write(corrupt.join("t10k-labels-idx1-ubyte.gz"), b"not gzip").unwrap();
    let err = Dataset::fashion_mnist_in(&corrupt, Split::Test)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t10k-images-idx3-ubyte.gz") && err.contains("gzip"),
        "{err}"
    );
}

#[test]
fn plain_idx_files_and_the_environment_override() {
    // Ungzipped copies of the test split (and the gzipped train split) in a folder named by the
    // environment variable. Other tests in this binary may then read it too: same data.
    use std::io::Read;
    let dir = tmp("plain");
    let packaged = Path::new(microscope::data::FASHION_MNIST_DIR);
    for f in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        let gz = std::fs::read(packaged.join(format!("{f}.gz"))).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .unwrap();
        std::fs::write(dir.join(f), raw).unwrap();
    }
    for f in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        std::fs::copy(packaged.join(f), dir.join(f)).unwrap();
    }
    let reference = Dataset::fashion_mnist_in(packaged, Split::Test).unwrap();
    std::env::set_var(microscope::data::FASHION_MNIST_ENV, &dir);
    let plain = Dataset::fashion_mnist(Split::Test).unwrap();
    assert_eq!(plain.labels(), reference.labels());
    let spec = ImageSpec::unit(1, 28, 28);
    let device = Device::cpu();
    assert_eq!(
        plain.batch(0..4, &spec, device.burn()).unwrap().to_vec(),
        reference
            .batch(0..4, &spec, device.burn())
            .unwrap()
            .to_vec()
    );
}

#[test]
fn image_folder_is_resized_and_normalized_to_the_model_input() {
    let root = tmp("folder");
    for (class, value) in [("cats", 200u8), ("dogs", 50u8)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..2 {
            let img = image::RgbImage::from_pixel(40 + i, 30, image::Rgb([value, value, value]));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("cats").join("notes.txt"), "ignored").unwrap();
    let data = Dataset::image_folder(&root).unwrap();
    assert_eq!(data.classes(), ["cats", "dogs"]);
    assert_eq!(data.labels(), [0, 0, 1, 1]);
    let spec = ImageSpec {
        channels: 1,
        height: 28,
        width: 28,
        mean: vec![0.5],
        std: vec![0.25],
    };
    let x = data.batch(0..4, &spec, Device::cpu().burn()).unwrap();
    assert_eq!(x.dims(), vec![4, 1, 28, 28]);
    let v = x.to_vec();
    let expect = |byte: f32| (byte / 255.0 - 0.5) / 0.25;
    assert!((v[0] - expect(200.0)).abs() < 1e-3 && (v[3 * 784] - expect(50.0)).abs() < 1e-3);
    // A named pipe among the images is not read (opening it would wait for a writer).
    let piped = tmp("piped-folder");
    std::fs::create_dir_all(piped.join("x")).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
        .save(piped.join("x").join("a.png"))
        .unwrap();
    let pipe = piped.join("x").join("b.png");
    let _ = std::fs::remove_file(&pipe);
    let made = std::process::Command::new("mkfifo").arg(&pipe).status();
    assert!(made.unwrap().success());
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(Dataset::image_folder(&piped).map(|d| d.labels().len()));
    });
    let read = receive.recv_timeout(std::time::Duration::from_secs(60));
    assert_eq!(read.expect("the pipe was opened").unwrap(), 1);

    let bad = tmp("bad-folder");
    std::fs::create_dir_all(bad.join("x")).unwrap();
    std::fs::write(bad.join("x").join("broken.png"), b"not a png").unwrap();
    let err = Dataset::image_folder(&bad).unwrap_err().to_string();
    assert!(err.contains("broken.png"), "{err}");

    // A PNG of a few dozen bytes whose header declares 100000 × 100000 RGB pixels (30 GB): the
    // memory budget refuses it before its pixels are allocated, naming the file.
    let bomb = tmp("bomb-folder");
    std::fs::create_dir_all(bomb.join("x")).unwrap();
    std::fs::write(
        bomb.join("x").join("bomb.png"),
        png_header_only(100_000, 100_000),
    )
    .unwrap();
    let err = Dataset::image_folder(&bomb).unwrap_err().to_string();
    assert!(
        err.contains("bomb.png") && err.contains("memory budget"),
        "{err}"
    );
}

/// A PNG signature, an IHDR chunk (8-bit RGB, `width` × `height`), an IDAT chunk with one row's
/// filter byte (decoders read the header up to the first IDAT), then IEND.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&crc.sum().to_be_bytes());
        c
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &[0]).unwrap();
    png.extend(chunk(b"IDAT", &z.finish().unwrap()));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn training_is_seeded_and_reproducible() {
    let run = |seed| {
        let config = TrainConfig {
            seed,
            max_steps: Some(3),
            ..Default::default()
        };
        train::train_fashion(&config, |_| {}).unwrap().0
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b, "same seed, same weights");
    assert_ne!(a, c, "different seed, different weights");
}
