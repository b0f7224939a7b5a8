//! Launches of the elementwise kernels (`kernels/unary.cu`, `kernels/binary.cu`): the CUDA arms
//! of [`crate::ops::unary`] and [`crate::ops::binary`]. Kernel names are the op's `NAME` plus a
//! dtype suffix; the CPU reference is the op's `f` / `df`.

use cudarc::driver::PushKernelArg;

use super::launch::{float_tag, Dims};
use super::CudaStorage;
use crate::error::{Error, Result};
use crate::Layout;

/// `y = f(x)` over `x` at layout `lx`, into a new contiguous buffer.
pub fn unary(
    name: &'static str,
    params: [f64; 2],
    x: &CudaStorage,
    lx: &Layout,
) -> Result<CudaStorage> {
    let tag = float_tag(name, x.dtype())?;
    let n = lx.numel();
    let out = CudaStorage::alloc(&x.backend, x.dtype(), n)?;
    if n == 0 {
        return Ok(out);
    }
    let d = Dims::new(lx.shape(), &[lx])?;
    let f = x.backend.function("unary", &format!("{name}_{tag}"))?;
    let (px, py, n64) = (x.ptr(), out.ptr(), n as i64);
    let mut b = x.backend.stream().launch_builder(&f);
    b.arg(&px)
        .arg(&py)
        .arg(&n64)
        .arg(&d)
        .arg(&params[0])
        .arg(&params[1]);
    // SAFETY: the layout was checked against x's buffer; out holds n elements.
    unsafe { b.launch(d.grid(n, 1)) }.map_err(|e| x.backend.err(name, e))?;
    Ok(out)
}

/// `dx = g * f'(x, y)` with `x`, the saved output `y` (when the derivative reads it) and `g`
/// all at layouts of the same shape.
pub fn unary_backward(
    name: &'static str,
    params: [f64; 2],
    x: (&CudaStorage, &Layout),
    y: Option<(&CudaStorage, &Layout)>,
    g: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let tag = float_tag(name, x.0.dtype())?;
    for other in [g.0.dtype()].into_iter().chain(y.map(|y| y.0.dtype())) {
        if other != x.0.dtype() {
            return Err(Error::DTypeMismatch {
                op: name,
                lhs: x.0.dtype(),
                rhs: other,
            });
        }
    }
    let shape = x.1.shape();
    let n = x.1.numel();
    let out = CudaStorage::alloc(&x.0.backend, x.0.dtype(), n)?;
    if n == 0 {
        return Ok(out);
    }
    // Without y, operand 1 repeats x's layout and its pointer is null (the kernel skips it).
    let ly = y.map(|y| y.1).unwrap_or(x.1);
    let d = Dims::new(shape, &[x.1, ly, g.1])?;
    let backend = &x.0.backend;
    let f = backend.function("unary", &format!("{name}_bw_{tag}"))?;
    let (px, py, pg, pdx, n64) = (
        x.0.ptr(),
        y.map(|y| y.0.ptr()).unwrap_or(0),
        g.0.ptr(),
        out.ptr(),
        n as i64,
    );
    let mut b = backend.stream().launch_builder(&f);
    b.arg(&px)
        .arg(&py)
        .arg(&pg)
        .arg(&pdx)
        .arg(&n64)
        .arg(&d)
        .arg(&params[0])
        .arg(&params[1]);
    // SAFETY: layouts checked against their buffers; out holds n elements.
    unsafe { b.launch(d.grid(n, 3)) }.map_err(|e| backend.err(name, e))?;
    Ok(out)
}

/// `out = f(a, b)` over the broadcast `shape` (both layouts already broadcast to it).
pub fn binary(
    name: &'static str,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    shape: &[usize],
) -> Result<CudaStorage> {
    if a.0.dtype() != b.0.dtype() {
        return Err(Error::DTypeMismatch {
            op: name,
            lhs: a.0.dtype(),
            rhs: b.0.dtype(),
        });
    }
    if a.0.device() != b.0.device() {
        return Err(Error::DeviceMismatch {
            op: name,
            lhs: a.0.device(),
            rhs: b.0.device(),
        });
    }
    let tag = float_tag(name, a.0.dtype())?;
    let n: usize = shape.iter().product();
    let backend = &a.0.backend;
    let out = CudaStorage::alloc(backend, a.0.dtype(), n)?;
    if n == 0 {
        return Ok(out);
    }
    let d = Dims::new(shape, &[a.1, b.1])?;
    let f = backend.function("binary", &format!("{name}_{tag}"))?;
    let (pa, pb, po, n64) = (a.0.ptr(), b.0.ptr(), out.ptr(), n as i64);
    let mut l = backend.stream().launch_builder(&f);
    l.arg(&pa).arg(&pb).arg(&po).arg(&n64).arg(&d);
    // SAFETY: layouts checked against their buffers; out holds n elements.
    unsafe { l.launch(d.grid(n, 2)) }.map_err(|e| backend.err(name, e))?;
    Ok(out)
}

/// `out = c != 0 ? a : b` over the broadcast `shape` (all three layouts broadcast to it).
pub fn where_(
    c: (&CudaStorage, &Layout),
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    shape: &[usize],
) -> Result<CudaStorage> {
    for other in [c.0, b.0] {
        if other.dtype() != a.0.dtype() {
            return Err(Error::DTypeMismatch {
                op: "where",
                lhs: a.0.dtype(),
                rhs: other.dtype(),
            });
        }
    }
    let tag = float_tag("where", a.0.dtype())?;
    let n: usize = shape.iter().product();
    let backend = &a.0.backend;
    let out = CudaStorage::alloc(backend, a.0.dtype(), n)?;
    if n == 0 {
        return Ok(out);
    }
    let d = Dims::new(shape, &[c.1, a.1, b.1])?;
    let f = backend.function("binary", &format!("where_{tag}"))?;
    let (pc, pa, pb, po, n64) = (c.0.ptr(), a.0.ptr(), b.0.ptr(), out.ptr(), n as i64);
    let mut l = backend.stream().launch_builder(&f);
    l.arg(&pc).arg(&pa).arg(&pb).arg(&po).arg(&n64).arg(&d);
    // SAFETY: layouts checked against their buffers; out holds n elements.
    unsafe { l.launch(d.grid(n, 3)) }.map_err(|e| backend.err("where", e))?;
    Ok(out)
}
