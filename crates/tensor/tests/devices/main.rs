//! The device suite: every op with a CUDA arm, run on each GPU this machine has and compared
//! with the CPU on fresh random inputs (forward and backward, dtype-appropriate tolerances,
//! non-contiguous views). On a machine without a usable GPU each test prints why it skipped.
//!
//! `on_each_gpu(|dev| ...)` is the one test body per op; `compare` checks a GPU result against
//! the CPU's.

mod availability;
mod conv;
mod conv_mma;
mod elementwise;
mod gelu_epilogue;
mod index;
mod linear_ce;
mod matmul;
mod mlp;
mod operand;
mod profile;
mod qkv_attention;
mod reduce;
mod residual;
mod rows;
mod shadow;
mod transfer;

use selfsup_tensor::{DType, Device, Generator, Tensor};

/// Runs `body` on every usable GPU; prints the reason and returns when there is none.
pub fn on_each_gpu(test: &str, body: impl Fn(Device)) {
    let gpus: Vec<Device> = Device::all_available()
        .into_iter()
        .filter(|d| !d.is_cpu())
        .collect();
    if gpus.is_empty() {
        let why = Device::Cuda(0)
            .check()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        eprintln!("{test}: skipped on GPU: {why}");
        return;
    }
    for d in gpus {
        body(d);
    }
}

/// Held by the tests that profile a device: a profile is per device and process, so two at
/// once would reset each other's marks.
pub static PROFILING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Uniform values in [lo, hi) of `shape`, f32 or f64, on the CPU, from `seed`.
pub fn rand(shape: &[usize], dtype: DType, lo: f64, hi: f64, seed: u64) -> Tensor {
    let mut g = Generator::new(seed);
    Tensor::rand(shape, lo, hi, dtype, &mut g).expect("rand")
}

/// Relative-and-absolute tolerance for comparing a GPU result with the CPU's in `dtype`.
pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-11,
        DType::F32 => 2e-5,
        _ => 1e-2,
    }
}

/// Asserts that `gpu` (any device) holds the same shape and values as `cpu` within `tol`.
pub fn compare(what: &str, gpu: &Tensor, cpu: &Tensor, tol: f64) {
    assert_eq!(gpu.shape(), cpu.shape(), "{what}: shape");
    assert_eq!(gpu.dtype(), cpu.dtype(), "{what}: dtype");
    let (a, b) = (
        gpu.to_vec_f64().expect("gpu values"),
        cpu.to_vec_f64().expect("cpu values"),
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= tol * (1.0 + y.abs());
        assert!(
            ok,
            "{what}: element {i}: GPU {x} vs CPU {y} (tolerance {tol})"
        );
    }
}

/// Asserts that `got` matches `want` in shape and, as a whole, within relative error `tol`:
/// `‖got − want‖ / ‖want‖ ≤ tol` (Euclidean norms; NaN anywhere fails). For bf16 results that
/// a GPU rounds in a different order, or with a different f32 approximation, than their
/// reference: a few elements one bf16 step off, which an elementwise bound would have to
/// allow everywhere, barely move the norm, while a wrong value anywhere does.
pub fn compare_norm(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (a, b) = (
        got.to_vec_f64().expect("values"),
        want.to_vec_f64().expect("values"),
    );
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    let rel = (diff / norm.max(f64::MIN_POSITIVE)).sqrt();
    assert!(
        rel <= tol,
        "{what}: relative error {rel:.3e} over {} elements (tolerance {tol})",
        a.len()
    );
}

/// `t` rounded to bf16 and back to f32, differentiably (its gradient is rounded to bf16 too):
/// where a fused bf16 path rounds, in the composition it is checked against.
pub fn round_bf16(t: &Tensor) -> Tensor {
    t.to_dtype(DType::BF16)
        .expect("to bf16")
        .to_dtype(DType::F32)
        .expect("to f32")
}

/// The largest `|a - b|` over the elements of two tensors of one shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.to_vec_f64()
        .expect("values")
        .iter()
        .zip(b.to_vec_f64().expect("values"))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `t` moved to `d`, as a leaf that records its gradient when `grad`.
pub fn leaf(t: &Tensor, d: Device, grad: bool) -> Tensor {
    let t = t.to_device(d).expect("to_device");
    if grad {
        t.requires_grad_()
    } else {
        t
    }
}

/// Runs `f` on `xs` moved to `d` (as leaves), seeds the backward with a fixed random gradient,
/// and returns the output and each input's gradient.
pub fn run(d: Device, xs: &[&Tensor], f: &dyn Fn(&[Tensor]) -> Tensor) -> (Tensor, Vec<Tensor>) {
    let leaves: Vec<Tensor> = xs
        .iter()
        .map(|x| x.to_device(d).unwrap().requires_grad_())
        .collect();
    let y = f(&leaves);
    let w = rand(y.shape(), y.dtype(), -1.0, 1.0, 77)
        .to_device(d)
        .unwrap();
    y.backward_with(Some(&w), false).unwrap();
    let grads = leaves.iter().map(|l| l.grad().expect("gradient")).collect();
    (y, grads)
}

/// [`run`] on `dev` and on the CPU; asserts the output stays on `dev` and that the output and
/// every gradient agree within `tol`.
pub fn check(name: &str, dev: Device, xs: &[&Tensor], f: &dyn Fn(&[Tensor]) -> Tensor, tol: f64) {
    let ((y, g), (yc, gc)) = (run(dev, xs, f), run(Device::Cpu, xs, f));
    assert_eq!(y.device(), dev, "{name}: output device");
    compare(&format!("{name} forward"), &y, &yc, tol);
    for (i, (a, b)) in g.iter().zip(&gc).enumerate() {
        compare(&format!("{name} d/dx{i}"), a, b, tol);
    }
}
