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
