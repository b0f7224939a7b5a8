//! Where a GPU's time goes: while profiling is on ([`CudaBackend::profile_start`]), every
//! kernel launch and cuBLAS/cuBLASLt call is preceded by a timing event on the stream; when it
//! stops ([`CudaBackend::profile_stop`]) the device is waited for and the time between each
//! mark and the next is charged to the mark's kernel, summed by name.
//!
//! The stream runs its work in order, so those spans tile the profiled interval: a kernel's
//! span is its own run time plus any wait for the host to queue the next launch. When the
//! host queues faster than the device runs (large kernels), that wait is nil; when the step
//! is launch-bound, [`GpuProfile::host_ms`] (the time the host spent queueing, taken by the
//! caller) comes close to [`GpuProfile::total_ms`] and the spans say more about launch cost
//! than about the kernels. Copies between host and device are marked too (`copy to device
//! F32`, `copy to host F32`); a copy to the host holds the host until it is done, so the
//! device's idle time until the next launch is in the copy's span. Other stream work (the
//! pool's allocations) is charged to the mark before it, the last span runs to
//! `profile_stop`, and with several host threads queueing on one device at once spans can be
//! charged to the other thread's kernel: profile one thread's work, after a warm-up step.
//! PyTorch's profiler sums kernel durations instead (no idle time), so its total can be the
//! smaller.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;

use super::CudaBackend;
use crate::error::Result;

/// One kernel's (or one GEMM shape's) share of a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// `file/kernel` for our kernels (`binary/add_f32`), `cublas gemm …` or
    /// `cublasLt linear …` with the operand dtype and `m x k x n` for library products.
    pub name: String,
    /// How many times it ran.
    pub calls: usize,
    /// Milliseconds charged to it (see the module documentation).
    pub ms: f64,
}

/// The per-kernel times of one profiled interval, longest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuProfile {
    /// Kernels by total time, longest first.
    pub kernels: Vec<KernelTime>,
    /// The device time from the first mark to the end of the interval.
    pub total_ms: f64,
    /// Milliseconds the host spent queueing the work, when the caller measured it (0 if not).
    pub host_ms: f64,
}

impl GpuProfile {
    /// How many launches (or library calls) named `name` the interval counted, e.g.
    /// `"reduce/nonfinite_multi_f32"` or `"cublas gemm BF16 64x3136x288"`; 0 when none.
    pub fn calls(&self, name: &str) -> usize {
        self.kernels
            .iter()
            .filter(|k| k.name == name)
            .map(|k| k.calls)
            .sum()
    }
}

/// The marks recorded while profiling.
#[derive(Default)]
pub(crate) struct Marks(Vec<(String, CudaEvent)>);

impl CudaBackend {
    /// Starts (or restarts) a profile of this device's work: see [`profile`](self).
    pub fn profile_start(&self) {
        *self.profile.lock().unwrap_or_else(|p| p.into_inner()) = Some(Marks::default());
        self.profiling.store(true, Ordering::Release);
    }

    /// Records a timing mark for `name` on the stream when a profile is running: called just
    /// before each launch and library call.
    pub(crate) fn mark(&self, name: impl FnOnce() -> String) {
        if !self.profiling.load(Ordering::Acquire) {
            return;
        }
        let mut guard = self.profile.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(marks) = guard.as_mut() {
            // A mark that cannot be recorded is dropped: the previous span grows by that much.
            if let Ok(e) = self
                .stream()
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            {
                marks.0.push((name(), e));
            }
        }
    }

    /// Drops the latest mark (a library call that declined and ran nothing).
    pub(crate) fn unmark(&self) {
        if let Some(marks) = self
            .profile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            marks.0.pop();
        }
    }

    /// Stops profiling, waits for the device and returns the per-kernel times (an empty
    /// profile when none was running).
    pub fn profile_stop(&self) -> Result<GpuProfile> {
        self.profiling.store(false, Ordering::Release);
        let Some(marks) = self
            .profile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(GpuProfile::default());
        };
        let end = self
            .stream()
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| self.err("profile", e))?;
        self.synchronize()?;
        let mut by_name: HashMap<&str, (usize, f64)> = HashMap::new();
        let mut total = 0.0;
        for (i, (name, ev)) in marks.0.iter().enumerate() {
            let next = marks.0.get(i + 1).map(|m| &m.1).unwrap_or(&end);
            let ms = ev.elapsed_ms(next).map_err(|e| self.err("profile", e))? as f64;
            let slot = by_name.entry(name).or_insert((0, 0.0));
            slot.0 += 1;
            slot.1 += ms;
            total += ms;
        }
        let mut kernels: Vec<KernelTime> = by_name
            .into_iter()
            .map(|(name, (calls, ms))| KernelTime {
                name: name.to_string(),
                calls,
                ms,
            })
            .collect();
        kernels.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.name.cmp(&b.name)));
        Ok(GpuProfile {
            kernels,
            total_ms: total,
            host_ms: 0.0,
        })
    }
}
