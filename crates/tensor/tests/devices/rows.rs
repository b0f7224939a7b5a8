//! Row ops on the GPU against the CPU: softmax, log-softmax, cross-entropy (ignore index,
//! label smoothing), layer norm, linear, attention.

use selfsup_tensor::ops::loss::CrossEntropy;
use selfsup_tensor::{DType, Device, Tensor};

use crate::{check, compare, max_diff, on_each_gpu, rand, run, tol};

#[test]
fn softmax_and_log_softmax_match_the_cpu_on_any_axis() {
    on_each_gpu("softmax", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let x = rand(&[4, 7, 300], dtype, -5.0, 5.0, 1);
            for axis in [-1, 1, 0] {
                check(
                    &format!("softmax {dtype:?} axis {axis}"),
                    dev,
                    &[&x],
                    &|v| v[0].softmax(axis).unwrap(),
                    tol(dtype),
                );
                check(
                    &format!("log_softmax {dtype:?} axis {axis}"),
                    dev,
                    &[&x],
                    &|v| v[0].log_softmax(axis).unwrap(),
                    tol(dtype),
                );
            }
        }
    });
}

#[test]
fn cross_entropy_matches_the_cpu_with_ignore_and_smoothing() {
    on_each_gpu("cross_entropy", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let x = rand(&[9, 13], dtype, -3.0, 3.0, 2);
            let t = Tensor::from_vec(vec![0i64, 12, 5, -100, 3, 3, 7, -100, 1], &[9]).unwrap();
            for opts in [
                CrossEntropy::default(),
                CrossEntropy {
                    ignore_index: Some(-100),
                    label_smoothing: 0.1,
                    mean: true,
                },
                CrossEntropy {
                    ignore_index: Some(-100),
                    label_smoothing: 0.0,
                    mean: false,
                },
            ] {
                let tdev = t.to_device(dev).unwrap();
                if opts.ignore_index.is_none() {
                    // Without an ignore index, -100 is out of range: an error where the
                    // targets are on the host, a NaN loss where they stay on the device
                    // (they are not read back).
                    let xd = x.to_device(dev).unwrap();
                    assert!(xd.cross_entropy_with(&t, &opts).is_err());
                    let y = xd.cross_entropy_with(&tdev, &opts).unwrap();
                    assert!(
                        y.item().unwrap().is_nan(),
                        "out-of-range target on the device"
                    );
                    continue;
                }
                // Targets on the device (counted there) and on the host (checked there).
                for (where_, targets) in [("device", &tdev), ("host", &t)] {
                    let f_dev = |v: &[Tensor]| v[0].cross_entropy_with(targets, &opts).unwrap();
                    let f_cpu = |v: &[Tensor]| v[0].cross_entropy_with(&t, &opts).unwrap();
                    let ((y, g), (yc, gc)) =
                        (run(dev, &[&x], &f_dev), run(Device::Cpu, &[&x], &f_cpu));
                    let what = format!("ce {dtype:?} {opts:?} {where_} targets");
                    compare(&what, &y, &yc, tol(dtype));
                    compare(&format!("{what} grad"), &g[0], &gc[0], tol(dtype));
                }
                // u32 targets on the device.
                let tu = Tensor::from_vec(vec![0u32, 12, 5, 4, 3, 3, 7, 2, 1], &[9]).unwrap();
                let plain = CrossEntropy::default();
                let tud = tu.to_device(dev).unwrap();
                let f_dev = |v: &[Tensor]| v[0].cross_entropy_with(&tud, &plain).unwrap();
                let f_cpu = |v: &[Tensor]| v[0].cross_entropy_with(&tu, &plain).unwrap();
                let ((y, g), (yc, gc)) = (run(dev, &[&x], &f_dev), run(Device::Cpu, &[&x], &f_cpu));
                compare("ce u32 targets", &y, &yc, tol(dtype));
                compare("ce u32 targets grad", &g[0], &gc[0], tol(dtype));
            }
        }
    });
}

/// Rows far wider than a block (each thread folds a dozen logits into its running log-sum-exp,
/// then the block merges 256 of them): rows whose max grows at every element (an ascending
/// ramp), never after the first (descending), large logits, and masked (-inf) logits, with
/// and without label smoothing, against the CPU.
#[test]
fn cross_entropy_over_wide_rows_matches_the_cpu() {
    on_each_gpu("cross_entropy wide rows", |dev| {
        let c = 3001;
        let mut v = Vec::with_capacity(5 * c);
        let noise = rand(&[5 * c], DType::F64, -3.0, 3.0, 7)
            .to_vec_f64()
            .unwrap();
        for r in 0..5 {
            for j in 0..c {
                let e = noise[r * c + j];
                v.push(match r {
                    1 => -50.0 + 100.0 * j as f64 / c as f64 + 0.01 * e,
                    2 => 50.0 - 100.0 * j as f64 / c as f64 + 0.01 * e,
                    3 if j % 7 == 3 => f64::NEG_INFINITY,
                    4 => 25.0 * e,
                    _ => e,
                });
            }
        }
        let t = Tensor::from_vec(vec![5i64, 2999, 0, 12, 1500], &[5]).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::from_vec(v.clone(), &[5, c])
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for smoothing in [0.0, 0.1] {
                let opts = CrossEntropy {
                    label_smoothing: smoothing,
                    ..CrossEntropy::default()
                };
                // Smoothing averages every logit, so a masked row's loss is infinite on both.
                let rows = if smoothing > 0.0 {
                    vec![0, 1, 2, 4]
                } else {
                    (0..5).collect()
                };
                let idx = Tensor::from_vec(rows.iter().map(|&r| r as i64).collect(), &[rows.len()])
                    .unwrap();
                let xs = x.index_select(0, &idx).unwrap();
                let ts = t.index_select(0, &idx).unwrap();
                let tdev = ts.to_device(dev).unwrap();
                let f_dev = |w: &[Tensor]| w[0].cross_entropy_with(&tdev, &opts).unwrap();
                let f_cpu = |w: &[Tensor]| w[0].cross_entropy_with(&ts, &opts).unwrap();
                let ((y, g), (yc, gc)) =
                    (run(dev, &[&xs], &f_dev), run(Device::Cpu, &[&xs], &f_cpu));
                let what = format!("wide ce {dtype:?} smoothing {smoothing}");
                compare(&what, &y, &yc, tol(dtype));
                compare(&format!("{what} grad"), &g[0], &gc[0], tol(dtype));
            }
        }
    });
}

#[test]
fn layer_norm_linear_and_attention_match_the_cpu() {
    on_each_gpu("layer_norm / linear / attention", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let t = 10.0 * tol(dtype);
            let x = rand(&[6, 32], dtype, -2.0, 2.0, 3);
            let w = rand(&[32], dtype, 0.5, 1.5, 4);
            let b = rand(&[32], dtype, -0.5, 0.5, 5);
            check(
                &format!("layer_norm {dtype:?}"),
                dev,
                &[&x, &w, &b],
                &|v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5).unwrap(),
                t,
            );
            // The fused kernels: rows longer than a block, many rows (several row chunks of
            // the weight-gradient kernel), a view, no affine part, weight only.
            let long = rand(&[3, 300, 7], dtype, -2.0, 2.0, 13)
                .permute(&[0, 2, 1])
                .unwrap();
            let wl = rand(&[300], dtype, 0.5, 1.5, 14);
            check(
                &format!("layer_norm long rows, weight only {dtype:?}"),
                dev,
                &[&long, &wl],
                &|v| v[0].layer_norm(Some(&v[1]), None, 1e-5).unwrap(),
                t,
            );
            let many = rand(&[150, 40], dtype, -2.0, 2.0, 15);
            let (wm, bm) = (
                rand(&[40], dtype, 0.5, 1.5, 16),
                rand(&[40], dtype, -0.5, 0.5, 17),
            );
            check(
                &format!("layer_norm many rows {dtype:?}"),
                dev,
                &[&many, &wm, &bm],
                &|v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5).unwrap(),
                t,
            );
            check(
                &format!("layer_norm no affine {dtype:?}"),
                dev,
                &[&many],
                &|v| v[0].layer_norm(None, None, 1e-5).unwrap(),
                t,
            );
            let lw = rand(&[16, 32], dtype, -0.3, 0.3, 6);
            let lb = rand(&[16], dtype, -0.3, 0.3, 7);
            check(
                &format!("linear {dtype:?}"),
                dev,
                &[&x, &lw, &lb],
                &|v| v[0].linear(&v[1], Some(&v[2])).unwrap(),
                t,
            );
            let qkv = rand(&[2, 9, 3 * 16], dtype, -1.0, 1.0, 8);
            for causal in [false, true] {
                check(
                    &format!("attention {dtype:?} causal {causal}"),
                    dev,
                    &[&qkv],
                    &|v| v[0].attention_qkv(4, causal).unwrap(),
                    t,
                );
            }
        }
    });
}

/// The fused attention kernels: every head-width bound (dh 5 -> 16, 20 -> 32, 64, 100 -> 128),
/// sequences longer than a block of 64 query rows and not a multiple of the key tile, one head
/// and several, causal or not, a strided input; and a head wider than the kernels take (the
/// composed form).
#[test]
fn fused_attention_matches_the_cpu_at_every_head_width() {
    on_each_gpu("fused attention", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let t = 10.0 * tol(dtype);
            for (b, seq, heads, dh, seed) in [
                (2, 9, 3, 5, 21),
                (1, 70, 2, 20, 22),
                (2, 33, 1, 64, 23),
                (1, 67, 1, 100, 24),
                (1, 5, 1, 130, 25),
            ] {
                let qkv = rand(&[b, seq, 3 * heads * dh], dtype, -1.5, 1.5, seed);
                for causal in [false, true] {
                    check(
                        &format!(
                            "attention {dtype:?} b {b} T {seq} H {heads} dh {dh} causal {causal}"
                        ),
                        dev,
                        &[&qkv],
                        &|v| v[0].attention_qkv(heads, causal).unwrap(),
                        t,
                    );
                }
            }
            // A strided input: the packed projections as a transposed view.
            let base = rand(&[2, 3 * 2 * 8, 12], dtype, -1.5, 1.5, 26);
            check(
                &format!("attention {dtype:?} strided input"),
                dev,
                &[&base],
                &|v| {
                    v[0].transpose(1, 2)
                        .unwrap()
                        .attention_qkv(2, true)
                        .unwrap()
                },
                t,
            );
        }
    });
}

/// The tensor-core attention (`attention_mma.cu`: bf16 operands, f32 accumulation), which f32
/// attention uses on the GPU when the matmul precision is bf16: both head-width bounds (dh 5
/// and 20 -> 32, 64), sequences longer than a block of 64 rows and not a multiple of the
/// 64-row tile (150: tiles that need no mask in all three kernels, causal or not, and three
/// row blocks, which run in reverse order when causal), one head and several, causal or not,
/// a strided input, head widths that load by float4 (16, 20, 64) and by element (5). Compared with the CPU's
/// f32 attention within bf16 rounding (operands and probabilities carry 8 significant bits),
/// and checked to differ from the f32 CUDA-core kernels' result (so the bf16 kernels ran).
#[test]
fn tensor_core_attention_matches_the_cpu_within_bf16_rounding() {
    use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
    on_each_gpu("tensor-core attention", |dev| {
        let bf16_tol = 2e-2;
        for (b, seq, heads, dh, seed, strided) in [
            (2, 9, 3, 5, 31, false),
            (1, 70, 2, 20, 32, false),
            (2, 67, 1, 64, 33, false),
            (1, 40, 2, 16, 34, true),
            (1, 150, 2, 64, 35, false),
        ] {
            let qkv = if strided {
                rand(&[b, 3 * heads * dh, seq], DType::F32, -1.5, 1.5, seed)
            } else {
                rand(&[b, seq, 3 * heads * dh], DType::F32, -1.5, 1.5, seed)
            };
            for causal in [false, true] {
                let f = |v: &[Tensor]| {
                    let x = if strided {
                        v[0].transpose(1, 2).unwrap()
                    } else {
                        v[0].clone()
                    };
                    x.attention_qkv(heads, causal).unwrap()
                };
                let name = format!(
                    "tensor-core attention b {b} T {seq} H {heads} dh {dh} causal {causal}"
                );
                let ((y, g), (yc, gc)) = with_matmul_precision(MatmulPrecision::Bf16, || {
                    (run(dev, &[&qkv], &f), run(Device::Cpu, &[&qkv], &f))
                });
                compare(&format!("{name} forward"), &y, &yc, bf16_tol);
                compare(&format!("{name} gradient"), &g[0], &gc[0], bf16_tol);
                // Not the f32 kernels' result: the difference is bf16 rounding, far above f32's.
                let (y32, _) = run(dev, &[&qkv], &f);
                let diff = max_diff(&y, &y32);
                assert!(
                    diff > 1e-4,
                    "{name}: the bf16 result equals the f32 one ({diff})"
                );
                eprintln!("{name}: max |bf16 - f32| {diff:.2e}");
            }
        }
    });
}

/// On a GPU a LayerNorm's backward adds its input's gradient from the input's other readers
/// (a residual stream's, here `x + branch(ln(x))`) into the input gradient it writes
/// (`BackwardOp::folds`): the gradients are the bits of autograd's own add (the fusions off,
/// `GpuFusion::Composed`) on the same GPU, and the CPU's, in f32 and f64, with and without
/// affine parameters, for `layer_norm` and for `layer_norm_as` writing a bf16 operand; with no
/// other reader there is nothing to add.
#[test]
fn layer_norm_backward_adds_the_residual_gradient_as_autograd_would() {
    use selfsup_tensor::ops::fusion::{with_gpu_fusion, GpuFusion};
    on_each_gpu("layer_norm fold", |dev| {
        for (dtype, out) in [
            (DType::F32, DType::F32),
            (DType::F64, DType::F64),
            (DType::F32, DType::BF16),
        ] {
            for (affine, residual) in [(true, true), (false, true), (true, false)] {
                let x = rand(&[37, 300], dtype, -2.0, 2.0, 11);
                let w = rand(&[300], dtype, 0.5, 1.5, 12);
                let b = rand(&[300], dtype, -0.5, 0.5, 13);
                let m = rand(&[300], dtype, -1.0, 1.0, 14);
                let g = rand(&[37, 300], dtype, -1.0, 1.0, 15);
                // x + (ln(x) * m), seeded with g: x's gradient is g plus the norm's.
                let go = |d: Device, fusion: GpuFusion| {
                    with_gpu_fusion(fusion, || {
                        let on = |t: &Tensor| t.to_device(d).unwrap().requires_grad_();
                        let (x, w, b) = (on(&x), on(&w), on(&b));
                        let (wo, bo) = if affine {
                            (Some(&w), Some(&b))
                        } else {
                            (None, None)
                        };
                        let h = x
                            .layer_norm_as(wo, bo, 1e-5, out)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap()
                            .mul(&m.to_device(d).unwrap())
                            .unwrap();
                        let y = if residual { x.add(&h).unwrap() } else { h };
                        y.backward_with(Some(&g.to_device(d).unwrap()), false)
                            .unwrap();
                        let mut grads = vec![x.grad().unwrap()];
                        if affine {
                            grads.push(w.grad().unwrap());
                            grads.push(b.grad().unwrap());
                        }
                        grads
                    })
                };
                let fused = go(dev, GpuFusion::Fused);
                let composed = go(dev, GpuFusion::Composed);
                let cpu = go(Device::Cpu, GpuFusion::Fused);
                let what = format!("{dtype:?} -> {out:?} affine {affine} residual {residual}");
                let near = if out == DType::BF16 { 2e-2 } else { tol(dtype) };
                for (i, name) in ["dx", "dw", "db"].iter().enumerate().take(fused.len()) {
                    let n = format!("{what}: {name}");
                    compare(&format!("{n} vs composed"), &fused[i], &composed[i], 0.0);
                    compare(&format!("{n} vs CPU"), &fused[i], &cpu[i], near);
                }
            }
        }
    });
}
