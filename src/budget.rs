//! One memory budget for every size that comes from a file or a caller.
//!
//! Model files, arrays and datasets are untrusted: a shape of `[2^40]` or a pad of `2^40` must be
//! an error naming what asked for it, not an allocation failure that aborts the process (which
//! `catch_unwind` cannot catch, and which in a notebook loses every variable). So each size
//! computed from outside data goes through [`elements`] (checked arithmetic) and [`fits`] (one
//! budget) before anything is allocated for it.
//!
//! The budget is per tensor: half of the memory this process may use by default (the machine's,
//! or its cgroup's limit where that is smaller: a container's, a JupyterHub user's), at least
//! 256 MiB, or `$MICROSCOPE_MEMORY_BUDGET` (bytes, or with a K, M, G or T suffix: `8G`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variable that sets the budget.
pub const ENV: &str = "MICROSCOPE_MEMORY_BUDGET";

/// Where the budget came from, and how large it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub source: Source,
}

/// What set the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `MICROSCOPE_MEMORY_BUDGET`.
    Env,
    /// Half of the machine's memory.
    Machine,
    /// Half of the memory limit of this process's cgroup, smaller than the machine's memory.
    Cgroup,
}

/// This process's budget (read once).
pub fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(
        || match std::env::var(ENV).ok().and_then(|v| parse_size(v.trim())) {
            Some(bytes) => Budget {
                bytes,
                source: Source::Env,
            },
            None => {
                let machine = meminfo("MemTotal:").unwrap_or(8 << 30);
                let (memory, source) = match cgroup_limit() {
                    Some(limit) if limit.bytes < machine => (limit.bytes, Source::Cgroup),
                    _ => (machine, Source::Machine),
                };
                Budget {
                    bytes: (memory / 2).max(256 << 20),
                    source,
                }
            }
        },
    )
}

impl std::fmt::Display for Budget {
    /// `memory budget 11.7 GiB per tensor (half of this machine's memory; MICROSCOPE_MEMORY_BUDGET sets it)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            Source::Env => format!("from {ENV}"),
            Source::Machine => format!("half of this machine's memory; {ENV} sets it"),
            Source::Cgroup => format!("half of this process's cgroup memory limit; {ENV} sets it"),
        };
        write!(
            f,
            "memory budget {} per tensor ({source})",
            human(self.bytes)
        )
    }
}

/// `8G`, `512M`, `64K`, `1T` or plain bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, scale) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&text[..i], 1 << 20),
        (i, 'G' | 'g') => (&text[..i], 1 << 30),
        (i, 'T' | 't') => (&text[..i], 1 << 40),
        _ => (text, 1),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(scale)
        .filter(|&b| b > 0)
}

/// The memory the system can give now without swapping, where it says: `MemAvailable` in
/// /proc/meminfo, or less where this process's cgroup has less left under its limit (see
/// [`cgroup_limit`]). Inside a container /proc/meminfo is the host's, and asking for more than
/// the limit leaves gets the process killed.
pub fn available_memory() -> Option<u64> {
    let system = meminfo("MemAvailable:");
    match (system, cgroup_limit()) {
        (Some(system), Some(limit)) => Some(system.min(limit.available)),
        (system, limit) => system.or(limit.map(|l| l.available)),
    }
}

/// The memory limit over this process, from its cgroup: the tightest limit on the way from its
/// own cgroup up to the root, and the least any of them has left to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimit {
    pub bytes: u64,
    /// The limit less the memory in use, not counting the page cache the kernel would drop
    /// first (`inactive_file`).
    pub available: u64,
}

/// This process's [`CgroupLimit`]; `None` where no cgroup on its way to the root has a limit, or
/// where there are no cgroups to read.
pub fn cgroup_limit() -> Option<CgroupLimit> {
    cgroup_limit_under(Path::new("/"))
}

/// [`cgroup_limit`], reading `/proc` and `/sys` under `root` (a test gives a directory of its
/// own).
///
/// Written here rather than taken from sysinfo (`System::cgroup_limits`), which reads only the
/// top of the cgroup file system: that is this process's cgroup inside a cgroup namespace, but
/// not under systemd (JupyterHub's SystemdSpawner sets `MemoryMax` on a unit deeper down) or in
/// a container without its own namespace; and it counts the page cache as taken, which would
/// make a render refuse memory the kernel gives back on demand.
fn cgroup_limit_under(root: &Path) -> Option<CgroupLimit> {
    let under = |path: &str| root.join(path.trim_start_matches('/'));
    let cgroups = std::fs::read_to_string(under("/proc/self/cgroup")).ok()?;
    let mounts = std::fs::read_to_string(under("/proc/self/mountinfo")).ok()?;
    // `ID:CONTROLLERS:PATH`: cgroup v1's memory controller where it is mounted, else the one
    // unified hierarchy of v2 (`0::PATH`).
    let v1 = cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let v2 = cgroups.lines().find_map(|line| line.strip_prefix("0::"));
    let (v1, path) = match (v1, v2) {
        (Some(path), _) => (true, path),
        (None, Some(path)) => (false, path),
        (None, None) => return None,
    };
    // mountinfo: `ID PARENT DEV ROOT MOUNTPOINT OPTIONS… - FSTYPE SOURCE SUPEROPTIONS`.
    let (mount_root, mount_point) = mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        let (fstype, _, options) = (right.next()?, right.next()?, right.next().unwrap_or(""));
        let ours = if v1 {
            fstype == "cgroup" && options.split(',').any(|o| o == "memory")
        } else {
            fstype == "cgroup2"
        };
        let mut left = left.split_whitespace().skip(3);
        ours.then(|| Some((unescape(left.next()?), unescape(left.next()?))))?
    })?;
    // The cgroup's path is from the hierarchy's root; the mount shows it from `mount_root` on.
    // A path outside the mount (another namespace's view) leaves the mount's top to read.
    let relative = Path::new(path)
        .strip_prefix(&mount_root)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![under(&mount_point)];
    for part in relative.components() {
        let next = dirs[dirs.len() - 1].join(part);
        dirs.push(next);
    }
    let number = |dir: &Path, file: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let stat = |dir: &Path, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
    };
    // v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages); v2 writes `max`.
    let limited = |bytes: u64| (bytes < 1 << 60).then_some(bytes);
    let mut found: Option<CgroupLimit> = None;
    for (depth, dir) in dirs.iter().enumerate() {
        let (mut limit, usage, cache) = if v1 {
            (
                number(dir, "memory.limit_in_bytes").and_then(limited),
                number(dir, "memory.usage_in_bytes"),
                stat(dir, "total_inactive_file"),
            )
        } else {
            (
                number(dir, "memory.max").and_then(limited),
                number(dir, "memory.current"),
                stat(dir, "inactive_file"),
            )
        };
        if v1 && depth + 1 == dirs.len() {
            // v1 also says the tightest limit of every ancestor, seen or not.
            if let Some(bytes) = stat(dir, "hierarchical_memory_limit").and_then(limited) {
                limit = Some(limit.map_or(bytes, |l| l.min(bytes)));
            }
        }
        let Some(bytes) = limit else { continue };
        let used = usage.unwrap_or(0).saturating_sub(cache.unwrap_or(0));
        let here = CgroupLimit {
            bytes,
            available: bytes.saturating_sub(used),
        };
        found = Some(match found {
            Some(f) => CgroupLimit {
                bytes: f.bytes.min(here.bytes),
                available: f.available.min(here.available),
            },
            None => here,
        });
    }
    found
}

/// A mountinfo field, whose spaces, tabs, newlines and backslashes are written in octal
/// (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The figure of `key` in /proc/meminfo, in bytes.
fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A size in bytes for people: `1.5 GiB`, `12.0 MiB`, `640 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The number of elements of `shape`, or why it has none that fits in memory's address space.
/// An empty shape counts its other axes too: `[0, 2^40, 2^40]` holds nothing, but the axes'
/// product overflows wherever an op multiplies them (the rows and slices of a gather, the outer
/// and inner sizes of a reduction), so it is refused like a shape that holds too much.
pub fn elements(shape: &[usize]) -> Result<usize, String> {
    let too_many = || format!("shape {shape:?} has more elements than can be addressed");
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d.max(1)))
        .ok_or_else(too_many)?;
    Ok(shape.iter().product())
}

/// The number of elements of `shape`, after checking that `elem_bytes` bytes for each fit the
/// budget. The error says the shape, the size and the budget (the caller adds the file, node or
/// op it belongs to).
pub fn fits(shape: &[usize], elem_bytes: usize) -> Result<usize, String> {
    let n = elements(shape)?;
    let bytes = n
        .checked_mul(elem_bytes)
        .ok_or_else(|| format!("shape {shape:?} has more bytes than can be addressed"))?;
    let budget = budget();
    if bytes as u64 > budget.bytes {
        return Err(format!(
            "shape {shape:?} needs {}, over the {budget}",
            human(bytes as u64)
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_shape_whose_axes_overflow_is_refused() {
        assert_eq!(elements(&[0, 3, 4]), Ok(0));
        assert_eq!(elements(&[2, 3, 4]), Ok(24));
        assert!(elements(&[0, 1 << 40, 1 << 40]).is_err());
        assert!(elements(&[1 << 40, 1 << 40, 0]).is_err());
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999T"), None, "overflow");
    }

    /// A directory standing for `/`, with `files` (path, text) written under it.
    fn fake_root(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("microscope-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_cgroup_v1_limit_deeper_down_is_found_and_the_page_cache_counts_as_free() {
        // As on a machine without cgroup namespaces: the memory controller's own mount, and this
        // process three levels down, with the limit on its parent.
        let root = fake_root(
            "v1",
            &[
                (
                    "proc/self/cgroup",
                    "5:devices:/\n4:memory:/hub/user/alice\n0::/\n",
                ),
                (
                    "proc/self/mountinfo",
                    "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                     35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                     41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
                ),
                (
                    "sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                (
                    "sys/fs/cgroup/memory/hub/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                (
                    "sys/fs/cgroup/memory/hub/user/memory.limit_in_bytes",
                    "4294967296\n",
                ),
                (
                    "sys/fs/cgroup/memory/hub/user/memory.usage_in_bytes",
                    "3221225472\n",
                ),
                (
                    "sys/fs/cgroup/memory/hub/user/memory.stat",
                    "cache 2147483648\ntotal_inactive_file 1073741824\n",
                ),
                (
                    "sys/fs/cgroup/memory/hub/user/alice/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                (
                    "sys/fs/cgroup/memory/hub/user/alice/memory.usage_in_bytes",
                    "1073741824\n",
                ),
                (
                    "sys/fs/cgroup/memory/hub/user/alice/memory.stat",
                    "hierarchical_memory_limit 4294967296\ntotal_inactive_file 0\n",
                ),
            ],
        );
        // 4 GiB, of which 3 are in use and 1 of those is page cache: 2 GiB left.
        assert_eq!(
            cgroup_limit_under(&root),
            Some(CgroupLimit {
                bytes: 4 * GIB,
                available: 2 * GIB
            })
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn cgroup_v2_takes_the_tightest_level_and_max_is_no_limit() {
        // A container's own namespace shows its cgroup as `/`; a systemd unit under it sets a
        // tighter limit than the container.
        let root = fake_root(
            "v2",
            &[
                ("proc/self/cgroup", "0::/jupyter.slice/kernel.scope\n"),
                (
                    "proc/self/mountinfo",
                    "28 22 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
                ),
                ("sys/fs/cgroup/memory.max", "8589934592\n"),
                ("sys/fs/cgroup/memory.current", "1073741824\n"),
                ("sys/fs/cgroup/jupyter.slice/memory.max", "max\n"),
                (
                    "sys/fs/cgroup/jupyter.slice/kernel.scope/memory.max",
                    "2147483648\n",
                ),
                (
                    "sys/fs/cgroup/jupyter.slice/kernel.scope/memory.current",
                    "1610612736\n",
                ),
                (
                    "sys/fs/cgroup/jupyter.slice/kernel.scope/memory.stat",
                    "anon 536870912\nfile 1073741824\ninactive_file 536870912\n",
                ),
            ],
        );
        assert_eq!(
            cgroup_limit_under(&root),
            Some(CgroupLimit {
                bytes: 2 * GIB,
                available: GIB
            })
        );
        // With no limit at any level (`max` everywhere), there is none to report.
        std::fs::write(root.join("sys/fs/cgroup/memory.max"), "max\n").unwrap();
        std::fs::write(
            root.join("sys/fs/cgroup/jupyter.slice/kernel.scope/memory.max"),
            "max\n",
        )
        .unwrap();
        assert_eq!(cgroup_limit_under(&root), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_mount_of_a_subtree_and_escaped_mount_points_are_read() {
        // A container that sees the host's path for its cgroup (`/docker/abc`) with only that
        // subtree mounted, at a mount point with a space in it.
        let root = fake_root(
            "subtree",
            &[
                ("proc/self/cgroup", "0::/docker/abc\n"),
                (
                    "proc/self/mountinfo",
                    "28 22 0:26 /docker/abc /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n",
                ),
                ("sys/fs/cgroup x/memory.max", "1073741824\n"),
                ("sys/fs/cgroup x/memory.current", "0\n"),
            ],
        );
        assert_eq!(
            cgroup_limit_under(&root),
            Some(CgroupLimit {
                bytes: GIB,
                available: GIB
            })
        );
        // No cgroup files at all (not Linux, or /proc not mounted): nothing, not an error.
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(cgroup_limit_under(&root), None);
    }

    #[test]
    fn overflowing_and_oversized_shapes_are_errors_that_say_so() {
        let over = elements(&[1 << 40, 1 << 40, 16]).unwrap_err();
        assert!(over.contains("more elements"), "{over}");
        let big = fits(&[1 << 40], 4).unwrap_err();
        assert!(
            big.contains("4.0 TiB") && big.contains("memory budget"),
            "{big}"
        );
        assert_eq!(fits(&[2, 3, 4], 4), Ok(24));
        assert_eq!(fits(&[0, 1 << 40], 4), Ok(0));
        assert!(human(1536 << 20).starts_with("1.5 GiB"));
    }
}
