//! Keeping the thread pool awake through a burst of parallel ops.
//!
//! Every CPU op splits its work over the current rayon pool. Between two ops a rayon worker
//! that finds nothing to do goes to sleep after a few microseconds, and the next op has to wake
//! it again. On a virtual machine an idle vCPU is halted and handed back to the host, and
//! waking it can take from tens of microseconds to over a millisecond; meanwhile the calling
//! thread does that op's share alone. A training step runs hundreds of ops, so the cost adds
//! up: on a 2-core VM a 512 × 512 SGEMM called in a loop ran at one thread's speed until the
//! host's halt polling warmed up (docs/performance.md, session 11). OpenMP runtimes (and so
//! PyTorch) avoid this by spinning for a while (200 ms by default) before sleeping.
//!
//! [`hot`] does the same for a closure: it runs the closure on one worker of the current pool
//! while every other worker waits for work by spinning ([`rayon::yield_now`], which runs any
//! job the closure's ops publish) instead of sleeping, until the closure returns. Use it around
//! a training step or a timed loop, not around code that blocks for long (file I/O, waiting on
//! another process): the spinning workers keep their cores busy for as long as it runs, though
//! they yield the core to any other runnable thread.

use crate::autograd::{is_grad_enabled, set_grad_enabled};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Whether this thread is inside [`hot`] (nested calls run their closure directly).
    static IN_HOT: Cell<bool> = const { Cell::new(false) };
}

/// Spins a worker would do between two `sched_yield` calls when it finds no work.
const SPINS_PER_YIELD: u32 = 64;

/// Sets a flag when dropped, so the spinning workers stop even if the closure panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Marks the current thread as inside [`hot`] until dropped.
struct HotMark(bool);

impl HotMark {
    fn enter() -> Self {
        HotMark(IN_HOT.with(|h| h.replace(true)))
    }
}

impl Drop for HotMark {
    fn drop(&mut self) {
        IN_HOT.with(|h| h.set(self.0));
    }
}

/// Runs `f` on a worker of the current rayon pool while the pool's other workers spin for
/// work instead of sleeping (see the module documentation); returns what `f` returns.
///
/// The calling thread waits for `f` (from outside the pool it blocks once, instead of once per
/// op). `f` sees the caller's gradient-recording state ([`crate::no_grad`]). With a one-thread
/// pool, or when already inside `hot`, `f` simply runs. Results are unaffected: ops split their
/// work the same way whichever thread runs each part. A panic in `f` stops the spinning and is
/// propagated.
///
/// ```
/// use selfsup_tensor::{parallel, DType, Tensor};
/// let a = Tensor::ones(&[64, 64], DType::F32);
/// let total = parallel::hot(|| {
///     let mut t = 0.0;
///     for _ in 0..3 {
///         t += a.matmul(&a).unwrap().sum_all().unwrap().item().unwrap();
///     }
///     t
/// });
/// assert_eq!(total, 3.0 * 64.0 * 64.0 * 64.0);
/// ```
pub fn hot<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() <= 1 || IN_HOT.with(|h| h.get()) {
        return f();
    }
    let grad = is_grad_enabled();
    let stop = AtomicBool::new(false);
    rayon::scope(|s| {
        // This closure runs on a worker; its index tells the spinners which one to leave alone.
        let owner = rayon::current_thread_index();
        let stop = &stop;
        s.spawn_broadcast(move |_, ctx| {
            if Some(ctx.index()) == owner {
                return;
            }
            let _mark = HotMark::enter();
            let mut idle = 0u32;
            while !stop.load(Ordering::Acquire) {
                match rayon::yield_now() {
                    Some(rayon::Yield::Executed) => idle = 0,
                    _ => {
                        idle = idle.wrapping_add(1);
                        if idle.is_multiple_of(SPINS_PER_YIELD) {
                            // Let any other runnable thread on this core (a data loader) go first.
                            std::thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                }
            }
        });
        let _stop = StopOnDrop(stop);
        let _mark = HotMark::enter();
        let _grad = set_grad_enabled(grad);
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Generator, Tensor};

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("test pool")
    }

    #[test]
    fn results_match_the_plain_call_and_nesting_is_allowed() {
        let mut g = Generator::new(3);
        let a = Tensor::randn(&[70, 90], 0.0, 1.0, DType::F32, &mut g).unwrap();
        let b = Tensor::randn(&[90, 50], 0.0, 1.0, DType::F32, &mut g).unwrap();
        let plain = pool(3).install(|| a.matmul(&b).unwrap().to_vec::<f32>().unwrap());
        let warm = pool(3).install(|| {
            hot(|| {
                let inner = hot(|| a.matmul(&b).unwrap());
                inner.to_vec::<f32>().unwrap()
            })
        });
        assert_eq!(plain, warm);
    }

    #[test]
    fn the_caller_grad_state_carries_over_and_is_restored() {
        let p = pool(2);
        let seen = p.install(|| {
            let _g = crate::no_grad();
            hot(is_grad_enabled)
        });
        assert!(!seen);
        let seen = hot(is_grad_enabled);
        assert!(seen);
    }

    #[test]
    fn a_panic_stops_the_spinners_and_reaches_the_caller() {
        let p = pool(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.install(|| hot(|| panic!("boom")))
        }));
        assert!(r.is_err());
        // The pool still serves work afterwards (the spinner returned).
        assert_eq!(p.install(|| hot(|| 7)), 7);
    }
}
