//! Trains a two-layer MLP on a generated two-moons-like task with AdamW, a warm-up + cosine
//! schedule and gradient clipping, saves a checkpoint and reloads it.
//!
//! Run with `cargo run --release -p selfsup-nn --example mlp_train`.

use selfsup_nn::checkpoint::{load_checkpoint, save_checkpoint, LoadOptions, TrainState};
use selfsup_nn::optim::{clip_grad_norm, decay_groups, Adam, AdamConfig, Optimizer};
use selfsup_nn::schedule::LrSchedule;
use selfsup_nn::{Mlp, MlpConfig, Module};
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

/// Two interleaved half-circles with noise: `[n, 2]` points and `[n]` labels.
fn moons(n: usize, g: &mut Generator) -> selfsup_nn::Result<(Tensor, Tensor)> {
    let mut p = g.fork();
    let (mut x, mut y) = (Vec::with_capacity(2 * n), Vec::with_capacity(n));
    for i in 0..n {
        let t = std::f64::consts::PI * p.uniform_f64();
        let label = (i % 2) as i64;
        let (cx, cy) = if label == 0 {
            (t.cos(), t.sin())
        } else {
            (1.0 - t.cos(), 0.5 - t.sin())
        };
        x.push((cx + 0.1 * p.normal_f64()) as f32);
        x.push((cy + 0.1 * p.normal_f64()) as f32);
        y.push(label);
    }
    Ok((Tensor::from_vec(x, &[n, 2])?, Tensor::from_vec(y, &[n])?))
}

fn main() -> selfsup_nn::Result<()> {
    let mut g = Generator::new(0);
    let (x, y) = moons(512, &mut g)?;
    let model = Mlp::new(&MlpConfig::new(2, 64, 2, 2), DType::F32, &mut g)?;
    println!(
        "{} parameters: {:?}",
        model.num_params(),
        model
            .params()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
    );
    let groups = decay_groups(model.params(), 1e-2, 1e-2);
    let mut opt = Adam::with_groups(groups, AdamConfig::adamw())?;
    let steps = 400;
    let sched = LrSchedule::WarmupCosine {
        lr: 1e-2,
        warmup: 20,
        total: steps,
        final_lr: 1e-4,
    };
    for step in 0..steps {
        opt.set_lr(sched.lr(step));
        opt.zero_grad();
        let loss = model.forward(&x)?.cross_entropy(&y)?;
        loss.backward()?;
        clip_grad_norm(&model.params(), 1.0)?;
        opt.step()?;
        if step % 100 == 0 || step + 1 == steps {
            println!(
                "step {step:4}  lr {:.5}  loss {:.4}",
                sched.lr(step),
                loss.item()?
            );
        }
    }
    let accuracy = |m: &Mlp| -> selfsup_nn::Result<f64> {
        let _g = no_grad();
        let pred = m.forward(&x)?.argmax(-1, false)?.to_vec::<i64>()?;
        let labels = y.to_vec::<i64>()?;
        Ok(pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64)
    };
    println!("training accuracy {:.3}", accuracy(&model)?);

    let path = std::env::temp_dir().join("selfsup-mlp-train.safetensors");
    let state = TrainState {
        step: steps,
        epoch: 1,
        ..Default::default()
    };
    save_checkpoint(&path, &model, Some(&opt), &state)?;
    let fresh = Mlp::new(
        &MlpConfig::new(2, 64, 2, 2),
        DType::F32,
        &mut Generator::new(1),
    )?;
    let restored = load_checkpoint(
        &path,
        &fresh,
        None,
        &LoadOptions {
            allow_unexpected: true,
            ..Default::default()
        },
    )?;
    println!(
        "reloaded step {} from {}: accuracy {:.3}",
        restored.step,
        path.display(),
        accuracy(&fresh)?
    );
    std::fs::remove_file(&path).map_err(|source| selfsup_nn::NnError::Io { path, source })?;
    Ok(())
}
