//! conv2d: finite-difference gradient checks (input, weight, bias; contiguous and permuted
//! inputs), forward against a naive direct loop, f32 against f64, and error messages.

use proptest::prelude::*;
use selfsup_tensor::gradcheck::{check_grad, f32_vs_f64};
use selfsup_tensor::ops::conv::Conv2dParams;
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{DType, Tensor};

/// Uniform(-1, 1) values of `shape` in f64, from `seed`.
fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    let mut r = Philox::new(seed, 7);
    let v: Vec<f64> = (0..n).map(|_| r.uniform_range(-1.0, 1.0)).collect();
    Tensor::from_vec(v, shape).expect("shape matches data")
}

/// One random convolution problem.
#[derive(Clone, Debug)]
struct Case {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    p: Conv2dParams,
    bias: bool,
    permuted: bool,
    seed: u64,
}

impl Case {
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in / self.p.groups, self.k.0, self.k.1]
    }
    fn valid(&self) -> bool {
        let ek = |k: usize, d: usize| d * (k - 1) + 1;
        self.h + 2 * self.p.padding.0 >= ek(self.k.0, self.p.dilation.0)
            && self.w + 2 * self.p.padding.1 >= ek(self.k.1, self.p.dilation.1)
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=2, 1usize..=2, 1usize..=2),
        (3usize..=7, 3usize..=7, 1usize..=3, 1usize..=3),
        (
            1usize..=2,
            1usize..=2,
            0usize..=2,
            0usize..=2,
            1usize..=2,
            1usize..=2,
        ),
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                (n, groups, cig, cog),
                (h, w, kh, kw),
                (sh, sw, ph, pw, dh, dw),
                (bias, permuted, seed),
            )| {
                Case {
                    n,
                    c_in: cig * groups,
                    c_out: cog * groups,
                    h,
                    w,
                    k: (kh, kw),
                    p: Conv2dParams {
                        stride: (sh, sw),
                        padding: (ph, pw),
                        dilation: (dh, dw),
                        groups,
                    },
                    bias,
                    permuted,
                    seed,
                }
            },
        )
        .prop_filter("kernel fits the padded input", Case::valid)
}

/// Direct 7-loop convolution in f64.
fn naive(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: Conv2dParams) -> (Vec<f64>, Vec<usize>) {
    let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
    let (xv, wv) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
    let bv = b.map(|b| b.to_vec_f64().unwrap());
    let (n, ci, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (co, cig, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let cog = co / p.groups;
    let oh = (h + 2 * p.padding.0 - p.dilation.0 * (kh - 1) - 1) / p.stride.0 + 1;
    let ow = (wd + 2 * p.padding.1 - p.dilation.1 * (kw - 1) - 1) / p.stride.1 + 1;
    let mut y = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for o in 0..co {
            let grp = o / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bv.as_ref().map_or(0.0, |v| v[o]);
                    for c in 0..cig {
                        let cin = grp * cig + c;
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (oy * p.stride.0 + i * p.dilation.0) as isize
                                    - p.padding.0 as isize;
                                let ix = (ox * p.stride.1 + j * p.dilation.1) as isize
                                    - p.padding.1 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((b * ci + cin) * h + iy as usize) * wd + ix as usize;
                                let wi = ((o * cig + c) * kh + i) * kw + j;
                                s += xv[xi] * wv[wi];
                            }
                        }
                    }
                    y[((b * co + o) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    (y, vec![n, co, oh, ow])
}

/// The input of `c`: stored as `[N, H, C, W]` and permuted to NCHW when `c.permuted`.
fn input(c: &Case) -> Tensor {
    let [n, ci, h, w] = c.x_shape();
    if c.permuted {
        rand(&[n, h, ci, w], c.seed)
    } else {
        rand(&[n, ci, h, w], c.seed)
    }
}

fn as_nchw(x: &Tensor, permuted: bool) -> selfsup_tensor::Result<Tensor> {
    if permuted {
        x.permute(&[0, 2, 1, 3])
    } else {
        Ok(x.clone())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn conv2d_grad_matches_finite_differences(c in case()) {
        let x = input(&c);
        let w = rand(&c.w_shape(), c.seed ^ 1);
        let b = rand(&[c.c_out], c.seed ^ 2);
        let (p, permuted, bias) = (c.p, c.permuted, c.bias);
        let mut inputs = vec![x, w];
        if bias {
            inputs.push(b);
        }
        let r = check_grad(
            |xs| as_nchw(&xs[0], permuted)?.conv2d(&xs[1], xs.get(2), p),
            &inputs,
        )
        .unwrap();
        prop_assert!(r.max_error < 1e-6, "{c:?}: {r:?}");
    }

    #[test]
    fn conv2d_forward_matches_naive_loop_grad_suite(c in case(), extra_batch in 0usize..=4) {
        let c = Case { n: c.n + extra_batch, ..c };
        let x = as_nchw(&input(&c), c.permuted).unwrap();
        let w = rand(&c.w_shape(), c.seed ^ 1);
        let b = rand(&[c.c_out], c.seed ^ 2);
        let b = c.bias.then_some(&b);
        let y = x.conv2d(&w, b, c.p).unwrap();
        let (want, shape) = naive(&x, &w, b, c.p);
        prop_assert_eq!(y.shape(), &shape[..]);
        let got = y.to_vec::<f64>().unwrap();
        for (g, r) in got.iter().zip(&want) {
            prop_assert!((g - r).abs() < 1e-12 * (1.0 + r.abs()), "{c:?}: {g} vs {r}");
        }
    }

    #[test]
    fn conv2d_f32_matches_f64_grad_suite(c in case()) {
        let x = as_nchw(&input(&c), c.permuted).unwrap();
        let w = rand(&c.w_shape(), c.seed ^ 1);
        let b = rand(&[c.c_out], c.seed ^ 2);
        let p = c.p;
        let err = f32_vs_f64(|xs| xs[0].conv2d(&xs[1], Some(&xs[2]), p), &[x, w, b]).unwrap();
        prop_assert!(err < 1e-5, "{c:?}: {err}");
    }
}

/// Backward in f32 at a size that splits the batch across threads, against the f64 result.
#[test]
fn conv2d_grad_f32_batch_split_matches_f64() {
    let p = Conv2dParams {
        stride: (2, 1),
        padding: (1, 1),
        ..Default::default()
    };
    let grads = |dt: DType| {
        let x = rand(&[7, 3, 9, 8], 11)
            .to_dtype(dt)
            .unwrap()
            .requires_grad_();
        let w = rand(&[4, 3, 3, 3], 12)
            .to_dtype(dt)
            .unwrap()
            .requires_grad_();
        let b = rand(&[4], 13).to_dtype(dt).unwrap().requires_grad_();
        let y = x.conv2d(&w, Some(&b), p).unwrap();
        let r = rand(y.shape(), 14).to_dtype(dt).unwrap();
        y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        [x, w, b].map(|t| t.grad().unwrap().to_vec_f64().unwrap())
    };
    let (a, b) = (grads(DType::F32), grads(DType::F64));
    for (ga, gb) in a.iter().zip(&b) {
        for (u, v) in ga.iter().zip(gb) {
            assert!((u - v).abs() < 1e-4 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }
}

/// 1x1 stride-1 convolutions take the path without im2col.
#[test]
fn conv2d_grad_pointwise() {
    let x = rand(&[2, 4, 3, 5], 21);
    let w = rand(&[6, 2, 1, 1], 22);
    let b = rand(&[6], 23);
    let p = Conv2dParams {
        groups: 2,
        ..Default::default()
    };
    let r = check_grad(|xs| xs[0].conv2d(&xs[1], Some(&xs[2]), p), &[x, w, b]).unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
}

fn err(r: selfsup_tensor::Result<Tensor>) -> String {
    r.expect_err("should be refused").to_string()
}

#[test]
fn conv2d_grad_suite_errors_name_op_and_shapes() {
    let x = Tensor::zeros(&[8, 3, 28, 28], DType::F32);
    let d = Conv2dParams::default();
    assert_eq!(
        err(x.conv2d(&Tensor::zeros(&[32, 1, 3, 3], DType::F32), None, d)),
        "conv2d: input [8, 3, 28, 28] has 3 channels but weight [32, 1, 3, 3] expects 1 (groups 1)"
    );
    let w = Tensor::zeros(&[32, 3, 3, 3], DType::F32);
    let e = err(Tensor::zeros(&[3, 28, 28], DType::F32).conv2d(&w, None, d));
    assert!(e.contains("conv2d") && e.contains("[3, 28, 28]"), "{e}");
    let e = err(x.conv2d(&Tensor::zeros(&[32, 3, 3], DType::F32), None, d));
    assert!(e.contains("weight [32, 3, 3]"), "{e}");
    let e = err(x.conv2d(&w, Some(&Tensor::zeros(&[31], DType::F32)), d));
    assert!(
        e.contains("bias [31]") && e.contains("[32, 3, 3, 3]"),
        "{e}"
    );
    let e = err(x.conv2d(&Tensor::zeros(&[32, 3, 29, 3], DType::F32), None, d));
    assert!(e.contains("smaller than the kernel"), "{e}");
    let g2 = Conv2dParams { groups: 2, ..d };
    let e = err(x.conv2d(&w, None, g2));
    assert!(
        e.contains("groups 2") && e.contains("[8, 3, 28, 28]"),
        "{e}"
    );
    let e = err(x.conv2d(
        &w,
        None,
        Conv2dParams {
            stride: (0, 1),
            ..d
        },
    ));
    assert!(e.contains("stride"), "{e}");
    let e = err(x.conv2d(&Tensor::zeros(&[32, 3, 3, 3], DType::F64), None, d));
    assert!(e.contains("conv2d") && e.contains("dtype"), "{e}");
    let xi = Tensor::zeros(&[8, 3, 28, 28], DType::I64);
    let e = err(xi.conv2d(&Tensor::zeros(&[32, 3, 3, 3], DType::I64), None, d));
    assert!(e.contains("conv2d") && e.contains("I64"), "{e}");
}

/// A batch larger than the thread count, so each task accumulates several images' weight
/// gradients into its partial sum before the partials are combined.
#[test]
fn conv2d_grad_several_images_per_task() {
    let x = rand(&[9, 2, 4, 3], 31);
    let w = rand(&[2, 1, 2, 2], 32);
    let b = rand(&[2], 33);
    let p = Conv2dParams {
        padding: (1, 0),
        groups: 2,
        ..Default::default()
    };
    let r = check_grad(|xs| xs[0].conv2d(&xs[1], Some(&xs[2]), p), &[x, w, b]).unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
}

/// Stride-2 convolutions with output rows wider than one 16-lane vector (the AVX-512 gather and
/// scatter-add of im2col and col2im work in chunks of 16): f32 forward and backward against
/// f64, with padding on either side and with dilation.
#[test]
fn conv2d_stride_two_wide_rows_f32_matches_f64() {
    for (padding, dilation) in [((1, 1), (1, 1)), ((0, 2), (1, 1)), ((2, 1), (2, 2))] {
        let p = Conv2dParams {
            stride: (2, 2),
            padding,
            dilation,
            ..Default::default()
        };
        let x = rand(&[2, 3, 41, 38], 21);
        let w = rand(&[4, 3, 3, 3], 22);
        let b = rand(&[4], 23);
        let err = f32_vs_f64(|xs| xs[0].conv2d(&xs[1], Some(&xs[2]), p), &[x, w, b]).unwrap();
        assert!(
            err < 1e-5,
            "padding {padding:?} dilation {dilation:?}: {err}"
        );
    }
}
