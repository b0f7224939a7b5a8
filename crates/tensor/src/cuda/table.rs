//! Multi-tensor launches: a table of per-chunk entries (u64 words: addresses, ranges,
//! per-tensor constants) sent to the device, and one kernel launch with a block per entry, so
//! one launch covers every parameter of an optimiser step (`optim.cu`) or every tensor a
//! non-finite probe reads (`reduce.cu`).

use cudarc::driver::PushKernelArg;

use super::CudaStorage;
use crate::error::Result;

/// Elements per entry of the multi-tensor tables (one block each).
pub(crate) const CHUNK: usize = 1 << 16;

/// Splits `n` elements into table chunks `(start, len)`.
pub(crate) fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n.div_ceil(CHUNK)).map(move |c| (c * CHUNK, CHUNK.min(n - c * CHUNK)))
}

/// Copies `table` (u64 words) to `first`'s device.
pub(crate) fn send_table(first: &CudaStorage, table: Vec<u64>) -> Result<CudaStorage> {
    let words_i64: Vec<i64> = table.into_iter().map(|w| w as i64).collect();
    CudaStorage::from_cpu(&first.backend, &crate::storage::CpuStorage::I64(words_i64))
}

/// Launches `name` of kernel file `module` as `name(table, extra...)` with a block of
/// [`super::launch::BLOCK`] threads per entry; `extra` are further device pointers; `op` names
/// the operation in a launch error.
pub(crate) fn launch_entries(
    first: &CudaStorage,
    module: &'static str,
    name: &str,
    op: &str,
    table: &CudaStorage,
    entries: usize,
    extra: &[u64],
) -> Result<()> {
    let b = &first.backend;
    let f = b.function(module, name)?;
    let pt = table.ptr();
    let mut l = b.stream().launch_builder(&f);
    l.arg(&pt);
    for e in extra {
        l.arg(e);
    }
    let cfg = cudarc::driver::LaunchConfig {
        grid_dim: (entries as u32, 1, 1),
        block_dim: (super::launch::BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: every entry names live buffers of the lengths it gives (checked by the caller);
    // the table and the extra buffers live until their stream-ordered frees, after the kernel.
    unsafe { l.launch(cfg) }.map_err(|e| b.err(op, e))?;
    Ok(())
}
