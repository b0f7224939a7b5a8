//! Builds the reference SmallCnn with a linear head, trains it a few steps on random 28x28
//! images with AdamW, saves the encoder, and loads it into a fresh model.
//!
//! Run: `cargo run --release -p selfsup-nn --example small_cnn`

use selfsup_nn::checkpoint::{load_model, save_model};
use selfsup_nn::optim::{Adam, AdamConfig, Optimizer};
use selfsup_nn::{Linear, Module, SmallCnn};
use selfsup_tensor::{DType, Generator, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut g = Generator::new(0);
    let encoder = SmallCnn::new(1, DType::F32, &mut g)?;
    let head = Linear::new(encoder.out_dim(), 10, true, DType::F32, &mut g)?;
    println!(
        "SmallCnn: {} parameters, {:.1} MFLOP per 28x28 image",
        encoder.num_params(),
        encoder.flops_per_sample(28, 28) as f64 / 1e6
    );

    let mut params = encoder.params();
    params.extend(
        head.params()
            .into_iter()
            .map(|(n, t)| (format!("head.{n}"), t)),
    );
    let mut opt = Adam::adamw(
        params,
        AdamConfig {
            lr: 1e-3,
            ..AdamConfig::adamw()
        },
    );
    let x = Tensor::randn(&[32, 1, 28, 28], 0.0, 1.0, DType::F32, &mut g)?;
    let y = Tensor::from_vec((0..32).map(|i| i % 10).collect::<Vec<i64>>(), &[32])?;
    for step in 0..5 {
        opt.zero_grad();
        let loss = head.forward(&encoder.forward(&x)?)?.cross_entropy(&y)?;
        loss.backward()?;
        opt.step()?;
        println!("step {step}: loss {:.4}", loss.item()?);
    }

    let path = std::env::temp_dir().join("selfsup-small-cnn.safetensors");
    save_model(&path, &encoder)?;
    let restored = SmallCnn::new(1, DType::F32, &mut Generator::new(1))?;
    load_model(&path, &restored, None)?;
    let same = encoder
        .params()
        .iter()
        .zip(restored.params())
        .all(|((_, a), (_, b))| a.to_vec::<f32>().ok() == b.to_vec::<f32>().ok());
    println!(
        "saved to {} and reloaded: parameters identical = {same}",
        path.display()
    );
    Ok(())
}
