//! The compute device a network runs on, picked at run time (no backend generics in user code).

use std::sync::OnceLock;

use burn::DispatchDevice;

use crate::error::{Error, Result};

/// A CPU (burn-flex) or CUDA device. Gradient runs use [`Device::autodiff`] of the same device.
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    inner: DispatchDevice,
}

impl Device {
    /// The CPU backend (burn-flex, multi-threaded).
    pub fn cpu() -> Self {
        Self {
            inner: DispatchDevice::Flex(burn_flex::FlexDevice),
        }
    }

    /// CUDA device `index`; needs a build with the `cuda` feature.
    pub fn cuda(index: usize) -> Result<Self> {
        #[cfg(feature = "cuda")]
        {
            Ok(Self {
                inner: DispatchDevice::Cuda(burn::backend::cuda::CudaDevice::new(index)),
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(Error::Device {
                device: format!("cuda:{index}"),
                message: "this build has no CUDA support; rebuild with `--features cuda`".into(),
            })
        }
    }

    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(spec: &str) -> Result<Self> {
        match spec {
            "cpu" => Ok(Self::cpu()),
            "cuda" => Self::cuda(0),
            s => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Self::cuda(n),
                None => Err(Error::Device {
                    device: spec.into(),
                    message: "expected cpu, cuda or cuda:N".into(),
                }),
            },
        }
    }

    /// `cpu` or `cuda`: part of cache keys and reports.
    pub fn kind(&self) -> &'static str {
        Self::kind_of(&self.inner)
    }

    /// `cpu` or `cuda` for a burn device (where a tensor lives).
    pub fn kind_of(device: &DispatchDevice) -> &'static str {
        match device {
            #[cfg(feature = "cuda")]
            DispatchDevice::Cuda(_) => "cuda",
            _ => "cpu",
        }
    }

    /// The plain (inference) burn device.
    pub fn burn(&self) -> &DispatchDevice {
        &self.inner
    }

    /// Bytes free on a GPU, as its driver counts them, after burn's memory pools have given back
    /// the memory no tensor uses (otherwise what a finished render left in the pools would count
    /// as taken); `None` on the CPU, or where the driver does not say.
    pub fn free_memory(&self) -> Option<u64> {
        match &self.inner {
            #[cfg(feature = "cuda")]
            DispatchDevice::Cuda(d) => {
                // burn-dispatch 0.21 does not pass `memory_cleanup` on: call burn-cuda's own.
                <burn::backend::Cuda as burn::tensor::backend::Backend>::memory_cleanup(d);
                // Retains the device's primary context, the one burn-cuda computes in (so the
                // figure is that context's view), and binds it to this thread.
                let context = cudarc::driver::CudaContext::new(d.index).ok()?;
                let (free, _total) = context.mem_get_info().ok()?;
                Some(free as u64)
            }
            _ => None,
        }
    }

    /// The same device with gradient tracking, for optimizing inputs.
    pub fn autodiff(&self) -> DispatchDevice {
        DispatchDevice::autodiff(self.inner.clone())
    }
}

impl Default for Device {
    fn default() -> Self {
        Self::cpu()
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            #[cfg(feature = "cuda")]
            DispatchDevice::Cuda(d) => write!(f, "cuda:{}", d.index),
            _ => f.write_str("cpu"),
        }
    }
}

/// Whether a burn device is the CPU backend (with or without gradient tracking): where our own
/// CPU kernels may stand in for burn-flex's.
pub(crate) fn is_cpu(device: &DispatchDevice) -> bool {
    match device {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Runs `f` on a thread of a CPU thread pool of microscope's, lent to this computation alone,
/// when `device` computes on the CPU, and right here otherwise.
///
/// burn-flex's kernels split their work over the rayon pool of the thread that calls them. Called
/// from outside any pool (a notebook cell, the CLI, a test), each kernel hands all of its work to
/// the global pool's threads while the calling thread sleeps, and a gradient step runs hundreds of
/// kernels, each paying that hand-over. Called from a thread of the pool, the caller takes its own
/// share and the rest goes to idle siblings. Measured on 2 cores, one GoogLeNet
/// feature-visualization step (benches/feature_vis_step.rs): 225 ms outside, 176 ms inside.
/// Calls nest: from inside one of these pools, `f` runs directly. The caller's cancel scope
/// ([`crate::interrupt::with_cancel`]) holds inside.
///
/// Why a pool per computation rather than one shared pool: burn's autodiff holds a graph's lock
/// for a whole backward pass, and after each pass it locks every live graph in turn. A rayon
/// thread that waits inside a kernel of a backward pass runs whatever work its pool has queued;
/// in a shared pool that can be another computation's gradient step (a second widget, a live
/// request beside a cell, a second render part), whose clean-up then waits for the lock the same
/// thread already holds, and the pool hangs for good (seen in CI). A lent pool holds only this
/// computation's own kernels, which take no locks.
pub(crate) fn on_cpu_pool<R: Send>(device: &DispatchDevice, f: impl FnOnce() -> R + Send) -> R {
    if !is_cpu(device) {
        return f();
    }
    on_lent_pool(default_threads(), f)
}

/// Runs `f` on a pool of `threads` threads lent to it alone (see [`on_cpu_pool`]), or right here
/// on a thread of such a pool already (nested calls stay on their computation's pool).
pub(crate) fn on_lent_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    if IN_LENT_POOL.with(|c| c.get()) {
        return f();
    }
    let Some(pool) = Lent::take(threads) else {
        return f();
    };
    // A widget's cancel flag is thread-local: it goes along.
    let scope = crate::interrupt::scope();
    pool.0
        .as_ref()
        .expect("a lent pool")
        .install(|| crate::interrupt::within(scope, f))
}

/// Runs `f` on each of `items` side by side, each item on a thread of its own with a pool lent to
/// it alone (`threads / items` threads, at least one): see [`on_cpu_pool`] for why items never
/// share a pool. Off the CPU, each item still gets a thread of its own (kernels are queued on the
/// device). The results come back in the items' order.
pub(crate) fn side_by_side<T: Send, R: Send>(
    device: &DispatchDevice,
    items: &mut [T],
    f: impl Fn(&mut T) -> R + Sync,
) -> Vec<R> {
    let cpu = is_cpu(device);
    let threads = (default_threads() / items.len().max(1)).max(1);
    let scope = crate::interrupt::scope();
    let run = |item: &mut T| {
        crate::interrupt::within(scope.clone(), || {
            if cpu {
                on_lent_pool(threads, || f(item))
            } else {
                f(item)
            }
        })
    };
    // Called from a thread of a lent pool (a technique already on one), the first item would run
    // on that pool, with its threads beside the items' own: every item gets a thread instead.
    if cpu && IN_LENT_POOL.with(|c| c.get()) {
        return std::thread::scope(|s| {
            let handles: Vec<_> = items.iter_mut().map(|item| s.spawn(|| run(item))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
    }
    let Some((first, rest)) = items.split_first_mut() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = rest.iter_mut().map(|item| s.spawn(|| run(item))).collect();
        let mut results = vec![run(first)];
        for h in handles {
            // A panic in an item is the caller's panic, as it would be on one thread.
            results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        results
    })
}

thread_local! {
    /// Set on the threads of microscope's lent pools.
    static IN_LENT_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A pool while it is lent; back on the shelf of idle pools when dropped (a few are kept so that
/// a render's steps do not start threads each step).
struct Lent(Option<rayon::ThreadPool>);

static IDLE: std::sync::Mutex<Vec<rayon::ThreadPool>> = std::sync::Mutex::new(Vec::new());
const IDLE_KEPT: usize = 16;

impl Lent {
    fn take(threads: usize) -> Option<Lent> {
        let idle = {
            let mut shelf = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            let found = shelf
                .iter()
                .position(|p| p.current_num_threads() == threads);
            found.map(|i| shelf.swap_remove(i))
        };
        let pool = match idle {
            Some(p) => p,
            None => rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("microscope-cpu-{i}"))
                .start_handler(|_| IN_LENT_POOL.with(|c| c.set(true)))
                .build()
                .ok()?,
        };
        Some(Lent(Some(pool)))
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            let mut shelf = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            if shelf.len() < IDLE_KEPT {
                shelf.push(pool);
            }
        }
    }
}

/// As many threads as rayon's global pool has (RAYON_NUM_THREADS or the cores), read once.
fn default_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
    })
}

/// The threads [`on_cpu_pool`] runs work on when `device` is the CPU; 1 otherwise.
pub(crate) fn cpu_threads(device: &DispatchDevice) -> usize {
    if is_cpu(device) {
        default_threads()
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// The hang `on_cpu_pool` avoids, with a plain lock standing in for autodiff's graph lock:
    /// computation A holds the lock while its thread waits in a `join` whose other half a sibling
    /// thread took; computation B, started meanwhile, needs the lock. In one shared pool A's
    /// waiting thread ran B's job itself and locked its own lock again. With a pool each, B waits
    /// on a thread of its own until A lets go.
    #[test]
    fn a_computation_never_runs_inside_another_ones_lock() {
        if default_threads() < 2 {
            return; // one thread takes no other half: nothing to wait on
        }
        let cpu = Device::cpu();
        let lock = Arc::new(Mutex::new(()));
        let (done, finished) = mpsc::channel();
        let (a_locked, a_has_lock) = mpsc::channel();
        {
            let (lock, done, device) = (lock.clone(), done.clone(), cpu.clone());
            std::thread::spawn(move || {
                on_cpu_pool(device.burn(), || {
                    let _held = lock.lock().unwrap();
                    a_locked.send(()).unwrap();
                    rayon::join(
                        || std::thread::sleep(Duration::from_millis(300)),
                        || std::thread::sleep(Duration::from_millis(600)),
                    );
                });
                done.send("A").unwrap();
            });
        }
        a_has_lock.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        std::thread::spawn(move || {
            on_cpu_pool(cpu.burn(), || drop(lock.lock().unwrap()));
            done.send("B").unwrap();
        });
        for _ in 0..2 {
            finished
                .recv_timeout(Duration::from_secs(20))
                .expect("one computation ran inside the other's lock and hung");
        }
    }

    /// The same for the parts of one computation run side by side: each part has a thread (and
    /// a pool) to itself, so no part can run on a thread that waits inside another one. (Four
    /// parts on a shared pool of two threads ran two by two on the same threads.)
    #[test]
    fn side_by_side_parts_each_have_a_thread_of_their_own() {
        let mut parts = vec![(); 4];
        let threads = side_by_side(Device::cpu().burn(), &mut parts, |_| {
            std::thread::sleep(Duration::from_millis(50));
            std::thread::current().id()
        });
        let distinct: std::collections::HashSet<_> = threads.iter().collect();
        assert_eq!(distinct.len(), parts.len(), "{threads:?}");
    }

    /// Side by side from inside a computation's pool (input attribution's lanes): no part runs
    /// on the caller's pool, whose other threads would run beside the parts' own.
    #[test]
    fn side_by_side_within_a_pool_gives_every_part_a_pool_of_its_own() {
        let cpu = Device::cpu();
        let (caller, parts) = on_lent_pool(2, || {
            let mut parts = vec![(); 2];
            let pools = side_by_side(cpu.burn(), &mut parts, |_| {
                std::thread::sleep(Duration::from_millis(50));
                (std::thread::current().id(), rayon::current_num_threads())
            });
            (std::thread::current().id(), pools)
        });
        let threads: std::collections::HashSet<_> = parts.iter().map(|p| p.0).collect();
        assert_eq!(threads.len(), 2, "{parts:?}");
        assert!(
            !threads.contains(&caller),
            "a part ran on the caller's thread"
        );
        let each = (default_threads() / 2).max(1);
        assert!(parts.iter().all(|p| p.1 == each), "{parts:?}");
    }

    #[test]
    fn side_by_side_keeps_the_order_and_the_cancel_scope() {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut items: Vec<usize> = (0..5).collect();
        let out = crate::interrupt::with_cancel(flag, || {
            side_by_side(Device::cpu().burn(), &mut items, |i| {
                *i *= 10;
                (*i, crate::interrupt::requested())
            })
        });
        assert_eq!(out, (0..5).map(|i| (i * 10, true)).collect::<Vec<_>>());
        assert_eq!(items, vec![0, 10, 20, 30, 40]);
    }
}
