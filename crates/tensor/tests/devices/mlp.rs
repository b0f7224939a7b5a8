//! `mlp2` on the GPU: fused at bf16 precision (the hidden layer and its gradient in bf16, as
//! under PyTorch's autocast; the activation's backward fused with the cast and the first
//! bias's column sums), against the composition it stands for, with the same roundings, on
//! the same GPU and on the CPU.

use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Device, MlpActivation, Tensor};

use crate::{compare, on_each_gpu, rand, round_bf16};

/// One run's output and the gradients of x, W1, b1, W2, b2 (None where not wanted).
type Run = (Tensor, [Option<Tensor>; 5]);

/// Runs the MLP on `dev` at precision `p`, fused (`mlp2`) or composed (linear, activation,
/// linear; at bf16 precision with the fused form's roundings: the first layer's output and
/// the activation's output gradient rounded to bf16), with the output gradient `g`; `grads`
/// says which of x, W1, b1, W2, b2 want one.
#[allow(clippy::too_many_arguments)]
fn run(
    dev: Device,
    p: MatmulPrecision,
    fused: bool,
    act: MlpActivation,
    xs: &[Tensor; 5],
    biases: [bool; 2],
    grads: [bool; 5],
    strided: bool,
    g: &Tensor,
) -> Run {
    with_matmul_precision(p, || {
        let on: Vec<Tensor> = xs
            .iter()
            .zip(grads)
            .map(|(t, want)| {
                let t = t.to_device(dev).unwrap();
                if want {
                    t.requires_grad_()
                } else {
                    t
                }
            })
            .collect();
        // A strided x: the transpose of a stored [in, N].
        let x = if strided {
            on[0].t().unwrap()
        } else {
            on[0].clone()
        };
        let (b1, b2) = (biases[0].then_some(&on[2]), biases[1].then_some(&on[4]));
        let y = if fused {
            x.mlp2(&on[1], b1, act, &on[3], b2).unwrap()
        } else if p == MatmulPrecision::Bf16 {
            let h = round_bf16(&x.linear(&on[1], b1).unwrap());
            round_bf16(&act.apply(&h).unwrap())
                .linear(&on[3], b2)
                .unwrap()
        } else {
            let h = x.linear(&on[1], b1).unwrap();
            act.apply(&h).unwrap().linear(&on[3], b2).unwrap()
        };
        y.backward_with(Some(&g.to_device(dev).unwrap()), false)
            .unwrap();
        let gs = [0, 1, 2, 3, 4].map(|i| on[i].grad());
        (y, gs)
    })
}

/// At bf16 precision the fused MLP gives the output and gradients of the composition with its
/// roundings (to within what a different f32 summation order can flip in a bf16 rounding) on
/// the same GPU and on the CPU at bf16 precision, for every activation, with and without
/// biases, strided input, gradients wanted for only some operands, and shapes whose column
/// sums span several row chunks and a partial column block; it runs the fused activation
/// kernels; at f32 precision it is the composition (to within f32 noise).
#[test]
fn mlp2_fuses_its_activation_at_bf16_and_matches_the_composition() {
    on_each_gpu("mlp2", |dev| {
        let acts = [
            MlpActivation::Gelu,
            MlpActivation::Relu,
            MlpActivation::GeluTanh,
            MlpActivation::Silu,
            MlpActivation::Tanh,
            MlpActivation::Sigmoid,
        ];
        // (rows, in, hidden, out, biases, grads of x W1 b1 W2 b2, strided x)
        let cases = [
            (19, 33, 40, 7, [true, true], [true; 5], true),
            (300, 24, 45, 9, [true, true], [true; 5], false),
            (
                300,
                24,
                45,
                9,
                [false, true],
                [true, true, false, true, true],
                false,
            ),
            (
                19,
                33,
                40,
                7,
                [true, false],
                [true, true, true, true, false],
                false,
            ),
            (
                19,
                33,
                40,
                7,
                [true, true],
                [false, false, false, true, true],
                false,
            ),
            (
                19,
                33,
                40,
                7,
                [true, true],
                [true, false, false, false, false],
                true,
            ),
            (0, 5, 6, 3, [true, true], [true; 5], false),
        ];
        for (ci, &(n, k, hid, out, biases, grads, strided)) in cases.iter().enumerate() {
            let act = acts[(ci + 2) % acts.len()];
            let x = if strided {
                rand(&[k, n], DType::F32, -1.0, 1.0, 1)
            } else {
                rand(&[n, k], DType::F32, -1.0, 1.0, 1)
            };
            // The first bias is bf16-exact, as the fused form rounds it.
            let xs = [
                x,
                rand(&[hid, k], DType::F32, -0.5, 0.5, 2),
                round_bf16(&rand(&[hid], DType::F32, -0.5, 0.5, 3)),
                rand(&[out, hid], DType::F32, -0.5, 0.5, 4),
                rand(&[out], DType::F32, -0.5, 0.5, 5),
            ];
            let g = rand(&[n, out], DType::F32, -1.0, 1.0, 6);
            let what = format!(
                "{act:?} [{n}, {k}] -> {hid} -> {out}, biases {biases:?}, grads {grads:?}, strided {strided}"
            );
            for p in [MatmulPrecision::Bf16, MatmulPrecision::F32] {
                let go = |d, fused| run(d, p, fused, act, &xs, biases, grads, strided, &g);
                let (y, gg) = go(dev, true);
                let (yc, cg) = go(dev, false);
                let (ycpu, gcpu) = go(Device::Cpu, false);
                // A bf16 rounding of the hidden layer that an f32 summation order flips moves
                // an output by about 1e-3 here.
                let same = if p == MatmulPrecision::Bf16 {
                    2e-3
                } else {
                    1e-5
                };
                compare(&format!("{what} {p}: forward vs composed"), &y, &yc, same);
                compare(&format!("{what} {p}: forward vs CPU"), &y, &ycpu, 2e-3);
                for (i, name) in ["dx", "dW1", "db1", "dW2", "db2"].iter().enumerate() {
                    let wanted = grads[i] && (i != 2 || biases[0]) && (i != 4 || biases[1]);
                    assert_eq!(gg[i].is_some(), wanted, "{what} {p}: {name} present");
                    if let (Some(a), Some(c), Some(cpu)) = (&gg[i], &cg[i], &gcpu[i]) {
                        compare(&format!("{what} {p}: {name} vs composed"), a, c, same);
                        compare(&format!("{what} {p}: {name} vs CPU"), a, cpu, 2e-3);
                    }
                }
            }
        }
        // What ran: the fused kernels.
        if let Device::Cuda(i) = dev {
            let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
            let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
            let on = |t: Tensor| t.to_device(dev).unwrap().requires_grad_();
            let x = on(rand(&[16, 8], DType::F32, -1.0, 1.0, 1));
            let (w1, b1) = (
                on(rand(&[12, 8], DType::F32, -1.0, 1.0, 2)),
                on(rand(&[12], DType::F32, -1.0, 1.0, 3)),
            );
            let (w2, b2) = (
                on(rand(&[4, 12], DType::F32, -1.0, 1.0, 4)),
                on(rand(&[4], DType::F32, -1.0, 1.0, 5)),
            );
            be.profile_start();
            with_matmul_precision(MatmulPrecision::Bf16, || {
                let y = x
                    .mlp2(&w1, Some(&b1), MlpActivation::Gelu, &w2, Some(&b2))
                    .unwrap();
                y.sum_all().unwrap().backward().unwrap();
            });
            let prof = be.profile_stop().unwrap();
            // Other tests' kernels may land in the profile (they run on other threads), so
            // only the kernels no composition launches are looked for.
            assert!(prof.calls("unary/gelu_erf_to_bf16_bf16") >= 1, "{prof:?}");
            // The first product stored its bf16 output itself, unless cuBLASLt declined it
            // (then the f32 product and a cast did, as the composition).
            assert!(
                prof.calls("cublasLt linear BF16->BF16 16x8x12 + bias") >= 1
                    || be.lt_problem().is_some(),
                "{prof:?}"
            );
            assert!(
                prof.calls("unary/gelu_erf_bw_bf16_colsum_bf16") >= 1,
                "{prof:?}"
            );
        }
    });
}
