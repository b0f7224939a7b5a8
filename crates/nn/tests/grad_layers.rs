//! Finite-difference gradient checks (f64) through every layer, w.r.t. inputs and parameters.

use std::cell::RefCell;

use selfsup_nn::{BatchNorm, LayerNorm, Linear, Module};
use selfsup_tensor::{gradcheck::check_grad, DType, Generator, Tensor};

const TOL: f64 = 1e-6;

/// Checks `forward` of a module w.r.t. the input `x` and every parameter.
pub fn check_module<M: Module>(
    module: M,
    x: Tensor,
    forward: impl Fn(&M, &Tensor) -> selfsup_nn::Result<Tensor>,
) {
    let names: Vec<String> = module.params().iter().map(|(n, _)| n.clone()).collect();
    let mut inputs = vec![x];
    inputs.extend(module.params().into_iter().map(|(_, t)| t.detach()));
    let m = RefCell::new(module);
    let report = check_grad(
        |xs| {
            let new: Vec<(String, Tensor)> =
                names.iter().cloned().zip(xs[1..].iter().cloned()).collect();
            m.borrow_mut()
                .replace_params(&new)
                .map_err(|e| selfsup_tensor::Error::Invalid {
                    op: "test",
                    msg: e.to_string(),
                })?;
            forward(&m.borrow(), &xs[0]).map_err(|e| selfsup_tensor::Error::Invalid {
                op: "test",
                msg: e.to_string(),
            })
        },
        &inputs,
    )
    .unwrap();
    assert!(report.max_error < TOL, "{report:?} (inputs: x, {names:?})");
}

fn randn(shape: &[usize], g: &mut Generator) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, g).unwrap()
}

/// Perturbs a parameter so that affine parameters are not all ones/zeros.
fn jitter<M: Module>(m: &M, g: &mut Generator) {
    for (_, p) in m.params() {
        let noise = Tensor::randn(p.shape(), 0.0, 0.3, DType::F64, g).unwrap();
        p.assign(&p.add(&noise).unwrap().detach()).unwrap();
    }
}

#[test]
fn linear_grad() {
    let mut g = Generator::new(1);
    let l = Linear::new(4, 3, true, DType::F64, &mut g).unwrap();
    check_module(l, randn(&[2, 5, 4], &mut g), |l, x| l.forward(x));
    let l = Linear::new(4, 3, false, DType::F64, &mut g).unwrap();
    check_module(l, randn(&[3, 4], &mut g), |l, x| l.forward(x));
}

#[test]
fn layer_norm_grad() {
    let mut g = Generator::new(2);
    let ln = LayerNorm::new(5, DType::F64);
    jitter(&ln, &mut g);
    check_module(ln, randn(&[2, 3, 5], &mut g), |l, x| l.forward(x));
}

#[test]
fn batch_norm_train_grad() {
    let mut g = Generator::new(3);
    let bn = BatchNorm::new_1d(3, true, DType::F64);
    jitter(&bn, &mut g);
    check_module(bn, randn(&[6, 3], &mut g), |l, x| l.forward(x));
    let bn = BatchNorm::new_2d(2, true, DType::F64);
    jitter(&bn, &mut g);
    check_module(bn, randn(&[3, 2, 2, 3], &mut g), |l, x| l.forward(x));
}

#[test]
fn batch_norm_running_stats_and_eval() {
    let mut g = Generator::new(4);
    let mut bn = BatchNorm::new_1d(2, false, DType::F64);
    let x = randn(&[8, 2], &mut g);
    bn.forward(&x).unwrap();
    let mean = x.mean(&[0], false).unwrap().to_vec::<f64>().unwrap();
    let var = x.var(&[0], true, false).unwrap().to_vec::<f64>().unwrap();
    let rm = bn.running_mean.to_vec::<f64>().unwrap();
    let rv = bn.running_var.to_vec::<f64>().unwrap();
    for c in 0..2 {
        assert!((rm[c] - 0.1 * mean[c]).abs() < 1e-12);
        assert!((rv[c] - (0.9 + 0.1 * var[c])).abs() < 1e-12);
    }
    assert_eq!(bn.num_batches_tracked.to_vec::<i64>().unwrap(), vec![1]);
    bn.eval();
    let y = bn.forward(&x).unwrap().to_vec::<f64>().unwrap();
    let xv = x.to_vec::<f64>().unwrap();
    for i in 0..16 {
        let c = i % 2;
        let want = (xv[i] - rm[c]) / (rv[c] + 1e-5).sqrt();
        assert!((y[i] - want).abs() < 1e-12);
    }
    assert_eq!(bn.buffers().len(), 3);
}

use selfsup_nn::{
    Activation, ClassificationHead, Embedding, LearnedPositionalEmbedding, Mlp, MlpConfig,
    MultiHeadAttention, Pooling, TransformerBlock,
};

#[test]
fn mlp_grad() {
    let mut g = Generator::new(5);
    let mut cfg = MlpConfig::new(3, 4, 2, 3);
    cfg.batch_norm = true;
    cfg.hidden_bias = false;
    cfg.activation = Activation::Tanh;
    cfg.last_batch_norm = true;
    let m = Mlp::new(&cfg, DType::F64, &mut g).unwrap();
    jitter(&m, &mut g);
    assert_eq!(m.params()[0].0, "fc.0.weight");
    check_module(m, randn(&[5, 3], &mut g), |m, x| m.forward(x));
}

#[test]
fn attention_causal_grad() {
    let mut g = Generator::new(6);
    let a = MultiHeadAttention::new(4, 2, true, DType::F64, &mut g).unwrap();
    check_module(a, randn(&[2, 3, 4], &mut g), |a, x| {
        a.forward(x, true, None)
    });
}

#[test]
fn attention_padding_mask_grad() {
    let mut g = Generator::new(7);
    let a = MultiHeadAttention::new(4, 2, true, DType::F64, &mut g).unwrap();
    let pad = Tensor::from_vec(vec![0.0f64, 0.0, 1.0, 0.0, 1.0, 1.0], &[2, 3]).unwrap();
    check_module(a, randn(&[2, 3, 4], &mut g), move |a, x| {
        a.forward(x, false, Some(&pad))
    });
}

#[test]
fn attention_padded_keys_are_ignored() {
    let mut g = Generator::new(8);
    let a = MultiHeadAttention::new(4, 2, true, DType::F64, &mut g).unwrap();
    let x = randn(&[1, 3, 4], &mut g);
    let pad = Tensor::from_vec(vec![0.0f64, 0.0, 1.0], &[1, 3]).unwrap();
    let y1 = a.forward(&x, false, Some(&pad)).unwrap();
    let x2 = Tensor::concat(
        &[&x.narrow(1, 0, 2).unwrap(), &randn(&[1, 1, 4], &mut g)],
        1,
    )
    .unwrap();
    let y2 = a.forward(&x2, false, Some(&pad)).unwrap();
    let a1 = y1.narrow(1, 0, 2).unwrap().to_vec::<f64>().unwrap();
    let a2 = y2.narrow(1, 0, 2).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(a1, a2);
}

#[test]
fn transformer_block_grad() {
    let mut g = Generator::new(9);
    let b = TransformerBlock::new(4, 2, 2, Activation::Gelu, DType::F64, &mut g).unwrap();
    jitter(&b, &mut g);
    let names: Vec<String> = b.params().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"attn.qkv.weight".to_string()), "{names:?}");
    assert!(names.contains(&"mlp.fc.1.bias".to_string()), "{names:?}");
    check_module(b, randn(&[2, 3, 4], &mut g), |b, x| {
        b.forward(x, true, None)
    });
}

#[test]
fn embedding_grad() {
    let mut g = Generator::new(10);
    let e = Embedding::new(5, 3, DType::F64, &mut g).unwrap();
    let ids = Tensor::from_vec(vec![0i64, 3, 3, 1, 4, 0], &[2, 3]).unwrap();
    // x is unused by the lookup; the check covers the table (with repeated ids).
    check_module(e, randn(&[1], &mut g), move |e, x| {
        Ok(e.forward(&ids)?.add(&x.mul_scalar(0.0)?)?)
    });
    let p = LearnedPositionalEmbedding::new(4, 3, DType::F64, &mut g).unwrap();
    check_module(p, randn(&[2, 3, 3], &mut g), |p, x| p.forward(x));
}

#[test]
fn classification_head_grad() {
    let mut g = Generator::new(11);
    let h = ClassificationHead::new(4, 3, Pooling::Mean, true, DType::F64, &mut g).unwrap();
    check_module(h, randn(&[2, 3, 4], &mut g), |h, x| h.forward(x));
}
