//! Convolution, batch norm and pooling on the GPU against the CPU, forward and backward.

use selfsup_tensor::{no_grad, Conv2dParams, DType, Device, Tensor};

use crate::{check, compare, leaf, max_diff, on_each_gpu, rand};

#[test]
fn conv2d_matches_the_cpu_for_strides_padding_dilation_and_groups() {
    on_each_gpu("conv2d", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
            let cases = [
                (
                    Conv2dParams {
                        padding: (1, 1),
                        ..Default::default()
                    },
                    1,
                ),
                (
                    Conv2dParams {
                        stride: (2, 2),
                        padding: (1, 1),
                        ..Default::default()
                    },
                    1,
                ),
                (
                    Conv2dParams {
                        stride: (1, 2),
                        padding: (2, 0),
                        dilation: (2, 1),
                        groups: 1,
                    },
                    1,
                ),
                (
                    Conv2dParams {
                        padding: (1, 1),
                        groups: 2,
                        ..Default::default()
                    },
                    2,
                ),
            ];
            for (i, (p, groups)) in cases.into_iter().enumerate() {
                let x = rand(&[3, 4, 9, 8], dtype, -1.0, 1.0, 10 + i as u64);
                let w = rand(&[6, 4 / groups, 3, 3], dtype, -0.5, 0.5, 20 + i as u64);
                let b = rand(&[6], dtype, -0.5, 0.5, 30 + i as u64);
                check(
                    &format!("conv2d {dtype:?} {p:?}"),
                    dev,
                    &[&x, &w, &b],
                    &|v| v[0].conv2d(&v[1], Some(&v[2]), p).unwrap(),
                    tol,
                );
            }
        }
    });
}

/// col2im (the input gradient) covers several small planes per row of its launch and runs of
/// 4 elements per thread: 339 planes of 5 x 5 make two rows, the second of 11 planes (275
/// elements, so a partial last run), runs crossing planes and images; 3 x 3 at stride 1 and 2
/// and a 2 x 2 kernel (the unrolled unit-stride, unrolled strided and general tap loops).
#[test]
fn conv2d_input_gradient_over_many_small_planes_matches_the_cpu() {
    on_each_gpu("conv2d small planes", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
            for (i, (k, stride)) in [(3, 1), (3, 2), (2, 1)].into_iter().enumerate() {
                let p = Conv2dParams {
                    stride: (stride, stride),
                    padding: (1, 1),
                    ..Default::default()
                };
                let x = rand(&[3, 113, 5, 5], dtype, -1.0, 1.0, 70 + i as u64);
                let w = rand(&[2, 113, k, k], dtype, -0.5, 0.5, 80 + i as u64);
                check(
                    &format!("conv2d {dtype:?} {k}x{k} {p:?}"),
                    dev,
                    &[&x, &w],
                    &|v| v[0].conv2d(&v[1], None, p).unwrap(),
                    tol,
                );
            }
        }
    });
}

/// At bf16 matmul precision the GPU convolution writes its columns and its output gradient in
/// bf16 directly (no f32 copy, no separate cast) and keeps them for the backward; it gives the
/// CPU's convolution at the same precision (the same operands rounded the same way, only the
/// summation order differs), forward and every gradient, for strides, dilation, groups, a
/// strided input, with and without a bias and with only some operands needing a gradient; and
/// it is not the f32 convolution (the rounding happened). The profile shows the bf16 kernels ran.
#[test]
fn conv2d_at_bf16_precision_writes_bf16_columns_and_matches_the_cpu() {
    use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
    on_each_gpu("conv2d bf16", |dev| {
        if let Device::Cuda(i) = dev {
            let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
            let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
            let x = rand(&[2, 3, 6, 5], DType::F32, -1.0, 1.0, 1)
                .to_device(dev)
                .unwrap()
                .requires_grad_();
            let w = rand(&[4, 3, 3, 3], DType::F32, -1.0, 1.0, 2)
                .to_device(dev)
                .unwrap()
                .requires_grad_();
            be.profile_start();
            with_matmul_precision(MatmulPrecision::Bf16, || {
                let y = x.conv2d(&w, None, Conv2dParams::default()).unwrap();
                y.sum(&[0, 1, 2, 3], false).unwrap().backward().unwrap();
            });
            let prof = be.profile_stop().unwrap();
            for k in [
                "conv/im2col_bf16_f32",
                "conv/conv_dy_t_bf16_f32",
                "cublas gemm BF16->BF16 27x4x24",
                "conv/col2im_bf16_f32",
            ] {
                assert!(
                    prof.kernels.iter().any(|p| p.name == k),
                    "{k} did not run: {prof:?}"
                );
            }
        }
        // (params, groups, bias, grads of x/w/b, strided x, kernel size)
        let cases = [
            (
                Conv2dParams {
                    padding: (1, 1),
                    ..Default::default()
                },
                1,
                true,
                [true, true, true],
                false,
                3,
            ),
            (
                Conv2dParams {
                    stride: (2, 2),
                    padding: (1, 1),
                    ..Default::default()
                },
                1,
                false,
                [true, true, false],
                true,
                3,
            ),
            (
                Conv2dParams {
                    stride: (1, 2),
                    padding: (2, 0),
                    dilation: (2, 1),
                    groups: 1,
                },
                1,
                true,
                [false, true, true],
                false,
                3,
            ),
            (
                Conv2dParams {
                    padding: (1, 1),
                    groups: 2,
                    ..Default::default()
                },
                2,
                true,
                [true, false, true],
                false,
                3,
            ),
            (
                Conv2dParams {
                    padding: (1, 1),
                    groups: 2,
                    ..Default::default()
                },
                2,
                false,
                [true, true, false],
                true,
                3,
            ),
            (
                Conv2dParams {
                    stride: (2, 2),
                    ..Default::default()
                },
                1,
                true,
                [true, true, true],
                true,
                1,
            ),
            (
                Conv2dParams::default(),
                1,
                false,
                [true, true, false],
                false,
                1,
            ),
        ];
        for (i, (p, groups, bias, grads, strided, ks)) in cases.into_iter().enumerate() {
            let seed = 40 + 4 * i as u64;
            let x = if strided {
                rand(&[3, 4, 8, 9], DType::F32, -1.0, 1.0, seed)
                    .transpose(2, 3)
                    .unwrap()
            } else {
                rand(&[3, 4, 9, 8], DType::F32, -1.0, 1.0, seed)
            };
            let w = rand(&[6, 4 / groups, ks, ks], DType::F32, -1.0, 1.0, seed + 1);
            let b = rand(&[6], DType::F32, -1.0, 1.0, seed + 2);
            let run = |d: Device, prec: MatmulPrecision| {
                with_matmul_precision(prec, || {
                    let (lx, lw, lb) = (
                        leaf(&x, d, grads[0]),
                        leaf(&w, d, grads[1]),
                        leaf(&b, d, grads[2]),
                    );
                    let y = lx.conv2d(&lw, bias.then_some(&lb), p).unwrap();
                    let seed_grad = rand(y.shape(), DType::F32, -1.0, 1.0, seed + 3);
                    y.backward_with(Some(&seed_grad.to_device(d).unwrap()), false)
                        .unwrap();
                    (y, [&lx, &lw, &lb].map(|t| t.grad()))
                })
            };
            let (y, gg) = run(dev, MatmulPrecision::Bf16);
            let (yc, cg) = run(Device::Cpu, MatmulPrecision::Bf16);
            let what = format!(
                "bf16 conv2d {ks}x{ks} {p:?} bias {bias} grads {grads:?} strided {strided}"
            );
            compare(&format!("{what}: forward"), &y, &yc, 1e-4);
            for (k, name) in ["dx", "dW", "db"].iter().enumerate() {
                let wanted = grads[k] && (k < 2 || bias);
                assert_eq!(gg[k].is_some(), wanted, "{what}: {name} present");
                if let (Some(a), Some(c)) = (&gg[k], &cg[k]) {
                    compare(&format!("{what}: {name}"), a, c, 1e-4);
                }
            }
            let (y32, _) = run(Device::Cpu, MatmulPrecision::F32);
            let diff = max_diff(&y, &y32);
            assert!(
                diff > 1e-3,
                "{what}: the bf16 conv equals the f32 one ({diff})"
            );
        }
    });
}

/// The arrangements of the GPU convolution's products, against the CPU, in f64 (tight: a
/// wrong slice, a dropped tail or a misplaced image shows) and at bf16 precision, with and
/// without them (`GpuFusion::Composed`): per-image forward GEMMs writing `[n, c_out, oh, ow]`
/// in place (one group, no bias, a multiple of 8 and at least 64 positions an image: 32x32
/// here, not 31x31), and the weight gradient's reduction over `n·oh·ow` columns cut into
/// slices (few output tiles for the GPU's SMs: the emulator reports an H200's 132), evenly
/// (8,192 columns: 4 slices) and with a ragged tail (6,727 = 7 · 31 · 31: 3 slices of 2,242
/// and one column). The profile names the GEMMs that ran, so a silent fallback fails (only
/// their presence: tests running at once on the device share its profile).
#[test]
fn conv2d_per_image_forward_and_sliced_weight_gradient_match_the_cpu() {
    use selfsup_tensor::ops::fusion::{with_gpu_fusion, GpuFusion};
    use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
    on_each_gpu("conv2d arrangements", |dev| {
        let Device::Cuda(i) = dev else { return };
        let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
        assert!(be.multiprocessors() >= 1);
        let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
        let pad = Conv2dParams {
            padding: (1, 1),
            ..Default::default()
        };
        // (images, side, forward GEMM, weight-gradient GEMM) of a 2 -> 3 channel 3x3 conv on
        // 132 SMs, named `batch x m x k x n`: the forward per image (3 x 18 x side²) at 32x32,
        // over all columns at 31x31; the weight gradient in slices of the columns.
        let cases = [
            (
                8,
                32,
                "cublas gemm {t} 8 x 3x18x1024",
                "cublas gemm {t} 4 x 3x2048x18",
            ),
            (
                7,
                31,
                "cublas gemm {t} 3x18x6727",
                "cublas gemm {t} 3 x 3x2242x18",
            ),
        ];
        for (n, side, fwd, dw) in cases {
            let x = rand(&[n, 2, side, side], DType::F64, -1.0, 1.0, 60 + n as u64);
            let w = rand(&[3, 2, 3, 3], DType::F64, -1.0, 1.0, 61);
            let dy = rand(&[n, 3, side, side], DType::F64, -1.0, 1.0, 62);
            for (prec, dtype, tol) in [
                (MatmulPrecision::F32, DType::F64, 1e-10),
                (MatmulPrecision::Bf16, DType::F32, 1e-4),
            ] {
                let (x, w, dy) = (
                    x.to_dtype(dtype).unwrap(),
                    w.to_dtype(dtype).unwrap(),
                    dy.to_dtype(dtype).unwrap(),
                );
                let run = |d: Device, mode: GpuFusion| {
                    with_gpu_fusion(mode, || {
                        with_matmul_precision(prec, || {
                            let (lx, lw) = (leaf(&x, d, true), leaf(&w, d, true));
                            let y = lx.conv2d(&lw, None, pad).unwrap();
                            y.backward_with(Some(&dy.to_device(d).unwrap()), false)
                                .unwrap();
                            [y, lx.grad().unwrap(), lw.grad().unwrap()]
                        })
                    })
                };
                let cpu = run(Device::Cpu, GpuFusion::Fused);
                be.profile_start();
                let gpu = run(dev, GpuFusion::Fused);
                let prof = be.profile_stop().unwrap();
                let plain = run(dev, GpuFusion::Composed);
                let t = if prec == MatmulPrecision::Bf16 {
                    "BF16"
                } else {
                    "F64"
                };
                for k in [fwd, dw] {
                    let k = k.replace("{t}", t);
                    assert!(
                        prof.kernels.iter().any(|p| p.name == k),
                        "{k} did not run: {:?}",
                        prof.kernels.iter().map(|p| &p.name).collect::<Vec<_>>()
                    );
                }
                for (j, name) in ["y", "dx", "dW"].iter().enumerate() {
                    let what = format!("{n} images {side}x{side} {prec:?}: {name}");
                    // At bf16 the column gradient is rounded to bf16 before col2im: where the
                    // two devices' f32 sums differ in their last bit next to a rounding
                    // boundary, an input-gradient term differs by one bf16 step.
                    let tol = if j == 1 && prec == MatmulPrecision::Bf16 {
                        3e-2
                    } else {
                        tol
                    };
                    compare(&format!("{what} (sliced)"), &gpu[j], &cpu[j], tol);
                    compare(&format!("{what} (single GEMMs)"), &plain[j], &cpu[j], tol);
                }
            }
        }
    });
}

#[test]
fn batch_norm_matches_the_cpu_in_both_modes() {
    on_each_gpu("batch_norm", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F64 { 1e-9 } else { 1e-4 };
            let x = rand(&[5, 3, 4, 4], dtype, -2.0, 2.0, 1);
            let w = rand(&[3], dtype, 0.5, 1.5, 2);
            let b = rand(&[3], dtype, -0.5, 0.5, 3);
            for relu in [false, true] {
                check(
                    &format!("batch_norm_train {dtype:?} relu {relu}"),
                    dev,
                    &[&x, &w, &b],
                    &|v| {
                        v[0].batch_norm_train(Some(&v[1]), Some(&v[2]), 1e-5, relu)
                            .unwrap()
                            .0
                    },
                    tol,
                );
            }
            // More values per channel than one block of the sums folds (several chunks), and
            // planes of 49 (a ResNet's last stage at 28 x 28: runs of 4 cross from one plane
            // and channel into the next, and 735 elements end in a partial run).
            for (what, shape, seed) in [
                ("many values", [9, 2, 30, 20], 6),
                ("planes of 49", [3, 5, 7, 7], 10),
            ] {
                let x = rand(&shape, dtype, -2.0, 2.0, seed);
                let (w, b) = (
                    rand(&[shape[1]], dtype, 0.5, 1.5, seed + 1),
                    rand(&[shape[1]], dtype, -0.5, 0.5, seed + 2),
                );
                check(
                    &format!("batch_norm_train {what} {dtype:?}"),
                    dev,
                    &[&x, &w, &b],
                    &|v| {
                        v[0].batch_norm_train(Some(&v[1]), Some(&v[2]), 1e-5, true)
                            .unwrap()
                            .0
                    },
                    tol,
                );
            }
            // A `[N, C]` input (S = 1), no affine part.
            let flat = rand(&[40, 6], dtype, -2.0, 2.0, 9);
            check(
                &format!("batch_norm_train [N, C] no affine {dtype:?}"),
                dev,
                &[&flat],
                &|v| v[0].batch_norm_train(None, None, 1e-5, false).unwrap().0,
                tol,
            );
            let m = rand(&[3], dtype, -0.5, 0.5, 4);
            let var = rand(&[3], dtype, 0.5, 1.5, 5);
            check(
                &format!("batch_norm_eval {dtype:?}"),
                dev,
                &[&x, &w, &b, &m, &var],
                &|v| {
                    v[0].batch_norm_eval(&v[3], &v[4], Some(&v[1]), Some(&v[2]), 1e-5, false)
                        .unwrap()
                },
                tol,
            );
            // Inference (nothing needs a gradient): the fused kernel, with and without the
            // affine part and the ReLU, on a view.
            let _ng = no_grad();
            let view = x.transpose(2, 3).unwrap();
            for (affine, relu) in [(true, false), (false, true), (true, true)] {
                let run = |d| {
                    let (w, b) = (w.to_device(d).unwrap(), b.to_device(d).unwrap());
                    view.to_device(d)
                        .unwrap()
                        .batch_norm_eval(
                            &m.to_device(d).unwrap(),
                            &var.to_device(d).unwrap(),
                            affine.then_some(&w),
                            affine.then_some(&b),
                            1e-5,
                            relu,
                        )
                        .unwrap()
                };
                compare(
                    &format!("batch_norm_eval inference {dtype:?} affine {affine} relu {relu}"),
                    &run(dev),
                    &run(Device::Cpu),
                    tol,
                );
            }
        }
    });
}

/// More channels than a grid's y dimension holds (65,535): the per-channel sums walk the
/// channels beyond it. In f64: with three values a channel, some variances are tiny and f32
/// rounding would swamp the comparison.
#[test]
fn batch_norm_with_more_channels_than_grid_rows_matches_the_cpu() {
    on_each_gpu("batch_norm", |dev| {
        let x = rand(&[3, 65_541], DType::F64, -2.0, 2.0, 11);
        check(
            "batch_norm_train 65,541 channels",
            dev,
            &[&x],
            &|v| v[0].batch_norm_train(None, None, 1e-5, true).unwrap().0,
            1e-9,
        );
    });
}

/// Every pooling on the GPU gives the CPU's values bit for bit, forward and backward: the
/// backward kernels gather each input's gradient over the windows holding it, in the order the
/// CPU's scatter adds it (no atomics). Overlapping windows (stride below the kernel), padding,
/// adaptive bins that overlap (more bins than inputs) or do not divide the input, a global
/// pool, a strided input, and inputs with many ties (max pooling routes each window's gradient
/// to its first maximum) and a NaN.
#[test]
fn poolings_match_the_cpu_bit_for_bit() {
    on_each_gpu("pooling", |dev| {
        for dtype in [DType::F32, DType::F64] {
            // Multiples of 1/4 in [-1, 1]: nine values, so most 3x3 windows hold ties.
            let quarters: Vec<f64> = rand(&[2, 3, 9, 8], DType::F64, -1.0, 1.0, 6)
                .to_vec_f64()
                .unwrap()
                .iter()
                .map(|v| (v * 4.0).round() / 4.0)
                .collect();
            let ties = Tensor::from_vec(quarters, &[2, 3, 9, 8])
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let x = rand(&[2, 3, 9, 8], dtype, -1.0, 1.0, 7);
            let mut with_nan = x.to_vec_f64().unwrap();
            with_nan[13] = f64::NAN;
            let with_nan = Tensor::from_vec(with_nan, &[2, 3, 9, 8])
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            // [2, 3, 8, 9] read through a transposed view.
            let strided = rand(&[2, 3, 8, 9], dtype, -1.0, 1.0, 8);
            type Pool = Box<dyn Fn(&Tensor) -> Tensor>;
            let pools: [(&str, Pool); 10] = [
                (
                    "max 3x3 stride 2 pad 1",
                    Box::new(|v| v.max_pool2d((3, 3), (2, 2), (1, 1)).unwrap()),
                ),
                (
                    "max 3x2 stride 1 pad (1, 0)",
                    Box::new(|v| v.max_pool2d((3, 2), (1, 1), (1, 0)).unwrap()),
                ),
                (
                    "max 2x2 stride 2",
                    Box::new(|v| v.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap()),
                ),
                (
                    "avg 3x2 stride 2 pad 1, padding counted",
                    Box::new(|v| v.avg_pool2d((3, 2), (2, 2), (1, 1), true).unwrap()),
                ),
                (
                    "avg 3x3 stride (1, 2) pad (1, 0), padding not counted",
                    Box::new(|v| v.avg_pool2d((3, 3), (1, 2), (1, 0), false).unwrap()),
                ),
                (
                    "avg 3x3 stride 1 pad 1",
                    Box::new(|v| v.avg_pool2d((3, 3), (1, 1), (1, 1), false).unwrap()),
                ),
                (
                    "adaptive to 4x3",
                    Box::new(|v| v.adaptive_avg_pool2d((4, 3)).unwrap()),
                ),
                (
                    "adaptive to 13x11 (overlapping bins)",
                    Box::new(|v| v.adaptive_avg_pool2d((13, 11)).unwrap()),
                ),
                ("global", Box::new(|v| v.global_avg_pool2d().unwrap())),
                (
                    "avg (h+1)x(w+1) stride 2 pad 1: one window over the plane, padding counted",
                    Box::new(|v| {
                        let [_, _, h, w] = *v.shape() else { panic!() };
                        v.avg_pool2d((h + 1, w + 1), (2, 2), (1, 1), true).unwrap()
                    }),
                ),
            ];
            for (name, pool) in &pools {
                for (input, x) in [("ties", &ties), ("random", &x), ("a NaN", &with_nan)] {
                    check(
                        &format!("{name} {dtype:?} on {input}"),
                        dev,
                        &[x],
                        &|v| pool(&v[0]),
                        0.0,
                    );
                }
                check(
                    &format!("{name} {dtype:?} on a strided view"),
                    dev,
                    &[&strided],
                    &|v| pool(&v[0].transpose(2, 3).unwrap()),
                    0.0,
                );
            }
        }
    });
}
