//! Save / load / resume, strict loading errors, prefix loading and atomic writes.

use std::path::PathBuf;

use selfsup_nn::checkpoint::{
    atomic_write, load_checkpoint, load_model, save_checkpoint, save_model, LoadOptions, TrainState,
};
use selfsup_nn::optim::{Adam, AdamConfig, Optimizer};
use selfsup_nn::{Activation, BatchNorm, Dropout, Linear, Module, NnError, Sequential};
use selfsup_tensor::{DType, Generator, Tensor};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("selfsup-nn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model(seed: u64) -> Sequential {
    let mut g = Generator::new(seed);
    Sequential::new()
        .push(Linear::new(4, 16, true, DType::F32, &mut g).unwrap())
        .push(BatchNorm::new_1d(16, true, DType::F32))
        .push(Activation::Relu)
        .push(Dropout::new(0.2, Generator::new(seed + 100)).unwrap())
        .push(Linear::new(16, 3, true, DType::F32, &mut g).unwrap())
}

fn train_step(m: &Sequential, opt: &mut dyn Optimizer, data: &mut Generator) {
    let x = Tensor::randn(&[8, 4], 0.0, 1.0, DType::F32, data).unwrap();
    let y = Tensor::from_vec((0..8).map(|i| i % 3).collect::<Vec<i64>>(), &[8]).unwrap();
    opt.zero_grad();
    m.forward(&x)
        .unwrap()
        .cross_entropy(&y)
        .unwrap()
        .backward()
        .unwrap();
    opt.step().unwrap();
}

fn bits(m: &dyn Module) -> Vec<(String, Vec<u64>)> {
    let mut all = m.params();
    all.extend(m.buffers());
    all.into_iter()
        .map(|(n, t)| {
            (
                n,
                t.to_vec_f64()
                    .unwrap()
                    .into_iter()
                    .map(f64::to_bits)
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn save_load_resume_is_bit_identical() {
    let dir = tmp_dir("resume");
    let path = dir.join("ckpt.safetensors");
    let n = 6;
    let cfg = AdamConfig {
        lr: 1e-2,
        weight_decay: 0.05,
        ..AdamConfig::adamw()
    };

    // Straight run.
    let a = model(1);
    let mut opt_a = Adam::adamw(a.params(), cfg.clone());
    let mut data_a = Generator::new(7);
    for _ in 0..n {
        train_step(&a, &mut opt_a, &mut data_a);
    }

    // Half, save, load into fresh objects (different init), other half.
    let b = model(1);
    let mut opt_b = Adam::adamw(b.params(), cfg.clone());
    let mut data_b = Generator::new(7);
    for _ in 0..n / 2 {
        train_step(&b, &mut opt_b, &mut data_b);
    }
    let mut st = TrainState {
        step: (n / 2) as u64,
        epoch: 1,
        ..Default::default()
    };
    st.generators.insert("data".into(), data_b.state());
    save_checkpoint(&path, &b, Some(&opt_b), &st).unwrap();
    drop((b, opt_b, data_b));

    let c = model(99);
    let mut opt_c = Adam::adamw(c.params(), cfg);
    let st2 = load_checkpoint(&path, &c, Some(&mut opt_c), &LoadOptions::default()).unwrap();
    assert_eq!(st2, st);
    assert_eq!(opt_c.step_count(), (n / 2) as u64);
    let (seed, offset) = st2.generators["data"];
    let mut data_c = Generator::from_state(seed, offset);
    for _ in 0..n / 2 {
        train_step(&c, &mut opt_c, &mut data_c);
    }
    assert_eq!(bits(&a), bits(&c));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn loading_reports_missing_unexpected_and_wrong_shaped_tensors_by_name() {
    let dir = tmp_dir("mismatch");
    let path = dir.join("m.safetensors");
    let mut g = Generator::new(0);
    let small = Sequential::new().push(Linear::new(4, 3, true, DType::F32, &mut g).unwrap());
    save_model(&path, &small).unwrap();

    let other = Sequential::new()
        .push(Linear::new(4, 5, true, DType::F32, &mut g).unwrap())
        .push(Linear::new(5, 2, false, DType::F32, &mut g).unwrap());
    let err = load_model(&path, &other, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NnError::Mismatch { .. }));
    assert!(
        msg.contains("wrong shape: 0.weight is [3, 4] in the file, the model has [5, 4]"),
        "{msg}"
    );
    assert!(msg.contains("wrong shape: 0.bias"), "{msg}");
    assert!(msg.contains("missing: 1.weight"), "{msg}");
    assert!(msg.contains("m.safetensors"), "{msg}");

    let no_bias = Sequential::new().push(Linear::new(4, 3, false, DType::F32, &mut g).unwrap());
    let before = no_bias.params()[0].1.to_vec::<f32>().unwrap();
    let msg = load_model(&path, &no_bias, None).unwrap_err().to_string();
    assert!(msg.contains("unexpected: 0.bias"), "{msg}");
    // A failed load writes nothing.
    assert_eq!(no_bias.params()[0].1.to_vec::<f32>().unwrap(), before);
    let opts = LoadOptions {
        allow_unexpected: true,
        ..Default::default()
    };
    load_checkpoint(&path, &no_bias, None, &opts).unwrap();
    assert_eq!(
        no_bias.params()[0].1.to_vec::<f32>().unwrap(),
        small.params()[0].1.to_vec::<f32>().unwrap()
    );

    // Corrupt and absent files give errors that name the path.
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    let msg = load_model(&bad, &small, None).unwrap_err().to_string();
    assert!(
        msg.contains("bad.safetensors") && msg.contains("invalid checkpoint"),
        "{msg}"
    );
    let msg = load_model(dir.join("absent"), &small, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absent"), "{msg}");
    std::fs::remove_dir_all(dir).ok();
}

/// A model with an `encoder` sub-module, as a full SSL model would have.
struct Full {
    encoder: Sequential,
    head: Linear,
}

impl Module for Full {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.encoder
            .visit_params(&selfsup_nn::join(prefix, "encoder"), f);
        self.head.visit_params(&selfsup_nn::join(prefix, "head"), f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.encoder
            .visit_params_mut(&selfsup_nn::join(prefix, "encoder"), f);
        self.head
            .visit_params_mut(&selfsup_nn::join(prefix, "head"), f);
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.encoder
            .visit_buffers(&selfsup_nn::join(prefix, "encoder"), f);
    }
}

#[test]
fn prefix_filter_loads_an_encoder_from_a_full_model() {
    let dir = tmp_dir("prefix");
    let path = dir.join("full.safetensors");
    let full = Full {
        encoder: model(3),
        head: Linear::new(3, 2, true, DType::F32, &mut Generator::new(4)).unwrap(),
    };
    assert!(full.params().iter().any(|(n, _)| n == "encoder.0.weight"));
    save_model(&path, &full).unwrap();
    let enc = model(5);
    load_model(&path, &enc, Some("encoder.")).unwrap();
    assert_eq!(bits(&enc), bits(&full.encoder));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_torn_write_leaves_the_previous_checkpoint_intact() {
    let dir = tmp_dir("torn");
    let path = dir.join("ckpt.safetensors");
    let m = model(8);
    save_model(&path, &m).unwrap();
    let good = std::fs::read(&path).unwrap();
    // The writer dies half-way through.
    let err = atomic_write(&path, |f| {
        use std::io::Write;
        f.write_all(&good[..good.len() / 2])?;
        Err(std::io::Error::other("simulated crash"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("simulated crash"));
    assert_eq!(std::fs::read(&path).unwrap(), good);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let fresh = model(9);
    load_model(&path, &fresh, None).unwrap();
    assert_eq!(bits(&fresh), bits(&m));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn optimiser_state_for_another_model_is_refused_by_name() {
    let dir = tmp_dir("optim-mismatch");
    let path = dir.join("ckpt.safetensors");
    let a = model(1);
    let mut opt = Adam::adamw(a.params(), AdamConfig::adamw());
    train_step(&a, &mut opt, &mut Generator::new(0));
    save_checkpoint(&path, &a, Some(&opt), &TrainState::default()).unwrap();
    // Same model, but the optimiser only holds the last layer: state for 0.* is unexpected.
    let b = model(2);
    let before = bits(&b);
    let mut opt_b = Adam::adamw(
        selfsup_nn::optim::trainable(b.params(), &["0."]),
        AdamConfig::adamw(),
    );
    let msg = load_checkpoint(&path, &b, Some(&mut opt_b), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("0.weight.exp_avg: no parameter 0.weight"),
        "{msg}"
    );
    assert!(msg.contains("ckpt.safetensors"), "{msg}");
    assert_eq!(bits(&b), before, "a failed load leaves the model untouched");
    std::fs::remove_dir_all(dir).ok();
}
