//! bf16 operands on the GPU: `layer_norm_as` writing a product's bf16 operand in one kernel
//! (and reading its gradient in bf16), and `linear`, `mlp2` and `qkv_attention` taking such an
//! operand (a bf16 input with f32 parameters) at bf16 matmul precision, each against the
//! composition it stands for on the same GPU, and against the CPU.

use selfsup_tensor::ops::fusion::{with_gpu_fusion, GpuFusion};
use selfsup_tensor::precision::{operand_dtype, with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Device, MlpActivation, Tensor};

use crate::{compare, leaf, on_each_gpu, rand, round_bf16};

/// The output of `f` on `xs` moved to `dev` (as leaves) and each leaf's gradient, the backward
/// seeded with `g` in the output's dtype.
fn grads(
    dev: Device,
    xs: &[&Tensor],
    g: &Tensor,
    f: &dyn Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    let on: Vec<Tensor> = xs.iter().map(|x| leaf(x, dev, true)).collect();
    let y = f(&on);
    let seed = g.to_dtype(y.dtype()).unwrap().to_device(dev).unwrap();
    y.backward_with(Some(&seed), false).unwrap();
    let gs = on.iter().map(|t| t.grad().expect("gradient")).collect();
    (y, gs)
}

/// The fused `layer_norm_as(.., BF16)` on a GPU gives the bits of `layer_norm(..)` cast to
/// bf16 on the same GPU, and the same gradients from the same bf16 output gradient (its
/// backward reads that gradient in bf16 where the composition widens it first: the same f32
/// values); and the CPU's within rounding. Rows of one block and longer, many rows (several
/// row chunks of the weight-gradient kernel), a strided input, with and without the affine
/// parameters. It runs the `_f32_bf16` kernels.
#[test]
fn layer_norm_as_writes_the_bf16_operand_and_matches_the_composition() {
    on_each_gpu("layer_norm_as", |dev| {
        let long = rand(&[3, 300, 7], DType::F32, -2.0, 2.0, 13)
            .permute(&[0, 2, 1])
            .unwrap();
        // (input, affine: weight, bias)
        let cases = [
            (rand(&[6, 32], DType::F32, -2.0, 2.0, 3), true, true),
            (rand(&[150, 40], DType::F32, -2.0, 2.0, 15), true, true),
            (long, true, false),
            (rand(&[2, 70, 24], DType::F32, -3.0, 1.0, 21), false, false),
        ];
        for (ci, (x, with_w, with_b)) in cases.iter().enumerate() {
            let d = *x.shape().last().unwrap();
            let seed = 100 + 3 * ci as u64;
            let w = rand(&[d], DType::F32, 0.5, 1.5, seed);
            let b = rand(&[d], DType::F32, -0.5, 0.5, seed + 1);
            let g = rand(x.shape(), DType::F32, -1.0, 1.0, seed + 2);
            let mut xs = vec![x];
            if *with_w {
                xs.push(&w);
            }
            if *with_b {
                xs.push(&b);
            }
            let (hw, hb) = (*with_w, *with_b);
            let params = move |v: &[Tensor]| -> (Option<Tensor>, Option<Tensor>) {
                let w = hw.then(|| v[1].clone());
                let b = hb.then(|| v[if hw { 2 } else { 1 }].clone());
                (w, b)
            };
            let fused = |v: &[Tensor]| {
                let (w, b) = params(v);
                v[0].layer_norm_as(w.as_ref(), b.as_ref(), 1e-5, DType::BF16)
                    .unwrap()
            };
            let composed = |v: &[Tensor]| {
                let (w, b) = params(v);
                v[0].layer_norm(w.as_ref(), b.as_ref(), 1e-5)
                    .unwrap()
                    .to_dtype(DType::BF16)
                    .unwrap()
            };
            let what = format!("layer_norm_as {:?} weight {hw} bias {hb}", x.shape());
            let (y, gs) = grads(dev, &xs, &g, &fused);
            let (yc, gc) = grads(dev, &xs, &g, &composed);
            let (ycpu, gcpu) = grads(Device::Cpu, &xs, &g, &fused);
            assert_eq!(y.dtype(), DType::BF16, "{what}: output dtype");
            assert_eq!(y.device(), dev, "{what}: output device");
            // The same f32 values rounded once: the same bits.
            compare(&format!("{what}: forward vs composed"), &y, &yc, 0.0);
            // A different f32 summation order on the CPU can flip a bf16 rounding.
            compare(&format!("{what}: forward vs CPU"), &y, &ycpu, 8e-3);
            for (i, ((a, c), c2)) in gs.iter().zip(&gc).zip(&gcpu).enumerate() {
                assert_eq!(a.dtype(), DType::F32, "{what}: gradient {i} dtype");
                compare(&format!("{what}: d/dx{i} vs composed"), a, c, 0.0);
                compare(&format!("{what}: d/dx{i} vs CPU"), a, c2, 1e-4);
            }
        }
        // An f64 input, or an output in the input's dtype: the composition.
        let x = rand(&[5, 16], DType::F64, -1.0, 1.0, 30);
        let g = rand(&[5, 16], DType::F64, -1.0, 1.0, 31);
        for out in [DType::F32, DType::F64] {
            let (y, gs) = grads(dev, &[&x], &g, &|v: &[Tensor]| {
                v[0].layer_norm_as(None, None, 1e-5, out).unwrap()
            });
            let (yc, gc) = grads(Device::Cpu, &[&x], &g, &|v: &[Tensor]| {
                v[0].layer_norm(None, None, 1e-5)
                    .unwrap()
                    .to_dtype(out)
                    .unwrap()
            });
            compare(&format!("layer_norm_as f64 -> {out:?}"), &y, &yc, 1e-6);
            compare(
                &format!("layer_norm_as f64 -> {out:?} grad"),
                &gs[0],
                &gc[0],
                1e-6,
            );
        }
    });
}

/// At bf16 matmul precision on a GPU, `linear`, `mlp2` and `qkv_attention` take a bf16 input
/// with f32 parameters as the operand it is: the output and the parameters' gradients of the
/// same op on the input's f32 value (the same bf16 copy, so the same bits), and the input's
/// gradient in bf16, that op's f32 gradient rounded once (cuBLAS stores it rounded; a
/// different GEMM algorithm may flip a rounding); at f32 precision they widen the input
/// first (the f32 op's values exactly, its input gradient rounded).
#[test]
fn matmul_ops_take_a_bf16_operand_at_bf16_precision() {
    on_each_gpu("bf16 operands", |dev| {
        let x = rand(&[2, 9, 24], DType::F32, -1.0, 1.0, 50);
        let (x16, xw) = (x.to_dtype(DType::BF16).unwrap(), round_bf16(&x));
        let (heads, dh) = (2, 8);
        let wq = rand(&[3 * heads * dh, 24], DType::F32, -0.5, 0.5, 51);
        let bq = round_bf16(&rand(&[3 * heads * dh], DType::F32, -0.3, 0.3, 52));
        let w1 = rand(&[40, 24], DType::F32, -0.5, 0.5, 53);
        let b1 = round_bf16(&rand(&[40], DType::F32, -0.3, 0.3, 54));
        let w2 = rand(&[24, 40], DType::F32, -0.5, 0.5, 55);
        let b2 = rand(&[24], DType::F32, -0.3, 0.3, 56);
        type Op = Box<dyn Fn(&[Tensor]) -> Tensor>;
        // (name, parameters, the op on [x, params..], its output's shape)
        let ops: Vec<(&str, Vec<&Tensor>, Op, Vec<usize>)> = vec![
            (
                "linear",
                vec![&w1, &b1],
                Box::new(|v: &[Tensor]| {
                    v[0].reshape(&[18, 24])
                        .unwrap()
                        .linear(&v[1], Some(&v[2]))
                        .unwrap()
                }),
                vec![18, 40],
            ),
            (
                "mlp2",
                vec![&w1, &b1, &w2, &b2],
                Box::new(|v: &[Tensor]| {
                    let x2 = v[0].reshape(&[18, 24]).unwrap();
                    x2.mlp2(&v[1], Some(&v[2]), MlpActivation::Gelu, &v[3], Some(&v[4]))
                        .unwrap()
                }),
                vec![18, 24],
            ),
            (
                "qkv_attention",
                vec![&wq, &bq],
                Box::new(move |v: &[Tensor]| {
                    v[0].qkv_attention(&v[1], Some(&v[2]), heads, true).unwrap()
                }),
                vec![2, 9, heads * dh],
            ),
        ];
        for (name, params, op, out_shape) in &ops {
            let g = rand(out_shape, DType::F32, -1.0, 1.0, 57);
            for p in [MatmulPrecision::Bf16, MatmulPrecision::F32] {
                let what = format!("{name} at {p}");
                let go = |dv: Device, x: &Tensor| {
                    let mut xs: Vec<&Tensor> = vec![x];
                    xs.extend(params.iter().copied());
                    with_matmul_precision(p, || grads(dv, &xs, &g, op.as_ref()))
                };
                let (y, gs) = go(dev, &x16);
                let (yw, gw) = go(dev, &xw);
                let (ycpu, gcpu) = go(Device::Cpu, &x16);
                assert_eq!(y.dtype(), DType::F32, "{what}: output dtype");
                assert_eq!(
                    gs[0].dtype(),
                    DType::BF16,
                    "{what}: the operand's gradient dtype"
                );
                compare(&format!("{what}: forward vs f32 input"), &y, &yw, 0.0);
                compare(
                    &format!("{what}: dx vs f32 input's, rounded"),
                    &gs[0],
                    &gw[0].to_dtype(DType::BF16).unwrap(),
                    8e-3,
                );
                for i in 1..gs.len() {
                    compare(
                        &format!("{what}: d/dparam{i} vs f32 input"),
                        &gs[i],
                        &gw[i],
                        0.0,
                    );
                }
                // The operand made from an f32 leaf and read by the op and by a cast: its
                // gradients from the two (each bf16) add up, and reach the leaf.
                let shared = |dv: Device| {
                    let xf = leaf(&xw, dv, true);
                    let x16 = xf.to_dtype(DType::BF16).unwrap();
                    let mut v = vec![x16.clone()];
                    v.extend(params.iter().map(|t| t.to_device(dv).unwrap()));
                    with_matmul_precision(p, || {
                        let y = op(&v);
                        let gd = g.to_device(dv).unwrap();
                        let loss = y
                            .mul(&gd)
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .add(&x16.to_dtype(DType::F32).unwrap().sum_all().unwrap())
                            .unwrap();
                        loss.backward().unwrap();
                    });
                    xf.grad().expect("leaf gradient")
                };
                let plus_one =
                    round_bf16(&gs[0].to_dtype(DType::F32).unwrap().add_scalar(1.0).unwrap());
                compare(
                    &format!("{what}: shared operand's gradient"),
                    &shared(dev),
                    &plus_one,
                    8e-3,
                );
                let cpu = if p == MatmulPrecision::Bf16 {
                    2e-2
                } else {
                    1e-3
                };
                compare(&format!("{what}: forward vs CPU"), &y, &ycpu, cpu);
                for i in 0..gs.len() {
                    let tol = if i == 0 { 1e-2 } else { 3.0 * cpu };
                    compare(&format!("{what}: d/dx{i} vs CPU"), &gs[i], &gcpu[i], tol);
                }
            }
        }
        with_matmul_precision(MatmulPrecision::Bf16, || {
            let on = x.to_device(dev).unwrap();
            assert_eq!(
                operand_dtype(&on),
                DType::BF16,
                "operand dtype on a GPU at bf16"
            );
            assert_eq!(operand_dtype(&x), DType::F32, "operand dtype on the CPU");
            let composed = with_gpu_fusion(GpuFusion::Composed, || operand_dtype(&on));
            assert_eq!(composed, DType::F32, "operand dtype with the fusions off");
        });
        assert_eq!(
            operand_dtype(&x.to_device(dev).unwrap()),
            DType::F32,
            "operand dtype at f32"
        );
    });
}
