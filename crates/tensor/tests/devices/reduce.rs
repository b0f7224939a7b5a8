//! Reductions on the GPU against the CPU, forward and backward, over several axis sets of a
//! non-contiguous view.

use selfsup_tensor::{DType, Device, Result, Tensor};

use crate::{compare, on_each_gpu, rand, tol};

type Reduce = (&'static str, fn(&Tensor, &[isize]) -> Result<Tensor>);

const REDUCE: &[Reduce] = &[
    ("sum", |x, a| x.sum(a, false)),
    ("mean", |x, a| x.mean(a, true)),
    ("max", |x, a| x.max(a, false)),
    ("min", |x, a| x.min(a, true)),
    ("var", |x, a| x.var(a, true, false)),
    ("logsumexp", |x, a| x.logsumexp(a, false)),
];

#[test]
fn reductions_match_the_cpu_forward_and_backward() {
    on_each_gpu("reduce", |dev| {
        for dtype in [DType::F32, DType::F64] {
            for (i, &(name, f)) in REDUCE.iter().enumerate() {
                for axes in [&[][..], &[0], &[2], &[0, 2], &[-1, 1]] {
                    let x = rand(&[6, 5, 300], dtype, -2.0, 2.0, 200 + i as u64);
                    let run = |d: Device| {
                        let leaf = x.to_device(d).unwrap().requires_grad_();
                        let y = f(&leaf.permute(&[1, 2, 0]).unwrap(), axes).unwrap();
                        let w = rand(y.shape(), dtype, -1.0, 1.0, 7).to_device(d).unwrap();
                        y.backward_with(Some(&w), false).unwrap();
                        (y, leaf.grad().unwrap())
                    };
                    let ((yg, gg), (yc, gc)) = (run(dev), run(Device::Cpu));
                    let what = format!("{name} {dtype:?} axes {axes:?}");
                    compare(&format!("{what} forward"), &yg, &yc, 10.0 * tol(dtype));
                    compare(&format!("{what} backward"), &gg, &gc, 10.0 * tol(dtype));
                }
            }
        }
    });
}

#[test]
fn broadcast_gradients_are_summed_back_on_the_gpu() {
    on_each_gpu("broadcast backward", |dev| {
        let a = rand(&[4, 1, 6], DType::F32, -1.0, 1.0, 1);
        let b = rand(&[5, 1], DType::F32, -1.0, 1.0, 2);
        let run = |d: Device| {
            let (la, lb) = (
                a.to_device(d).unwrap().requires_grad_(),
                b.to_device(d).unwrap().requires_grad_(),
            );
            la.mul(&lb).unwrap().sum_all().unwrap().backward().unwrap();
            (la.grad().unwrap(), lb.grad().unwrap())
        };
        let ((ga, gb), (ca, cb)) = (run(dev), run(Device::Cpu));
        compare("d/da", &ga, &ca, tol(DType::F32));
        compare("d/db", &gb, &cb, tol(DType::F32));
    });
}

#[test]
fn argmax_and_argmin_match_the_cpu() {
    on_each_gpu("argmax", |dev| {
        // Values on a coarse grid (many ties), rows longer than a block, a NaN in some rows, f32
        // and f64, and a transposed view.
        for dtype in [DType::F32, DType::F64] {
            let mut v: Vec<f64> = rand(&[6, 700], DType::F64, -4.0, 4.0, 12)
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .map(|x| x.round())
                .collect();
            v[3 * 700 + 650] = f64::NAN;
            v[3 * 700 + 651] = f64::NAN;
            v[5 * 700 + 2] = f64::NAN;
            let x = Tensor::from_vec(v, &[6, 700])
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for view in [x.clone(), x.t().unwrap()] {
                for axis in [0, 1, -1] {
                    let g = view.to_device(dev).unwrap();
                    let (a, b) = (
                        g.argmax(axis, false).unwrap(),
                        g.argmin(axis, true).unwrap(),
                    );
                    assert_eq!((a.device(), a.dtype()), (dev, DType::I64));
                    compare("argmax", &a, &view.argmax(axis, false).unwrap(), 0.0);
                    compare("argmin", &b, &view.argmin(axis, true).unwrap(), 0.0);
                }
            }
        }
    });
}
