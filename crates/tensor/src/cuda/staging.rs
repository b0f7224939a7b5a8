//! Uploads through page-locked staging buffers, so that copying a host tensor to the GPU never
//! waits for the GPU.
//!
//! NVIDIA's "API synchronization behavior" notes say that an asynchronous copy from pageable
//! host memory "might be synchronous with respect to host" and that, where the memory has to be
//! staged, "the driver may synchronize with the stream". Inside a training step that would be a
//! wait for every op queued before the copy: the batch a loader hands over, and the tables the
//! fused optimiser and EMA steps send (GPT-2's Adam table is about 210 KB), would each drain the
//! queue and leave the GPU idle while the host queues what follows. From page-locked memory the
//! copy is truly asynchronous, so every upload is first copied on the host into a page-locked
//! buffer that this module keeps and reuses.
//!
//! A buffer may be written again only once the copy that read it has run: each upload records an
//! event after its copy, and a buffer goes back to the idle list when its event has completed.
//! One stream runs every op of a device, so events complete in the order they were recorded and
//! the in-flight list is retired from its front. Uploads larger than [`LARGEST`], and any that
//! would take the buffers past [`LIMIT`] in all, copy straight from pageable memory (one-off
//! loads such as a whole dataset, where a wait costs nothing).

use std::collections::VecDeque;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream};

use crate::error::Result;

/// The smallest buffer allocated (smaller uploads share its size class).
pub(crate) const SMALLEST: usize = 64 << 10;
/// Uploads above this many bytes copy from pageable memory.
pub(crate) const LARGEST: usize = 64 << 20;
/// Most bytes of page-locked memory held by a device's buffers.
pub(crate) const LIMIT: usize = 256 << 20;

/// A staging buffer as the pool sees it.
pub(crate) trait Staging {
    /// Bytes it holds.
    fn capacity(&self) -> usize;
    /// Whether the copy that last read it has run (always true before its first use).
    fn is_free(&self) -> Result<bool>;
}

/// What [`Pool::take`] decided for one upload.
pub(crate) enum Take<B> {
    /// Stage through this buffer, then hand it back with [`Pool::in_flight`].
    Stage(B),
    /// Copy from pageable memory: the upload is too large, or page-locked memory ran out.
    Pageable,
}

/// The idle and in-flight staging buffers of one device.
pub(crate) struct Pool<B> {
    idle: Vec<B>,
    in_flight: VecDeque<B>,
    held: usize,
    limit: usize,
    /// Set when allocating page-locked memory failed: later uploads do not try again.
    broken: bool,
}

impl<B: Staging> Pool<B> {
    /// An empty pool that holds at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Pool<B> {
        Pool {
            idle: Vec::new(),
            in_flight: VecDeque::new(),
            held: 0,
            limit,
            broken: false,
        }
    }

    /// Bytes of page-locked memory held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Buffers whose copies may still be running.
    #[cfg(test)]
    pub(crate) fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// A buffer for an upload of `n` bytes: the smallest idle one that holds them, else a new
    /// one from `alloc` (its size: `n` rounded up to a power of two, at least [`SMALLEST`]),
    /// else [`Take::Pageable`]. Idle buffers are dropped to make room under the limit; a failed
    /// allocation turns staging off for good (the copies still work, from pageable memory).
    pub(crate) fn take(
        &mut self,
        n: usize,
        alloc: impl FnOnce(usize) -> Result<B>,
    ) -> Result<Take<B>> {
        if n > LARGEST || self.broken {
            return Ok(Take::Pageable);
        }
        while let Some(b) = self.in_flight.front() {
            if !b.is_free()? {
                break;
            }
            let b = self.in_flight.pop_front().expect("front exists");
            self.idle.push(b);
        }
        let best = (self.idle.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= n)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            return Ok(Take::Stage(self.idle.swap_remove(i)));
        }
        let cap = n.next_power_of_two().max(SMALLEST);
        // Room under the limit: the idle buffers are all too small for this upload.
        self.idle.sort_by_key(|b| b.capacity());
        while self.held + cap > self.limit {
            match self.idle.pop() {
                Some(b) => self.held -= b.capacity(),
                None => return Ok(Take::Pageable),
            }
        }
        match alloc(cap) {
            Ok(b) => {
                self.held += b.capacity();
                Ok(Take::Stage(b))
            }
            Err(_) => {
                self.broken = true;
                Ok(Take::Pageable)
            }
        }
    }

    /// Hands back a buffer whose copy has just been queued (and its event recorded).
    pub(crate) fn in_flight(&mut self, b: B) {
        self.in_flight.push_back(b);
    }
}

/// Page-locked host memory and the event recorded after the copy that last read it.
pub(crate) struct Pinned {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
    /// Recorded after the copy that last read the memory; its context is the device's.
    copied: CudaEvent,
}

/// An error of device `ctx` about staging memory.
fn staging_err(ctx: &CudaContext, reason: String) -> crate::Error {
    crate::Error::Cuda {
        device: crate::Device::Cuda(ctx.ordinal()),
        reason,
    }
}

// SAFETY: the memory is owned by this value and only touched through `&mut self` (or by the
// device, for the copy its event tracks); the event is thread-safe.
unsafe impl Send for Pinned {}

impl Pinned {
    /// `cap` bytes of page-locked, write-combined memory (written by the host, read only by the
    /// device's copy engine).
    pub(crate) fn new(ctx: &Arc<CudaContext>, cap: usize) -> Result<Pinned> {
        let e = |e: cudarc::driver::DriverError| {
            staging_err(
                ctx,
                format!("page-locked staging buffer of {cap} bytes: {e:?}"),
            )
        };
        let copied = ctx.new_event(None).map_err(e)?;
        ctx.bind_to_thread().map_err(e)?;
        // SAFETY: a plain allocation; the pointer is freed once, in `drop`.
        let raw =
            unsafe { result::malloc_host(cap, sys::CU_MEMHOSTALLOC_WRITECOMBINED) }.map_err(e)?;
        let ptr = std::ptr::NonNull::new(raw as *mut u8)
            .ok_or_else(|| staging_err(ctx, "cuMemHostAlloc returned a null pointer".into()))?;
        Ok(Pinned { ptr, cap, copied })
    }

    /// Copies `bytes` into this buffer and queues their copy to device address `dst` on
    /// `stream`, then records the event that says when the buffer may be written again.
    ///
    /// # Safety
    /// `dst` must be a live device allocation of at least `bytes.len()` bytes that stays alive
    /// until the copy has run (stream order: freed buffers are reused only by later work), and
    /// this buffer must be free ([`Staging::is_free`]).
    pub(crate) unsafe fn upload(
        &mut self,
        bytes: &[u8],
        dst: sys::CUdeviceptr,
        stream: &Arc<CudaStream>,
    ) -> std::result::Result<(), cudarc::driver::DriverError> {
        assert!(bytes.len() <= self.cap, "staging buffer too small");
        let host = std::slice::from_raw_parts_mut(self.ptr.as_ptr(), bytes.len());
        host.copy_from_slice(bytes);
        result::memcpy_htod_async(dst, &*host, stream.cu_stream())?;
        self.copied.record(stream)
    }
}

impl Staging for Pinned {
    fn capacity(&self) -> usize {
        self.cap
    }

    fn is_free(&self) -> Result<bool> {
        self.copied.try_is_complete().map_err(|e| {
            staging_err(
                self.copied.context(),
                format!("querying a staging copy: {e:?}"),
            )
        })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // The copy that reads the memory must have run before it is freed.
        let _ = self.copied.synchronize();
        let _ = self.copied.context().bind_to_thread();
        // SAFETY: allocated by `cuMemHostAlloc` in `new`, freed once.
        let _ = unsafe { result::free_host(self.ptr.as_ptr() as *mut std::ffi::c_void) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A buffer whose copy finishes when the test says so.
    struct Fake {
        cap: usize,
        done: Rc<Cell<bool>>,
        id: usize,
    }

    impl Staging for Fake {
        fn capacity(&self) -> usize {
            self.cap
        }
        fn is_free(&self) -> Result<bool> {
            Ok(self.done.get())
        }
    }

    struct Maker {
        made: usize,
    }

    impl Maker {
        fn alloc(&mut self) -> impl FnOnce(usize) -> Result<Fake> + '_ {
            move |cap| {
                self.made += 1;
                Ok(Fake {
                    cap,
                    done: Rc::new(Cell::new(true)),
                    id: self.made,
                })
            }
        }
    }

    fn staged(t: Take<Fake>) -> Fake {
        match t {
            Take::Stage(b) => b,
            Take::Pageable => panic!("expected a staging buffer"),
        }
    }

    /// Queues `b`'s copy: not finished until `done` is set.
    fn queue(pool: &mut Pool<Fake>, b: Fake) -> Rc<Cell<bool>> {
        b.done.set(false);
        let done = b.done.clone();
        pool.in_flight(b);
        done
    }

    #[test]
    fn a_buffer_is_not_reused_while_its_copy_may_run() {
        let mut m = Maker { made: 0 };
        let mut pool = Pool::new(LIMIT);
        let a = staged(pool.take(100, m.alloc()).unwrap());
        assert_eq!(a.cap, SMALLEST);
        let a_done = queue(&mut pool, a);
        // The first buffer's copy has not run: a second upload gets a new buffer.
        let b = staged(pool.take(100, m.alloc()).unwrap());
        assert_eq!((b.id, m.made), (2, 2));
        let b_done = queue(&mut pool, b);
        a_done.set(true);
        // Now the first is free again and nothing new is allocated.
        let c = staged(pool.take(100, m.alloc()).unwrap());
        assert_eq!((c.id, m.made), (1, 2));
        let _ = queue(&mut pool, c);
        assert_eq!(pool.in_flight_count(), 2);
        // In order: the second is still running, so a third buffer is made.
        let d = staged(pool.take(100, m.alloc()).unwrap());
        assert_eq!((d.id, m.made), (3, 3));
        b_done.set(true);
    }

    #[test]
    fn the_smallest_idle_buffer_that_fits_is_taken() {
        let mut m = Maker { made: 0 };
        let mut pool = Pool::new(LIMIT);
        let big = staged(pool.take(300_000, m.alloc()).unwrap());
        assert_eq!(big.cap, 512 << 10);
        let small = staged(pool.take(10, m.alloc()).unwrap());
        pool.in_flight(big);
        pool.in_flight(small);
        let x = staged(pool.take(1_000, m.alloc()).unwrap());
        assert_eq!(x.cap, SMALLEST, "the small buffer serves a small upload");
        let y = staged(pool.take(1_000, m.alloc()).unwrap());
        assert_eq!(y.cap, 512 << 10, "then the big one");
        let z = staged(pool.take(300_000, m.alloc()).unwrap());
        assert_eq!((z.id, m.made), (3, 3), "none idle that fits: a new one");
    }

    #[test]
    fn large_uploads_and_a_full_pool_copy_from_pageable_memory() {
        let mut m = Maker { made: 0 };
        let mut pool = Pool::new(4 * SMALLEST);
        assert!(matches!(
            pool.take(LARGEST + 1, m.alloc()).unwrap(),
            Take::Pageable
        ));
        let a = staged(pool.take(2 * SMALLEST, m.alloc()).unwrap());
        let a_done = queue(&mut pool, a);
        let b = staged(pool.take(SMALLEST, m.alloc()).unwrap());
        let b_done = queue(&mut pool, b);
        assert_eq!(pool.held(), 3 * SMALLEST);
        // Both busy and no room for another 2 x SMALLEST: straight from pageable memory.
        assert!(matches!(
            pool.take(2 * SMALLEST, m.alloc()).unwrap(),
            Take::Pageable
        ));
        assert_eq!(m.made, 2);
        // Once they are free, idle buffers too small for an upload are dropped to make room.
        a_done.set(true);
        b_done.set(true);
        let c = staged(pool.take(4 * SMALLEST, m.alloc()).unwrap());
        assert_eq!((c.cap, pool.held()), (4 * SMALLEST, 4 * SMALLEST));
    }

    #[test]
    fn a_failed_allocation_turns_staging_off() {
        let mut pool: Pool<Fake> = Pool::new(LIMIT);
        let failed = pool.take(10, |_| {
            Err(crate::Error::Cuda {
                device: crate::Device::Cuda(0),
                reason: "no page-locked memory".into(),
            })
        });
        assert!(matches!(failed.unwrap(), Take::Pageable));
        let mut m = Maker { made: 0 };
        assert!(matches!(pool.take(10, m.alloc()).unwrap(), Take::Pageable));
        assert_eq!(m.made, 0);
    }
}
