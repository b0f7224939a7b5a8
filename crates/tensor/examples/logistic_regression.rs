//! Trains a logistic-regression classifier on a generated two-blob problem with the tensor API
//! alone: forward, cross-entropy, backward, and an in-place SGD step under `no_grad`.
//!
//! Run: `cargo run --release -p selfsup-tensor --example logistic_regression`

use selfsup_tensor::{no_grad, DType, Generator, Result, Tensor};

fn main() -> Result<()> {
    let mut g = Generator::new(0);
    let n = 512;
    // Two Gaussian blobs in 2-D, centred at (-1, -1) and (1, 1).
    let noise = Tensor::randn(&[n, 2], 0.0, 0.7, DType::F32, &mut g)?;
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
    let centres: Vec<f32> = labels
        .iter()
        .flat_map(|&l| if l == 1 { [1.0, 1.0] } else { [-1.0, -1.0] })
        .collect();
    let x = noise.add(&Tensor::from_vec(centres, &[n, 2])?)?;
    let y = Tensor::from_vec(labels, &[n])?;

    let w = Tensor::randn(&[2, 2], 0.0, 0.1, DType::F32, &mut g)?.requires_grad_();
    let b = Tensor::zeros(&[2], DType::F32).requires_grad_();
    for step in 0..=200 {
        let logits = x.matmul(&w)?.add(&b)?;
        let loss = logits.cross_entropy(&y)?;
        loss.backward()?;
        let _guard = no_grad();
        for p in [&w, &b] {
            if let Some(gr) = p.grad() {
                p.assign(&p.sub(&gr.mul_scalar(0.5)?)?)?;
            }
            p.zero_grad();
        }
        if step % 50 == 0 {
            let pred = logits.argmax(1, false)?.to_vec::<i64>()?;
            let acc = pred
                .iter()
                .zip(y.to_vec::<i64>()?)
                .filter(|(p, t)| **p == *t)
                .count() as f64
                / n as f64;
            println!(
                "step {step:3}  loss {:.4}  accuracy {:.1}%",
                loss.item()?,
                100.0 * acc
            );
        }
    }
    Ok(())
}
