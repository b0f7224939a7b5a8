//! Launches of `kernels/sort.cu`: a stable sort of `(u32 key, u32 value)` pairs on the device
//! (least significant digit first, 8 key bits a pass), for the deterministic scatter-adds.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::CudaStorage;
use crate::dtype::DType;
use crate::error::Result;

/// Pairs per tile (`SORT_TILE` in `kernels/sort.cu`): one block each.
const TILE: usize = 512;

/// Sorts the `n` pairs `(keys[k], vals[k])` (both `U32` buffers) by key, stably, when every
/// key is below `2^key_bits`; returns the sorted keys and values. Three launches per 8 bits of
/// key (none for `key_bits` 0, where every key is 0 and the pairs are already sorted).
pub fn sort_pairs(
    keys: CudaStorage,
    vals: CudaStorage,
    n: usize,
    key_bits: u32,
) -> Result<(CudaStorage, CudaStorage)> {
    let b = keys.backend.clone();
    if n == 0 || key_bits == 0 {
        return Ok((keys, vals));
    }
    if n > i32::MAX as usize {
        return Err(b.err_msg(format!(
            "sort: {n} pairs exceed the GPU sort's 2^31; split the batch"
        )));
    }
    let tiles = n.div_ceil(TILE);
    let hist = CudaStorage::alloc(&b, DType::U32, 256 * tiles)?;
    let per_tile = LaunchConfig {
        grid_dim: (tiles as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let one_block = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1024, 1, 1),
        shared_mem_bytes: 0,
    };
    let (mut keys, mut vals) = (keys, vals);
    // Each pass writes the other pair of buffers: two pairs for all the passes.
    let (mut keys_out, mut vals_out) = (
        CudaStorage::alloc(&b, DType::U32, n)?,
        CudaStorage::alloc(&b, DType::U32, n)?,
    );
    let (n64, hist_len) = (n as i64, (256 * tiles) as i64);
    let ph = hist.ptr();
    for shift in (0..key_bits).step_by(8) {
        let shift = shift as i32;
        let (pk, pv, pko, pvo) = (keys.ptr(), vals.ptr(), keys_out.ptr(), vals_out.ptr());
        // Each launch asks for its function just before it (the profile marks each launch so).
        let hist_f = b.function("sort", "radix_hist")?;
        let mut l = b.stream().launch_builder(&hist_f);
        l.arg(&pk).arg(&ph).arg(&n64).arg(&shift);
        // SAFETY: keys holds n values; hist 256 per tile.
        unsafe { l.launch(per_tile) }.map_err(|e| b.err("radix_hist", e))?;
        let scan_f = b.function("sort", "radix_scan")?;
        let mut l = b.stream().launch_builder(&scan_f);
        l.arg(&ph).arg(&hist_len);
        // SAFETY: hist holds hist_len values.
        unsafe { l.launch(one_block) }.map_err(|e| b.err("radix_scan", e))?;
        let scatter_f = b.function("sort", "radix_scatter")?;
        let mut l = b.stream().launch_builder(&scatter_f);
        l.arg(&pk)
            .arg(&pv)
            .arg(&pko)
            .arg(&pvo)
            .arg(&ph)
            .arg(&n64)
            .arg(&shift);
        // SAFETY: every buffer holds n values; the scanned counts place each key once.
        unsafe { l.launch(per_tile) }.map_err(|e| b.err("radix_scatter", e))?;
        std::mem::swap(&mut keys, &mut keys_out);
        std::mem::swap(&mut vals, &mut vals_out);
    }
    Ok((keys, vals))
}
