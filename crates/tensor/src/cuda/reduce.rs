//! Launches of `kernels/reduce.cu`: the CUDA arm of the sum/max/min reductions and of
//! argmax/argmin in [`crate::ops::reduce`] (the CPU reference is `crate::cpu::reduce`).

use cudarc::driver::PushKernelArg;

use super::launch::{grid_for, per_row, Dims};
use super::CudaStorage;
use crate::cpu::reduce::ReduceKind;
use crate::error::Result;
use crate::Layout;

/// Reduces `x` at layout `l` (reduced axes last, `rows * len` elements) to `rows` values.
pub fn rows(
    op: &'static str,
    kind: ReduceKind,
    x: &CudaStorage,
    l: &Layout,
    rows: usize,
    len: usize,
) -> Result<CudaStorage> {
    let tag = super::launch::float_tag(op, x.dtype())?;
    let kind_name = match kind {
        ReduceKind::Sum => "sum",
        ReduceKind::Max => "max",
        ReduceKind::Min => "min",
    };
    if len == 0 {
        // An empty reduction is its identity (0, -inf or +inf), as on the CPU.
        let v = match kind {
            ReduceKind::Sum => 0.0,
            ReduceKind::Max => f64::NEG_INFINITY,
            ReduceKind::Min => f64::INFINITY,
        };
        return CudaStorage::full(&x.backend, x.dtype(), rows, v);
    }
    let out = CudaStorage::alloc(&x.backend, x.dtype(), rows)?;
    if rows == 0 {
        return Ok(out);
    }
    if thread_per_row(rows, len) {
        let d = Dims::new(l.shape(), &[l])?;
        let f = x
            .backend
            .function("reduce", &format!("reduce_short_{kind_name}_{tag}"))?;
        let (px, po, r64, n64) = (x.ptr(), out.ptr(), rows as i64, len as i64);
        let mut b = x.backend.stream().launch_builder(&f);
        b.arg(&px).arg(&po).arg(&r64).arg(&n64).arg(&d);
        // SAFETY: the layout was checked against x's buffer; out holds `rows` elements.
        unsafe { b.launch(grid_for(rows)) }.map_err(|e| x.backend.err(op, e))?;
        return Ok(out);
    }
    launch_rows(
        op,
        &format!("reduce_{kind_name}_{tag}"),
        x,
        &out,
        l,
        rows,
        len,
    )?;
    Ok(out)
}

/// Whether `rows` rows of `len` elements are folded by one thread each
/// (`reduce_short_<kind>_<dtype>`) rather than by a block of 256 threads each: rows of at most
/// 32 elements (a block would leave most of its threads idle), and rows of up to 1,024 when
/// there are at least 8,192 of them (a block per row would run in many waves, while a thread
/// per row still fills the GPU): the split-K slice sums of a convolution's weight gradient,
/// `[slices, M, K]` summed over the slices (ResNet-18's first stage at 1,024 views: 53 slices
/// of 36,864 outputs).
pub fn thread_per_row(rows: usize, len: usize) -> bool {
    len <= 32 || (rows >= 8192 && len <= 1024)
}

/// Index (i64) of the maximum (`max`) or minimum of each of the `rows` rows of `len > 0`
/// elements of `x` (f32, f64 or bf16) at layout `l` (reduced axis last): the first one on ties,
/// the first NaN if there is one, as the CPU's `arg_rows`.
pub fn arg_rows(
    op: &'static str,
    max: bool,
    x: &CudaStorage,
    l: &Layout,
    rows: usize,
    len: usize,
) -> Result<CudaStorage> {
    let tag = match x.dtype() {
        crate::DType::BF16 => "bf16",
        d => super::launch::float_tag(op, d)?,
    };
    let out = CudaStorage::alloc(&x.backend, crate::DType::I64, rows)?;
    if rows == 0 || len == 0 {
        return Ok(out);
    }
    let kind = if max { "max" } else { "min" };
    launch_rows(
        op,
        &format!("argreduce_{kind}_{tag}"),
        x,
        &out,
        l,
        rows,
        len,
    )?;
    Ok(out)
}

/// One block per row (grid-stride over rows) of `name`, reading `x` through `l`.
fn launch_rows(
    op: &'static str,
    name: &str,
    x: &CudaStorage,
    out: &CudaStorage,
    l: &Layout,
    rows: usize,
    len: usize,
) -> Result<()> {
    let d = Dims::new(l.shape(), &[l])?;
    let f = x.backend.function("reduce", name)?;
    let (px, po, r64, n64) = (x.ptr(), out.ptr(), rows as i64, len as i64);
    let mut b = x.backend.stream().launch_builder(&f);
    b.arg(&px).arg(&po).arg(&r64).arg(&n64).arg(&d);
    let cfg = per_row(rows);
    // SAFETY: the layout was checked against x's buffer; out holds `rows` elements.
    unsafe { b.launch(cfg) }.map_err(|e| x.backend.err(op, e))?;
    Ok(())
}

/// The non-finite probe's partial sums over `slots` (`(storage, first element, elements)`,
/// one float dtype, one GPU): one f64 per chunk of at most 65,536 elements, the sum of `x * 0`
/// over the chunk (NaN exactly where it holds a NaN or an infinity, else 0), all from one
/// launch of `nonfinite_multi_<f32|f64>`; `None` when the slots hold no element.
pub fn non_finite_partials(slots: &[(&CudaStorage, usize, usize)]) -> Result<Option<CudaStorage>> {
    use super::table::{chunks, launch_entries, send_table};
    let Some(&(first, _, _)) = slots.first() else {
        return Ok(None);
    };
    let tag = super::launch::float_tag("non_finite_probe", first.dtype())?;
    let mut table = Vec::new();
    for &(s, offset, n) in slots {
        if s.dtype() != first.dtype() || offset + n > s.len() {
            return Err(first.backend.err_msg(format!(
                "non_finite_probe: a {:?} slot of {n} elements from {offset} in a {:?} buffer of {}",
                s.dtype(),
                first.dtype(),
                s.len()
            )));
        }
        for (start, len) in chunks(n) {
            table.extend([s.ptr(), (offset + start) as u64, len as u64]);
        }
    }
    let entries = table.len() / 3;
    if entries == 0 {
        return Ok(None);
    }
    let dev = send_table(first, table)?;
    let partial = CudaStorage::alloc(&first.backend, crate::DType::F64, entries)?;
    launch_entries(
        first,
        "reduce",
        &format!("nonfinite_multi_{tag}"),
        "non_finite_probe",
        &dev,
        entries,
        &[partial.ptr()],
    )?;
    Ok(Some(partial))
}

#[cfg(test)]
mod tests {
    use super::thread_per_row;

    #[test]
    fn short_or_numerous_rows_take_a_thread_each() {
        assert!(thread_per_row(40, 7));
        assert!(thread_per_row(1, 32));
        assert!(thread_per_row(36_864, 53));
        // A linear layer's bias gradient from GPT-2's 64 column-sum chunks: a block per column.
        assert!(!thread_per_row(768, 64));
        // The SmallCnn's first convolution, 264 slices of 288 outputs: too few rows.
        assert!(!thread_per_row(288, 264));
        assert!(!thread_per_row(100_000, 4096));
    }
}
