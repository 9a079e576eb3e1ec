//! Inside a cgroup's memory limit (a container's, a JupyterHub user's), the memory budget and a
//! render's memory plan go by the limit, not by the machine's memory that /proc/meminfo shows:
//! a render or a dataset scan that would not fit is split into smaller parts or refused, and a
//! DeepDream too large refused, never killed by the cgroup's OOM killer (which in a notebook
//! loses every variable).
//!
//! The test makes a cgroup v1 memory controller's group of its own, which needs root and a
//! writable /sys/fs/cgroup/memory (as on the machines the CI runs on); elsewhere it says it is
//! skipped. The parsing of v1 and v2 hierarchies is tested without them in `budget`'s tests.

mod support;

use std::path::Path;
use std::process::Command;

use microscope::budget::{budget, Source};
use microscope::data::{Dataset, Split};
use microscope::technique::dataset_examples::DatasetExamples;
use microscope::technique::deepdream::DeepDream;
use microscope::technique::render::{render, render_parts, ParamKind, RenderConfig};
use microscope::technique::transform::standard_transforms;
use microscope::technique::Objective;
use microscope::{Device, Model};

/// Set in the child that runs inside the cgroup.
const CHILD: &str = "MICROSCOPE_TEST_CGROUP_CHILD";
const LIMIT: u64 = 600 << 20;
const LAYER: &str = "inception_4a/output";
const SIZE: usize = 224;
/// Fashion-MNIST test images the child scans for dataset examples, at GoogLeNet's 224 px.
const SCANNED: usize = 256;

fn config(batch: usize) -> RenderConfig {
    RenderConfig {
        steps: 2,
        learning_rate: 0.05,
        seed: 0,
        batch,
        size: SIZE,
        param: ParamKind::Fft,
        transforms: standard_transforms(SIZE),
        redirect_steps: 0,
        context: None,
    }
}

fn channels(batch: usize) -> Objective {
    Objective::channels(LAYER, &(0..batch).collect::<Vec<_>>())
}

#[test]
fn a_render_inside_a_cgroup_limit_is_split_or_refused_not_killed() {
    let model = Model::load_on(support::light_model("light_inception_v1"), Device::cpu())
        .unwrap_or_else(|e| panic!("{e}"));
    if std::env::var_os(CHILD).is_some() {
        return inside_the_limit(&model);
    }
    let group =
        Path::new("/sys/fs/cgroup/memory").join(format!("microscope-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&group)
        .and_then(|()| std::fs::write(group.join("memory.limit_in_bytes"), LIMIT.to_string()))
    {
        eprintln!("skipped: no cgroup v1 memory group of our own at {group:?}: {e}");
        let _ = std::fs::remove_dir(&group);
        return;
    }
    // The child reads the dataset from the cache this fills.
    Dataset::fashion_mnist(Split::Test).unwrap();
    // Without the limit, 32 images step in 2 lanes of parts of 8, about 700 MB at once.
    let unlimited = render_parts(&model, &channels(32), &config(32)).unwrap();
    // The child joins the group, then runs this test again.
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" || exit 77; shift && exec "$@""#)
        .arg("sh")
        .arg(&group)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_render_inside_a_cgroup_limit_is_split_or_refused_not_killed",
            "--nocapture",
        ])
        .env(CHILD, unlimited.to_string())
        // The budget it checks is the one the limit sets, not a developer's own.
        .env_remove(microscope::budget::ENV)
        .status()
        .unwrap();
    let _ = std::fs::remove_dir(&group);
    if status.code() == Some(77) {
        eprintln!("skipped: this process may not join {group:?}");
        return;
    }
    assert!(
        status.success(),
        "the render inside a {} MiB cgroup ended with {status} (signal 9 is its OOM killer)",
        LIMIT >> 20
    );
}

/// In the child, inside the group's limit.
fn inside_the_limit(model: &Model) {
    let unlimited: usize = std::env::var(CHILD).unwrap().parse().unwrap();
    assert_eq!(
        budget().source,
        Source::Cgroup,
        "{}: the budget goes by the cgroup's limit",
        budget()
    );
    assert_eq!(budget().bytes, LIMIT / 2, "{}", budget());
    let parts = render_parts(model, &channels(32), &config(32)).unwrap();
    assert!(
        parts > unlimited,
        "in {} MiB, 32 images step in {parts} parts, as many as without a limit",
        LIMIT >> 20
    );
    let rendered = render(model, &channels(32), &config(32), &mut |_| {}, None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rendered.images.dims()[0], 32);
    // 256 images hold more than the limit through a render: an error that says so, before
    // anything is allocated for them.
    let err = render(model, &channels(256), &config(256), &mut |_| {}, None)
        .err()
        .expect("256 images of 224 px do not fit 600 MiB")
        .to_string();
    assert!(
        err.contains("256 images of 224 px") && err.contains("render fewer images at once"),
        "{err}"
    );
    // Dataset examples in one pass of every image (`batch` as large as it goes): in passes
    // that fit.
    let data = Dataset::fashion_mnist(Split::Test).unwrap().take(SCANNED);
    let examples = DatasetExamples {
        k: 3,
        batch: usize::MAX,
        crop: 16,
        scores: false,
    }
    .run(model, &data, LAYER, &[0])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(examples[0].top.len(), 3);
    // DeepDream of an image that alone needs more than the limit: the same kind of error.
    let device = model.network().device().burn().clone();
    let photo = microscope::DynTensor::new(burn::Tensor::<burn::Dispatch, 4>::full(
        [1, 3, 2000, 2000],
        0.5,
        &device,
    ));
    let dream = DeepDream::default()
        .run(model, &photo, LAYER)
        .expect_err("a 2000 px DeepDream of GoogLeNet does not fit 600 MiB")
        .to_string();
    assert!(
        dream.contains("an image of 2000×2000 px") && dream.contains("dream a smaller image"),
        "{dream}"
    );
    println!(
        "in {} MiB: 32 images in {parts} parts ({unlimited} without the limit); 256: {err}",
        LIMIT >> 20
    );
}
