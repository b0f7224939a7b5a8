//! The implicit-GEMM convolution (`GpuConv::Implicit`, `kernels/conv_mma.cu`) against an exact
//! reference: the CPU's f64 convolution of the same bf16-rounded operands (x, the weight and the
//! output gradient), so that only the GPU's f32 summation order separates the two.

use selfsup_tensor::ops::fusion::{with_gpu_conv, GpuConv};
use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{Conv2dParams, DType, Device, Tensor};

use crate::{compare, leaf, on_each_gpu, rand};

/// `t` rounded to bf16 (to nearest even, as the kernels round their operands), in f64.
fn bf16_f64(t: &Tensor) -> Tensor {
    t.to_dtype(DType::BF16)
        .and_then(|b| b.to_dtype(DType::F64))
        .expect("rounding")
}

/// Forward, input, weight and bias gradients of the implicit GEMM against the exact reference,
/// over geometries that reach both block heights (64 and 128 rows: 5, 16 and 32 output channels,
/// and 96; 72 input channels for the input gradient's), ragged tiles on every side (products of
/// 5 to 96 rows, 27 to 864 reduction terms, column counts not multiples of 128), strides 2,
/// (1, 2) and (2, 3) with dilations (the input gradient's stride phases: 5x5 taps split 3/2 by
/// rows and 2/1/2 by columns; 3x3 with dilation 2 at stride 2, whose odd phases no tap reaches;
/// 1x1 at stride 2), a strided input view, a bias, operands without gradients, a weight
/// gradient whose reduction (4,096 positions) is cut into two slices, whole blocks (64 and
/// 128 channels, 128 positions), which store without edge tests, and a 15 x 15 kernel (the
/// largest the kernels take). The profile shows the implicit kernels ran and im2col did not; two runs
/// give the same bits.
#[test]
fn implicit_gemm_convolution_matches_the_exact_bf16_reference() {
    on_each_gpu("conv2d implicit", |dev| {
        let Device::Cuda(i) = dev else { return };
        let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
        let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
        let p = |stride, padding, dilation| Conv2dParams {
            stride,
            padding,
            dilation,
            groups: 1,
        };
        // ([n, c_in, h, w], c_out, kernel side, params, bias, grads of x/w/b, strided x)
        let cases = [
            (
                [2, 3, 7, 9],
                5,
                3,
                p((1, 1), (1, 1), (1, 1)),
                true,
                [true, true, true],
                true,
            ),
            (
                [3, 8, 9, 8],
                96,
                3,
                p((2, 2), (1, 1), (1, 1)),
                false,
                [true, true, false],
                false,
            ),
            (
                [2, 72, 5, 6],
                16,
                3,
                p((1, 2), (2, 1), (2, 1)),
                true,
                [true, true, true],
                false,
            ),
            (
                [2, 16, 8, 8],
                32,
                1,
                p((2, 2), (0, 0), (1, 1)),
                false,
                [true, true, false],
                true,
            ),
            (
                [4, 2, 32, 32],
                3,
                3,
                p((1, 1), (1, 1), (1, 1)),
                false,
                [false, true, false],
                false,
            ),
            (
                [2, 4, 11, 13],
                8,
                5,
                p((2, 3), (2, 1), (1, 2)),
                true,
                [true, false, false],
                false,
            ),
            (
                [2, 3, 9, 9],
                4,
                3,
                p((2, 2), (1, 1), (2, 2)),
                false,
                [true, true, false],
                true,
            ),
            // Whole blocks (no edge tests in the epilogue): the forward's and the input
            // gradient's 64 x 128, the weight gradient's but its last columns.
            (
                [2, 64, 8, 8],
                64,
                3,
                p((1, 1), (1, 1), (1, 1)),
                true,
                [true, true, true],
                false,
            ),
            // The largest kernel the kernels take (15 x 15: the validity masks' last row and
            // column bits), padded to keep the size.
            (
                [1, 2, 17, 16],
                3,
                15,
                p((1, 1), (7, 7), (1, 1)),
                true,
                [true, true, true],
                false,
            ),
            // Whole rows with ragged columns (108 positions), and a whole 64 x 128 weight
            // gradient block.
            (
                [3, 128, 6, 6],
                64,
                1,
                p((1, 1), (0, 0), (1, 1)),
                false,
                [true, true, false],
                false,
            ),
        ];
        for (j, (xs, c_out, ks, params, bias, grads, strided)) in cases.into_iter().enumerate() {
            let seed = 300 + 5 * j as u64;
            let x = if strided {
                rand(&[xs[0], xs[1], xs[3], xs[2]], DType::F32, -1.0, 1.0, seed)
                    .transpose(2, 3)
                    .unwrap()
            } else {
                rand(&xs, DType::F32, -1.0, 1.0, seed)
            };
            let w = rand(&[c_out, xs[1], ks, ks], DType::F32, -1.0, 1.0, seed + 1);
            let b = rand(&[c_out], DType::F32, -1.0, 1.0, seed + 2);
            let what = format!("implicit conv {xs:?} -> {c_out} {ks}x{ks} {params:?}");
            let run = || {
                with_gpu_conv(GpuConv::Implicit, || {
                    with_matmul_precision(MatmulPrecision::Bf16, || {
                        let (lx, lw, lb) = (
                            leaf(&x, dev, grads[0]),
                            leaf(&w, dev, grads[1]),
                            leaf(&b, dev, grads[2]),
                        );
                        let y = lx.conv2d(&lw, bias.then_some(&lb), params).unwrap();
                        let dy = rand(y.shape(), DType::F32, -1.0, 1.0, seed + 3);
                        y.backward_with(Some(&dy.to_device(dev).unwrap()), false)
                            .unwrap();
                        (y, [&lx, &lw, &lb].map(|t| t.grad()), dy)
                    })
                })
            };
            be.profile_start();
            let (y, g, dy) = run();
            let prof = be.profile_stop().unwrap();
            let names: Vec<&str> = prof.kernels.iter().map(|k| k.name.as_str()).collect();
            let bm = |m: usize| if m <= 64 { 64 } else { 128 };
            let mut want = vec![
                format!("conv_mma/conv_mma_fwd_{}", bm(c_out)),
                "conv_mma/conv_mma_pack_w".into(),
            ];
            if grads[0] {
                want.push(format!("conv_mma/conv_mma_dgrad_{}", bm(xs[1])));
                want.push("conv_mma/conv_mma_pack_wt".into());
            }
            if grads[1] {
                want.push(format!("conv_mma/conv_mma_wgrad_{}", bm(c_out)));
            }
            for k in &want {
                assert!(
                    names.contains(&k.as_str()),
                    "{what}: {k} did not run: {names:?}"
                );
            }
            assert!(
                !names.iter().any(|n| n.starts_with("conv/")),
                "{what}: the im2col path ran: {names:?}"
            );

            // The exact reference: f64 products of the bf16-rounded operands.
            let (xr, wr, dyr) = (
                leaf(&bf16_f64(&x), Device::Cpu, true),
                leaf(&bf16_f64(&w), Device::Cpu, true),
                bf16_f64(&dy),
            );
            let b64 = b.to_dtype(DType::F64).unwrap();
            let yr = xr.conv2d(&wr, bias.then_some(&b64), params).unwrap();
            yr.backward_with(Some(&dyr), false).unwrap();
            let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            compare(
                &format!("{what}: y"),
                &y.to_device(Device::Cpu).unwrap(),
                &f32_of(&yr),
                1e-5,
            );
            let reference = [
                xr.grad().map(|t| f32_of(&t)),
                wr.grad().map(|t| f32_of(&t)),
                Some(f32_of(
                    &dy.to_dtype(DType::F64)
                        .unwrap()
                        .sum(&[0, 2, 3], false)
                        .unwrap(),
                )),
            ];
            for (k, name) in ["dx", "dW", "db"].iter().enumerate() {
                let wanted = grads[k] && (k < 2 || bias);
                assert_eq!(g[k].is_some(), wanted, "{what}: {name} present");
                if let (Some(a), Some(r)) = (&g[k], &reference[k]) {
                    let a = a.to_device(Device::Cpu).unwrap();
                    compare(&format!("{what}: {name}"), &a, r, 1e-5);
                }
            }
            // Deterministic: a second run gives the same bits.
            let (y2, g2, _) = run();
            assert_eq!(
                y.to_vec::<f32>().unwrap(),
                y2.to_vec::<f32>().unwrap(),
                "{what}: y differs between runs"
            );
            for (a, b) in g.iter().zip(&g2) {
                if let (Some(a), Some(b)) = (a, b) {
                    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
                    assert_eq!(a, b, "{what}: a gradient differs between runs");
                }
            }
        }
    });
}
