//! Reductions on the GPU against the CPU, forward and backward, over several axis sets of a
//! non-contiguous view, and over short rows of contiguous and sliced tensors.

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
            // Rows of at most 32 elements (one thread per row on the GPU) of a contiguous
            // tensor and of a row-strided slice of one; the permuted view above covers the
            // reduced axis outermost (its elements a row apart) and split over two axes.
            let x = rand(&[40, 9], dtype, -2.0, 2.0, 300);
            for (what, view) in [
                ("contiguous", x.clone()),
                ("sliced", x.narrow(1, 1, 7).unwrap()),
            ] {
                for &(name, f) in &REDUCE[..4] {
                    let (yg, yc) = (
                        f(&view.to_device(dev).unwrap(), &[1]).unwrap(),
                        f(&view, &[1]).unwrap(),
                    );
                    compare(
                        &format!("{name} {dtype:?} {what} rows"),
                        &yg,
                        &yc,
                        10.0 * tol(dtype),
                    );
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
        // Values on a coarse grid (many ties), rows longer than a block, a NaN in some rows, f32,
        // f64 and bf16 (against the CPU's f32: the values are exact in bf16), and a transposed
        // view.
        for dtype in [DType::F32, DType::F64, DType::BF16] {
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
                    let cpu = if dtype == DType::BF16 {
                        view.to_dtype(DType::F32).unwrap()
                    } else {
                        view.clone()
                    };
                    let what = format!("{dtype:?} axis {axis}");
                    compare(
                        &format!("argmax {what}"),
                        &a,
                        &cpu.argmax(axis, false).unwrap(),
                        0.0,
                    );
                    compare(
                        &format!("argmin {what}"),
                        &b,
                        &cpu.argmin(axis, true).unwrap(),
                        0.0,
                    );
                }
            }
        }
    });
}

/// `Tensor::non_finite_probe` on a GPU: NaN exactly when one of the tensors holds a NaN or an
/// infinity, for f32 tensors spanning several 65,536-element chunks (the bad value in the last
/// chunk), f64, a contiguous view at an offset (a bad value just outside it does not count),
/// a strided view and a bf16 tensor (probed the composed way), integers skipped; the result is
/// a 0-d f64 on the device asked for; the f32 tensors of a device cost one launch.
#[test]
fn the_non_finite_probe_matches_the_cpu_and_launches_once() {
    on_each_gpu("non_finite_probe", |dev| {
        let base: Vec<f32> = (0..140_000).map(|i| (i % 97) as f32 - 48.0).collect();
        let with = |i: usize, v: f32| {
            let mut b = base.clone();
            b[i] = v;
            Tensor::from_vec(b, &[140_000]).unwrap()
        };
        let big_ok = Tensor::from_vec(base.clone(), &[140_000]).unwrap();
        let f64s = rand(&[3, 5], DType::F64, -1.0, 1.0, 1);
        let ids = Tensor::from_vec(vec![3i64, 4], &[2]).unwrap();
        // Rows 1..3 of a [4, 35_000] matrix: contiguous from element 35,000 to 105,000.
        let outside = with(34_999, f32::NAN).reshape(&[4, 35_000]).unwrap();
        let inside = with(104_999, f32::INFINITY).reshape(&[4, 35_000]).unwrap();
        let cases: Vec<(&str, Vec<Tensor>, bool)> = vec![
            (
                "all finite",
                vec![big_ok.clone(), f64s.clone(), ids.clone()],
                false,
            ),
            (
                "NaN in the last chunk",
                vec![f64s.clone(), with(139_999, f32::NAN)],
                true,
            ),
            (
                "-inf in the first element",
                vec![with(0, f32::NEG_INFINITY), big_ok.clone()],
                true,
            ),
            (
                "bad value outside an offset view",
                vec![outside.narrow(0, 1, 2).unwrap()],
                false,
            ),
            (
                "inf at the end of an offset view",
                vec![inside.narrow(0, 1, 2).unwrap()],
                true,
            ),
            ("inf in a strided view", vec![inside.t().unwrap()], true),
            ("NaN in f64", vec![f64s.log().unwrap()], true),
            (
                "inf in bf16",
                vec![with(7, f32::INFINITY).to_dtype(DType::BF16).unwrap()],
                true,
            ),
        ];
        for (what, ts, bad) in cases {
            for d in [dev, Device::Cpu] {
                let on: Vec<Tensor> = ts.iter().map(|t| t.to_device(dev).unwrap()).collect();
                let refs: Vec<&Tensor> = on.iter().collect();
                let p = Tensor::non_finite_probe(&refs, d).unwrap();
                assert_eq!(
                    (p.device(), p.dtype(), p.shape()),
                    (d, DType::F64, &[][..]),
                    "{what}"
                );
                let v = p.item().unwrap();
                assert_eq!(v.is_nan(), bad, "{what}: probe {v} on {d:?}");
                if !bad {
                    assert_eq!(v, 0.0, "{what}");
                }
            }
        }
        if let Device::Cuda(i) = dev {
            let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
            let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
            let ts: Vec<Tensor> = (0..6)
                .map(|k| {
                    rand(&[50 + k, 30], DType::F32, -1.0, 1.0, k as u64)
                        .to_device(dev)
                        .unwrap()
                })
                .collect();
            let refs: Vec<&Tensor> = ts.iter().collect();
            be.profile_start();
            let p = Tensor::non_finite_probe(&refs, dev).unwrap();
            let prof = be.profile_stop().unwrap();
            assert_eq!(p.item().unwrap(), 0.0);
            assert_eq!(prof.calls("reduce/nonfinite_multi_f32"), 1, "{prof:?}");
        }
    });
}
