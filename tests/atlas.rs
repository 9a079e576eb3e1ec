//! `microscope atlas` (issue 19), through the command line: conv1 and conv2 of `zoo:fashion`
//! (96 units) at 16 steps, as one process, and as three shard processes started at once (one
//! of them killed midway and started again) followed by the merge run. The two sites are the
//! same byte for byte, the merge run computes nothing, and the killed shard loses nothing and
//! recomputes only what was missing. Then, in headless Chromium from file://, a click on a
//! layer in the graph and on a unit in its gallery reach the unit's page, whose tabs work, and
//! every page mounts without errors. The README's Slurm array script gives the same site on a
//! one-node cluster the test starts, and its Kubernetes manifest asks for as many shards as
//! it runs.

mod support;

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
            // `atlas: 3/32 units · …` lines (every 10 s when stderr is not a terminal)
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
    let root = support::Scratch::new("atlas");
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

    // The README's Slurm array script and merge job, on a one-node cluster.
    let start = Instant::now();
    let slurm = root.join("slurm-site");
    atlas_through_slurm(&root, &slurm);
    let c = files(&slurm);
    assert_eq!(
        names(&a),
        names(&c),
        "the Slurm run's site holds other files"
    );
    for (path, bytes) in &a {
        assert!(&c[path] == bytes, "{} differs after Slurm", path.display());
    }
    println!(
        "the README's Slurm array job and merge: {:.1?}",
        start.elapsed()
    );

    browser_checks(&one, &["conv2", "5"]);
}

/// Unless told which layers, an atlas shows those with units of their own: a Flatten or a Reshape
/// of a layer repeats its units, and a Shape (with what is computed from it alone) has no
/// gradient toward the image to visualize.
#[test]
fn an_atlas_leaves_out_layers_without_units_of_their_own() {
    use support::{model, node, random, value_info};
    let bytes = model(
        vec![
            node("Conv", "conv", &["x", "w", "b"], &["c"], vec![]),
            node("Relu", "relu", &["c"], &["r"], vec![]),
            node("Shape", "shape", &["r"], &["s"], vec![]),
            node("Reshape", "reshape", &["r", "s"], &["r2"], vec![]),
            node("Flatten", "flatten", &["r2"], &["f"], vec![]),
        ],
        vec![
            random("w", &[4, 2, 3, 3], 1, 0.5),
            random("b", &[4], 2, 0.1),
        ],
        value_info("x", &[1, 2, 8, 8]),
        "f",
    );
    let path = std::env::temp_dir().join(format!(
        "microscope-atlas-layers-{}.onnx",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    let m = microscope::Model::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let ops: Vec<String> = microscope::atlas::default_layers(&m)
        .unwrap()
        .iter()
        .map(|name| m.layer(name).unwrap().op)
        .collect();
    assert_eq!(ops, ["Conv", "Relu"]);
    let f = microscope::zoo::fashion().unwrap();
    let fashion: Vec<String> = microscope::atlas::default_layers(&f)
        .unwrap()
        .iter()
        .map(|name| f.layer(name).unwrap().op)
        .collect();
    assert!(!fashion.iter().any(|op| op == "Flatten"), "{fashion:?}");
    assert!(
        fashion.iter().filter(|op| *op == "Conv").count() == 3,
        "{fashion:?}"
    );
}

/// An atlas of a model whose node names are markup and script: every file and folder name is
/// plain (letters, digits, `_`, `-`, `.`), and in Chromium every page mounts with nothing from
/// the names run or turned into elements.
#[test]
fn an_atlas_of_hostile_names_has_plain_file_names_and_runs_no_script() {
    let root = support::Scratch::new("atlas-hostile");
    let model = root.join("hostile.onnx");
    std::fs::write(&model, support::hostile_names_model()).unwrap();
    let site = root.join("site");
    let mut c = Command::new(env!("CARGO_BIN_EXE_microscope"));
    c.arg("atlas")
        .arg(&model)
        .args(["--steps", "2", "--batch", "4", "--out"])
        .arg(&site)
        .env("MICROSCOPE_CACHE", root.join("cache"));
    let stdout = run(c);
    let [_, units, ..] = report(&stdout);
    assert_eq!(units, 16, "four layers of 4 units: {stdout}");
    let all = files(&site);
    for path in all.keys() {
        for part in path.components() {
            let part = part.as_os_str().to_string_lossy();
            assert!(
                part.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
                    && !part.starts_with('.'),
                "{} is not a plain name",
                path.display()
            );
        }
        if path.extension().is_some_and(|e| e == "html") {
            let html = String::from_utf8_lossy(&all[path]);
            for name in support::HOSTILE {
                assert!(
                    !html.contains(name),
                    "{} holds {name:?} as it is",
                    path.display()
                );
            }
        }
    }
    browser_checks(&site, &["--hostile"]);
}

/// A one-node Slurm cluster in a folder of its own (Debian's `slurm-wlm` and `munge`, which
/// tests/run.sh installs): munged, slurmctld and slurmd in the foreground, on free ports, with
/// no cgroups or accounting; stopped when dropped. Jobs run as the test's user, with its
/// environment.
struct Slurm {
    conf: PathBuf,
    daemons: Vec<Child>,
}

impl Slurm {
    fn start(dir: &Path) -> Slurm {
        for tool in [
            "munged",
            "mungekey",
            "slurmctld",
            "slurmd",
            "sbatch",
            "sinfo",
        ] {
            assert!(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("command -v {tool}"))
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{tool} is not installed (tests/run.sh installs Debian's slurm-wlm and munge)"
            );
        }
        std::fs::create_dir_all(dir).unwrap();
        let at = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let host = host.trim().split('.').next().unwrap().to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = dir.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=microscope\n\
                 SlurmctldHost={host}(127.0.0.1)\n\
                 SlurmctldPort={ctld}\n\
                 SlurmdPort={d}\n\
                 SlurmUser=root\n\
                 SlurmdUser=root\n\
                 AuthType=auth/munge\n\
                 AuthInfo=socket={socket}\n\
                 StateSaveLocation={state}\n\
                 SlurmdSpoolDir={spool}\n\
                 SlurmctldPidFile={ctld_pid}\n\
                 SlurmdPidFile={d_pid}\n\
                 SlurmctldLogFile={ctld_log}\n\
                 SlurmdLogFile={d_log}\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 MpiDefault=none\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_CPU\n\
                 ReturnToService=2\n\
                 NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
                 PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
                ctld = port(),
                d = port(),
                socket = at("munge.socket"),
                state = at("state"),
                spool = at("spool"),
                ctld_pid = at("slurmctld.pid"),
                d_pid = at("slurmd.pid"),
                ctld_log = at("slurmctld.log"),
                d_log = at("slurmd.log"),
            ),
        )
        .unwrap();
        let key = at("munge.key");
        let made = Command::new("mungekey")
            .args(["--create", "--keyfile", &key])
            .status()
            .unwrap();
        assert!(made.success(), "mungekey failed");
        let spawn = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .env("SLURM_CONF", &conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program}: {e}"))
        };
        let mut slurm = Slurm {
            conf: conf.clone(),
            daemons: Vec::new(),
        };
        // munged refuses root without --force; -F keeps it in the foreground.
        slurm.daemons.push(spawn(
            "munged",
            &[
                "-F",
                "--force",
                "--key-file",
                &key,
                "--socket",
                &at("munge.socket"),
                "--pid-file",
                &at("munged.pid"),
                "--log-file",
                &at("munged.log"),
                "--seed-file",
                &at("munge.seed"),
            ],
        ));
        let conf_arg = conf.to_string_lossy().into_owned();
        slurm
            .daemons
            .push(spawn("slurmctld", &["-D", "-f", &conf_arg]));
        slurm
            .daemons
            .push(spawn("slurmd", &["-D", "-f", &conf_arg]));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = slurm
                .command("sinfo")
                .args(["-h", "-o", "%T"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&state.stdout).trim() == "idle" {
                break slurm;
            }
            assert!(
                Instant::now() < deadline,
                "the Slurm node is not idle after 60 s: {}; slurmctld.log: {}; slurmd.log: {}",
                String::from_utf8_lossy(&state.stderr),
                std::fs::read_to_string(at("slurmctld.log")).unwrap_or_default(),
                std::fs::read_to_string(at("slurmd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A Slurm client command (sbatch, sinfo) of this cluster.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().rev() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// The README's code block that starts with `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme = readme();
    let start = readme
        .find(&format!("```bash\n{first_line}"))
        .unwrap_or_else(|| panic!("README.md has no bash block starting with {first_line:?}"));
    let body = &readme[start + "```bash\n".len()..];
    body[..body.find("```").unwrap()].to_string()
}

/// Renders SETTINGS' atlas into `out` as the README says to on Slurm: its `atlas.sbatch` as an
/// array job of three tasks, then its merge job, on a one-node cluster started here.
fn atlas_through_slurm(root: &Path, out: &Path) {
    let slurm = Slurm::start(&root.join("slurm"));
    let script = root.join("atlas.sbatch");
    std::fs::write(
        &script,
        readme_block("#!/bin/bash\n#SBATCH --job-name=atlas"),
    )
    .unwrap();
    let submit = readme_block("export MODEL=");
    let merge = submit
        .lines()
        .find_map(|l| l.strip_prefix("sbatch --dependency=afterok:$job --wrap "))
        .expect("the README's merge line")
        .trim_matches('\'')
        .to_string();
    let bin = Path::new(env!("CARGO_BIN_EXE_microscope"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let options = SETTINGS[1..].join(" ");
    let job = |args: &[&str]| {
        let out = slurm
            .command("sbatch")
            .args(["--parsable", "--wait", "--chdir"])
            .arg(root)
            .args(args)
            .env("MODEL", SETTINGS[0])
            .env("OUT", out)
            .env("OPTIONS", &options)
            .env("PATH", &path)
            .env("MICROSCOPE_CACHE", out.with_extension("cache"))
            .output()
            .unwrap();
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let logs: String = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        assert!(
            out.status.success(),
            "sbatch {args:?}: {}; logs: {logs}",
            String::from_utf8_lossy(&out.stderr)
        );
        id
    };
    // The script's own array is 0-7; three tasks here, as `sbatch --array` overrides it.
    let id = job(&[
        "--array=0-2",
        // The script asks for 4 CPUs a task; this node may have fewer.
        "--cpus-per-task=1",
        "--output=atlas-%A-%a.log",
        &script.to_string_lossy(),
    ]);
    job(&[
        &format!("--dependency=afterok:{id}"),
        "--output=merge.log",
        "--wrap",
        &merge,
    ]);
}

/// The README's Indexed Job runs `--shard auto` with `JOB_COMPLETIONS` equal to its
/// `completions` (Kubernetes sets only `JOB_COMPLETION_INDEX`): a mismatch would leave shards
/// undone or make the indices out of range.
#[test]
fn the_kubernetes_manifest_asks_for_as_many_shards_as_it_runs() {
    let readme = readme();
    let start = readme
        .find("```yaml\napiVersion: batch/v1")
        .expect("the manifest");
    let manifest = &readme[start..];
    let manifest = &manifest[..manifest[3..].find("```").unwrap()];
    let field = |name: &str| {
        manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in the manifest"))
            .trim()
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(field("completionMode:"), "Indexed");
    let completions = field("completions:");
    let env = manifest
        .split("- name: JOB_COMPLETIONS")
        .nth(1)
        .expect("JOB_COMPLETIONS in the manifest's env");
    let value = env
        .lines()
        .find_map(|l| l.trim().strip_prefix("value:"))
        .unwrap()
        .trim()
        .trim_matches('"');
    assert_eq!(value, completions);
    let command = manifest.split("command: ").nth(1).unwrap();
    let command: Vec<String> =
        serde_json::from_str(&command[..command.find(']').unwrap() + 1]).unwrap();
    assert!(
        command.ends_with(&["--shard".into(), "auto".into()]),
        "{command:?}"
    );
}

/// tests/browser/atlas.mjs on `site` with `args`, its lines shown; fails the test if it fails.
fn browser_checks(site: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/atlas.mjs");
    let out = Command::new("node")
        .arg(script)
        .arg(site)
        .args(args)
        .output()
        .expect("node is installed (tests/run.sh installs it)");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser checks failed");
}

/// The README's text.
fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}
