//! `microscope atlas` (issue 19), through the command line: conv1 and conv2 of `zoo:fashion`
//! (96 units) at 16 steps, as one process, and as three shard processes started at once (one
//! of them killed midway and started again) followed by the merge run. The two sites are the
//! same byte for byte, the merge run computes nothing, and the killed shard loses nothing and
//! recomputes only what was missing. Then, in headless Chromium from file://, a click on a
//! layer in the graph and on a unit in its gallery reach the unit's page, whose tabs work, and
//! every page mounts without errors.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SETTINGS: [&str; 7] = [
    "zoo:fashion",
    "--layers",
    "conv1,conv2",
    "--steps",
    "16",
    "--batch",
    "16",
];

fn atlas(dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_microscope"));
    c.arg("atlas")
        .args(SETTINGS)
        .arg("--out")
        .arg(dir)
        .args(extra)
        // Nothing from the user's technique cache: the atlas computes into its own store.
        .env("MICROSCOPE_CACHE", dir.with_extension("cache"));
    c
}

fn run(mut command: Command) -> String {
    let out: Output = command.output().expect("microscope runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// From the report line `atlas …: B batches (U units); computed C batches (G gallery batches,
/// V unit views), …`: (B, U, C, G, V).
fn report(stdout: &str) -> [usize; 5] {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("atlas ") && l.contains(" computed "))
        .unwrap_or_else(|| panic!("no report line in {stdout}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    // A shard's line starts with its `I/N`.
    let n = numbers.len();
    numbers[n - 6..n - 1].try_into().unwrap()
}

/// Every file under `dir` with its bytes, by relative path; writers' temporary files (a killed
/// process may leave one in the store) are not part of a site.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Units done, as the progress line of `child`'s stderr says, whenever it says so.
fn watch_progress(child: &mut Child) -> std::sync::mpsc::Receiver<usize> {
    let mut stderr = child.stderr.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            // `\ratlas: 3/32 units · …`
            if let Some(done) = text
                .rsplit("atlas: ")
                .next()
                .and_then(|l| l.split('/').next())
                .and_then(|d| d.trim().parse().ok())
            {
                let _ = send.send(done);
            }
        }
    });
    receive
}

#[test]
fn an_atlas_is_the_same_in_one_process_or_in_shards_and_its_links_work() {
    let root = std::env::temp_dir().join(format!("microscope-atlas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (one, sharded) = (root.join("one"), root.join("sharded"));

    let start = Instant::now();
    let stdout = run(atlas(&one, &[]));
    let [batches, units, computed, galleries, views] = report(&stdout);
    assert_eq!((units, views), (96, 96), "{stdout}");
    assert_eq!((computed, galleries), (batches, batches), "{stdout}");
    println!("one process: {batches} batches in {:.1?}", start.elapsed());

    // Three shards at once; shard 0 is killed after two units and started again.
    let start = Instant::now();
    let mut shards: Vec<Child> = (0..3)
        .map(|i| {
            atlas(&sharded, &["--shard", &format!("{i}/3")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let progress = watch_progress(&mut shards[0]);
    let deadline = Instant::now() + Duration::from_secs(300);
    let done_at_kill = loop {
        match progress.recv_timeout(Duration::from_secs(1)) {
            Ok(done) if done >= 2 => break done,
            _ => assert!(Instant::now() < deadline, "shard 0 makes no progress"),
        }
    };
    shards[0].kill().unwrap();
    shards[0].wait().unwrap();
    let kept = files(&sharded.join("store"));
    let mut shard_units = 0;
    for (i, child) in shards.into_iter().enumerate().skip(1) {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "shard {i}: {stdout}");
        let [b, u, c, _, v] = report(&stdout);
        assert_eq!(
            (c, v),
            (b, u),
            "shard {i} computed all of its share: {stdout}"
        );
        shard_units += u;
    }
    let again = run(atlas(&sharded, &["--shard", "0/3"]));
    let [_, u, _, _, v] = report(&again);
    shard_units += u;
    assert!(
        v + done_at_kill <= u,
        "the restarted shard recomputed what it had stored before it was killed \
         ({done_at_kill} units done then; {v} of {u} unit views computed now): {again}"
    );
    let after = files(&sharded.join("store"));
    for (path, bytes) in &kept {
        assert!(
            after.get(path) == Some(bytes),
            "{} was lost",
            path.display()
        );
    }
    assert_eq!(
        shard_units, 96,
        "the shards' shares do not add up to the atlas"
    );

    let merge = run(atlas(&sharded, &[]));
    let [_, _, computed, _, views] = report(&merge);
    assert_eq!((computed, views), (0, 0), "the merge run computed: {merge}");
    println!(
        "three shards and the merge: {:.1?}; {kept_len} results kept at the kill",
        start.elapsed(),
        kept_len = kept.len()
    );

    let (a, b) = (files(&one), files(&sharded));
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "the two sites hold different files");
    for (path, bytes) in &a {
        assert!(&b[path] == bytes, "{} differs", path.display());
    }
    let pages = a
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "html"));
    assert_eq!(pages.count(), 1 + 2 + 96);
    for path in a
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "html"))
    {
        let html = String::from_utf8_lossy(&a[path]);
        assert!(
            html.contains("id=\"microscope-provenance\""),
            "{}",
            path.display()
        );
        assert!(!html.contains("file://") && !html.contains(&*root.to_string_lossy()));
    }

    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = Command::new("node")
        .arg(browser.join("atlas.mjs"))
        .arg(&one)
        .arg("conv2")
        .arg("5")
        .output()
        .expect("node is installed (tests/run.sh installs it)");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser checks failed");
    let _ = std::fs::remove_dir_all(&root);
}
