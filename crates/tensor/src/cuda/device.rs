//! Opening a GPU: the driver, NVRTC, the context and stream, and the plain reason when any of
//! them is missing.
//!
//! Every CUDA library is loaded at run time (cudarc's dynamic loading), so this crate builds and
//! runs on machines without CUDA; [`CudaBackend::get`] is where a missing piece becomes an
//! [`Error::DeviceUnavailable`] that says what to install.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream};

use super::compile;
use crate::error::{Error, Result};
use crate::Device;

/// One opened GPU: its context, the stream every op of this process is queued on, and the
/// kernels loaded so far.
pub struct CudaBackend {
    ordinal: usize,
    name: String,
    capability: (i32, i32),
    multiprocessors: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    blas: OnceLock<std::result::Result<Mutex<super::matmul::BlasHandle>, String>>,
    lt: OnceLock<std::result::Result<Mutex<super::lt::LtState>, String>>,
    pub(crate) profile: Mutex<Option<super::profile::Marks>>,
    /// Page-locked buffers that host tensors are staged through on their way to the device.
    staging: Mutex<super::staging::Pool<super::staging::Pinned>>,
    /// Whether a profile is running (so launches skip the mutex when none is).
    pub(crate) profiling: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaBackend({}: {}, sm_{}{})",
            self.ordinal, self.name, self.capability.0, self.capability.1
        )
    }
}

type Opened = std::result::Result<Arc<CudaBackend>, String>;

/// A kernel file's machine code and whether NVRTC compiled it (else the disk cache held it).
type CubinLookup = Result<(Vec<u8>, bool)>;

fn opened() -> &'static Mutex<HashMap<usize, Opened>> {
    static OPENED: OnceLock<Mutex<HashMap<usize, Opened>>> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Why the driver library cannot be used, or `None` when it can.
fn driver_problem() -> Option<String> {
    // SAFETY: only tries to dlopen the library under its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Some(
            "no NVIDIA driver: libcuda.so could not be loaded (install the NVIDIA driver; \
             the CPU backend works without it)"
                .into(),
        );
    }
    if let Err(e) = cudarc::driver::result::init() {
        return Some(format!(
            "the NVIDIA driver failed to initialise ({e:?}); check `nvidia-smi`"
        ));
    }
    None
}

/// Number of CUDA devices the driver sees, or why there are none to use.
pub fn device_count() -> std::result::Result<usize, String> {
    if let Some(p) = driver_problem() {
        return Err(p);
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err("the NVIDIA driver sees no CUDA device".into()),
        Err(e) => Err(format!("the driver could not count devices ({e:?})")),
    }
}

fn open(ordinal: usize) -> Opened {
    let count = device_count()?;
    if ordinal >= count {
        return Err(format!(
            "there are {count} CUDA device(s), so ordinals run 0..{}",
            count - 1
        ));
    }
    if let Some(p) = compile::nvrtc_problem() {
        return Err(p);
    }
    // Every product and linear layer runs on cuBLAS: a device without it could not train.
    // SAFETY: only tries to dlopen the library under its usual names.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(super::matmul::CUBLAS_MISSING.into());
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| format!("creating a context failed: {e:?}"))?;
    // One stream per device and per process: ops are ordered by it, so cudarc's per-buffer
    // event tracking (made for several streams) is pure overhead here.
    // SAFETY: no other stream of this context touches our buffers.
    unsafe { ctx.disable_event_tracking() };
    let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
    let capability = ctx
        .compute_capability()
        .map_err(|e| format!("reading the compute capability failed: {e:?}"))?;
    let multiprocessors = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| format!("reading the multiprocessor count failed: {e:?}"))?
        .max(1) as usize;
    let stream = ctx
        .new_stream()
        .map_err(|e| format!("creating a stream failed: {e:?}"))?;
    keep_freed_memory_pooled(&ctx);
    Ok(Arc::new(CudaBackend {
        ordinal,
        name,
        capability,
        multiprocessors,
        ctx,
        stream,
        modules: Mutex::new(HashMap::new()),
        functions: Mutex::new(HashMap::new()),
        blas: OnceLock::new(),
        lt: OnceLock::new(),
        profile: Mutex::new(None),
        staging: Mutex::new(super::staging::Pool::new(super::staging::LIMIT)),
        profiling: std::sync::atomic::AtomicBool::new(false),
    }))
}

/// Buffers come from the device's stream-ordered memory pool (cudarc allocates with
/// `cuMemAllocAsync`). Raising the pool's release threshold to "never" makes it a caching
/// allocator: freed blocks stay reserved and later allocations of a training step reuse them,
/// so after the first step no memory is requested from the driver.
fn keep_freed_memory_pooled(ctx: &CudaContext) {
    // SAFETY: plain driver calls on a live device handle; a failure only costs speed.
    unsafe {
        let mut pool = std::mem::MaybeUninit::uninit();
        if sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), ctx.cu_device())
            .result()
            .is_ok()
        {
            let mut threshold: u64 = u64::MAX;
            let _ = sys::cuMemPoolSetAttribute(
                pool.assume_init(),
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            );
        }
    }
}

impl CudaBackend {
    /// The opened device `ordinal` (opened on first use, then shared), or
    /// [`Error::DeviceUnavailable`] saying plainly why it cannot be used: no driver, no NVRTC,
    /// no such device.
    pub fn get(ordinal: usize) -> Result<Arc<CudaBackend>> {
        let mut map = opened().lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(ordinal).or_insert_with(|| open(ordinal));
        match entry {
            Ok(b) => Ok(b.clone()),
            Err(reason) => Err(Error::DeviceUnavailable {
                device: Device::Cuda(ordinal),
                reason: reason.clone(),
            }),
        }
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The GPU's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor), e.g. (9, 0) for H100/H200.
    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }

    /// The number of streaming multiprocessors (132 on an H100 SXM or H200): how many blocks
    /// of a large kernel run at once, which decides when a product is cut into slices.
    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    /// Makes this device's context current on the calling thread (driver and library calls
    /// made outside cudarc's own wrappers need it; any thread may run ops).
    pub(crate) fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| self.err("binding the context", e))
    }

    /// The stream all ops on this device are queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until every queued op has finished (used when a value is read back).
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| self.err("synchronize", e))
    }

    /// Queues a copy of `bytes` to device address `dst`, through a page-locked staging buffer
    /// ([`super::staging`]) so that the copy never waits for the work queued before it.
    ///
    /// # Safety
    /// `dst` must be a live allocation of this device of at least `bytes.len()` bytes, freed (if
    /// at all) only in stream order after this call.
    pub(crate) unsafe fn upload(&self, bytes: &[u8], dst: u64) -> Result<()> {
        use super::staging::{Pinned, Take};
        self.bind()?;
        let e = |e| self.err("copy to device", e);
        let mut pool = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        match pool.take(bytes.len(), |cap| Pinned::new(&self.ctx, cap))? {
            Take::Stage(mut b) => {
                let queued = b.upload(bytes, dst, &self.stream);
                // Handed back even when the copy failed: its event then completes at once.
                pool.in_flight(b);
                queued.map_err(e)
            }
            Take::Pageable => {
                drop(pool);
                cudarc::driver::result::memcpy_htod_async(dst, bytes, self.stream.cu_stream())
                    .map_err(e)
            }
        }
    }

    /// Bytes of device memory held by live tensors, and bytes the pool has reserved.
    pub fn memory_in_use(&self) -> Result<(u64, u64)> {
        self.bind()?;
        let read = |attr| -> Result<u64> {
            let mut v: u64 = 0;
            // SAFETY: reads one u64 attribute of the device's default pool.
            unsafe {
                let mut pool = std::mem::MaybeUninit::uninit();
                sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), self.ctx.cu_device())
                    .result()
                    .map_err(|e| self.err("memory_in_use", e))?;
                sys::cuMemPoolGetAttribute(
                    pool.assume_init(),
                    attr,
                    &mut v as *mut u64 as *mut std::ffi::c_void,
                )
                .result()
                .map_err(|e| self.err("memory_in_use", e))?;
            }
            Ok(v)
        };
        Ok((
            read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            read(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
        ))
    }

    /// The kernel `name` from the kernel file `file` (compiled on first use for this GPU's
    /// architecture, through the on-disk cache).
    pub(crate) fn function(&self, file: &'static str, name: &str) -> Result<CudaFunction> {
        let key = format!("{file}/{name}");
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            // Each launch asks for its function just before it: the profile's mark for it
            // (after any compile and load, which are host work).
            self.mark(|| key.clone());
            return Ok(f.clone());
        }
        // Loading a module and looking a function up act on the thread's current context, and
        // this may be the first CUDA call of the thread.
        self.bind()?;
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            match modules.get(file) {
                Some(m) => m.clone(),
                None => {
                    let (bin, _) = self.cubin(file)?;
                    let m = self.load_cubin(file, bin)?;
                    modules.insert(file, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(name)
            .map_err(|e| self.err_msg(format!("kernel {name} not found in {file}.cu ({e:?})")))?;
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), f.clone());
        self.mark(|| key);
        Ok(f)
    }

    /// The machine code of kernel file `file` for this GPU, and whether NVRTC compiled it
    /// (`false`: the on-disk cache held it).
    fn cubin(&self, file: &str) -> CubinLookup {
        let src = compile::kernel_file(file).ok_or_else(|| Error::DeviceUnavailable {
            device: Device::Cuda(self.ordinal),
            reason: format!("no kernel file {file}.cu in this build"),
        })?;
        let arch = format!("sm_{}{}", self.capability.0, self.capability.1);
        compile::cubin_cached_in(&src, &arch, compile::cache_dir().as_deref()).map_err(|reason| {
            Error::DeviceUnavailable {
                device: Device::Cuda(self.ordinal),
                reason,
            }
        })
    }

    fn load_cubin(&self, file: &str, bin: Vec<u8>) -> Result<Arc<CudaModule>> {
        self.ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(bin))
            .map_err(|e| {
                self.err_msg(format!(
                    "loading {file}.cu failed ({e:?}); a CUBIN from an NVRTC of a newer major \
                     CUDA version than the driver does not load"
                ))
            })
    }

    /// Compiles (or reads from the on-disk cache) and loads every kernel file not loaded yet,
    /// compiling on all the host's cores at once, largest files first. Kernels are otherwise
    /// compiled one file at a time as ops first need them; calling this before a run's first
    /// step replaces those waits with one shorter one (about 30 s of NVRTC work in all: 1.5x
    /// faster on 2 cores, bounded by the largest file on many). Safe to call again: it only
    /// loads what is missing.
    pub fn load_all_kernels(&self) -> Result<crate::device::KernelsLoaded> {
        let start = std::time::Instant::now();
        let missing: Vec<&'static str> = {
            let modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<(&'static str, usize)> = compile::KERNEL_FILES
                .iter()
                .filter(|(n, _)| !modules.contains_key(n))
                .map(|&(n, src)| (n, src.len()))
                .collect();
            // Longest source first: the files that take longest start first.
            v.sort_by_key(|&(_, len)| std::cmp::Reverse(len));
            v.into_iter().map(|(n, _)| n).collect()
        };
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(missing.len())
            .max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Mutex<Vec<(&'static str, CubinLookup)>> = Mutex::new(vec![]);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&file) = missing.get(i) else { break };
                    let r = self.cubin(file);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((file, r));
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        // Report the first failure in file order, whatever order the threads finished in.
        results.sort_by_key(|(file, _)| missing.iter().position(|m| m == file));
        let mut compiled = 0;
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        for (file, r) in results {
            let (bin, fresh) = r?;
            compiled += usize::from(fresh);
            if !modules.contains_key(file) {
                let m = self.load_cubin(file, bin)?;
                modules.insert(file, m);
            }
        }
        Ok(crate::device::KernelsLoaded {
            files: missing.len(),
            compiled,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The cuBLAS handle of this device (opened on first use).
    pub(crate) fn blas(&self) -> Result<&Mutex<super::matmul::BlasHandle>> {
        let r = self.blas.get_or_init(|| {
            super::matmul::open_blas(self).map_err(|e| match e {
                Error::DeviceUnavailable { reason, .. } => reason,
                other => other.to_string(),
            })
        });
        r.as_ref().map_err(|reason| Error::DeviceUnavailable {
            device: Device::Cuda(self.ordinal),
            reason: reason.clone(),
        })
    }

    /// The cuBLASLt handle of this device (opened on first use), or why there is none.
    pub(crate) fn lt(&self) -> Result<&Mutex<super::lt::LtState>> {
        let r = self.lt.get_or_init(|| {
            super::lt::open_lt(self).map_err(|e| match e {
                Error::DeviceUnavailable { reason, .. } => reason,
                other => other.to_string(),
            })
        });
        r.as_ref().map_err(|reason| Error::DeviceUnavailable {
            device: Device::Cuda(self.ordinal),
            reason: reason.clone(),
        })
    }

    /// Why cuBLASLt (the fused epilogues of `linear`, `mlp2` and `qkv_attention`: bias,
    /// residual, GELU) is not used on this device (it could not be loaded, or it declined a
    /// product: the first such), or `None` when it is: without it the layers run those steps
    /// in separate kernels.
    pub fn lt_problem(&self) -> Option<String> {
        match self.lt() {
            Err(e) => Some(e.to_string()),
            Ok(st) => st.lock().unwrap_or_else(|p| p.into_inner()).declined(),
        }
    }

    /// An error from a driver call made for `what`.
    pub(crate) fn err(&self, what: &str, e: cudarc::driver::DriverError) -> Error {
        self.err_msg(format!("{what}: {e:?}"))
    }

    pub(crate) fn err_msg(&self, reason: String) -> Error {
        Error::Cuda {
            device: Device::Cuda(self.ordinal),
            reason,
        }
    }
}

/// What the CUDA emulator (`tools/cuda-emu`, a stand-in for the driver used by tests on
/// machines without a GPU) has counted in this process, or `None` on a real driver (or none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmulatorCounters {
    /// Copies from the device to the host (each is a read back that waits for the GPU).
    pub reads: u64,
    /// Explicit waits: stream, context or event synchronisation.
    pub waits: u64,
    /// Copies from the host to the device.
    pub writes: u64,
    /// Kernel launches.
    pub launches: u64,
    /// Bytes copied from the host to the device.
    pub written_bytes: u64,
    /// Copies to the device from pageable host memory (not page-locked): on a GPU each may
    /// wait for the work queued before it ([`CudaStorage::from_cpu`](super::CudaStorage::from_cpu)
    /// stages uploads through page-locked memory so that they do not).
    pub pageable_writes: u64,
}

/// The emulator's counters (see [`EmulatorCounters`]); `None` unless the loaded `libcuda` is
/// the emulator's. Lets tests check, without a GPU, how often a training step synchronises.
pub fn emulator_counters() -> Option<EmulatorCounters> {
    // SAFETY: only dlopen / dlsym; the symbol, when present, is the emulator's
    // `void selfsup_emu_counters(unsigned long long out[6])`.
    unsafe {
        if !sys::is_culib_present() {
            return None;
        }
        let f = sys::culib()
            .get::<unsafe extern "C" fn(*mut u64)>(b"selfsup_emu_counters\0")
            .ok()?;
        let mut out = [0u64; 6];
        f(out.as_mut_ptr());
        Some(EmulatorCounters {
            reads: out[0],
            waits: out[1],
            writes: out[2],
            launches: out[3],
            written_bytes: out[4],
            pageable_writes: out[5],
        })
    }
}
