//! One memory budget for every size that comes from a file or a caller.
//!
//! Model files, arrays and datasets are untrusted: a shape of `[2^40]` or a pad of `2^40` must be
//! an error naming what asked for it, not an allocation failure that aborts the process (which
//! `catch_unwind` cannot catch, and which in a notebook loses every variable). So each size
//! computed from outside data goes through [`elements`] (checked arithmetic) and [`fits`] (one
//! budget) before anything is allocated for it.
//!
//! The budget is per tensor: half of the machine's memory by default (at least 1 GiB), or
//! `$MICROSCOPE_MEMORY_BUDGET` (bytes, or with a K, M, G or T suffix: `8G`).

use std::sync::OnceLock;

/// The variable that sets the budget.
pub const ENV: &str = "MICROSCOPE_MEMORY_BUDGET";

/// Where the budget came from, and how large it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    /// `MICROSCOPE_MEMORY_BUDGET` set it (rather than the machine's memory).
    pub from_env: bool,
}

/// This process's budget (read once).
pub fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(
        || match std::env::var(ENV).ok().and_then(|v| parse_size(v.trim())) {
            Some(bytes) => Budget {
                bytes,
                from_env: true,
            },
            None => Budget {
                bytes: (machine_memory().unwrap_or(8 << 30) / 2).max(1 << 30),
                from_env: false,
            },
        },
    )
}

impl std::fmt::Display for Budget {
    /// `memory budget 11.7 GiB per tensor (half of this machine's memory; MICROSCOPE_MEMORY_BUDGET sets it)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = if self.from_env {
            format!("from {ENV}")
        } else {
            format!("half of this machine's memory; {ENV} sets it")
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

/// Physical memory (`MemTotal` in /proc/meminfo).
fn machine_memory() -> Option<u64> {
    meminfo("MemTotal:")
}

/// The memory the system can give now without swapping (`MemAvailable` in /proc/meminfo), where
/// it says.
pub fn available_memory() -> Option<u64> {
    meminfo("MemAvailable:")
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
pub fn elements(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has more elements than can be addressed"))
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
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999T"), None, "overflow");
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
