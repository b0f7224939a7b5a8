//! Runs a two-layer MLP's training step on the first GPU at bf16 matmul precision and prints
//! where the device's time went, kernel by kernel (`CudaBackend::profile_start` /
//! `profile_stop`). Without a usable GPU it says why and exits.
//!
//! Run: `cargo run --release -p selfsup-tensor --example gpu_profile`

use selfsup_tensor::cuda::CudaBackend;
use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Device, Generator, Result, Tensor};

fn main() -> Result<()> {
    let dev = Device::Cuda(0);
    if let Err(e) = dev.check() {
        println!("no GPU to profile: {e}");
        return Ok(());
    }
    let mut g = Generator::new(0);
    let (n, d_in, hidden, classes) = (4096, 784, 1024, 10);
    let x = Tensor::randn(&[n, d_in], 0.0, 1.0, DType::F32, &mut g)?.to_device(dev)?;
    let y = Tensor::from_vec((0..n as i64).map(|i| i % classes).collect(), &[n])?.to_device(dev)?;
    let param = |shape: &[usize], g: &mut Generator| -> Result<Tensor> {
        Ok(Tensor::randn(shape, 0.0, 0.02, DType::F32, g)?
            .to_device(dev)?
            .requires_grad_())
    };
    let (w1, b1) = (param(&[hidden, d_in], &mut g)?, param(&[hidden], &mut g)?);
    let (w2, b2) = (
        param(&[classes as usize, hidden], &mut g)?,
        param(&[classes as usize], &mut g)?,
    );
    let step = || -> Result<f64> {
        with_matmul_precision(MatmulPrecision::Bf16, || {
            let h = x.linear(&w1, Some(&b1))?.gelu()?;
            let loss = h.linear(&w2, Some(&b2))?.cross_entropy(&y)?;
            for p in [&w1, &b1, &w2, &b2] {
                p.zero_grad();
            }
            loss.backward()?;
            loss.item()
        })
    };
    // Kernels are compiled on first use: profile a later step.
    step()?;
    let backend = CudaBackend::get(0)?;
    backend.profile_start();
    let loss = step()?;
    let profile = backend.profile_stop()?;
    println!(
        "loss {loss:.4}; device time {:.3} ms over {} kernels:",
        profile.total_ms,
        profile.kernels.len()
    );
    for k in &profile.kernels {
        println!(
            "{:>9.3} ms {:>5.1}% {:>4}x  {}",
            k.ms,
            100.0 * k.ms / profile.total_ms.max(1e-12),
            k.calls,
            k.name
        );
    }
    Ok(())
}
