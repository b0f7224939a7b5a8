//! Pooling: finite-difference gradient checks (contiguous and permuted inputs, distinct values
//! for max pooling), forward against naive loops, f32 against f64, and error messages.

use proptest::prelude::*;
use selfsup_tensor::gradcheck::{check_grad, f32_vs_f64};
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{DType, Result, Tensor};

/// Distinct values (a shuffled ramp with gaps of 0.05, so finite differences never reorder
/// them), stored as `[N, H, C, W]` when `permuted` (view it as NCHW with [`nchw`]).
fn distinct(shape: [usize; 4], permuted: bool, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut r = Philox::new(seed, 3);
    let v: Vec<f64> = r
        .permutation(n)
        .into_iter()
        .map(|i| i as f64 * 0.05 - 1.0)
        .collect();
    let [a, b, c, d] = shape;
    let s = if permuted { [a, c, b, d] } else { shape };
    Tensor::from_vec(v, &s).expect("shape matches data")
}

fn nchw(x: &Tensor, permuted: bool) -> Result<Tensor> {
    if permuted {
        x.permute(&[0, 2, 1, 3])
    } else {
        Ok(x.clone())
    }
}

/// One random sliding-window pooling problem.
#[derive(Clone, Debug)]
struct Case {
    shape: [usize; 4],
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    include_pad: bool,
    permuted: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=2, 1usize..=4, 3usize..=7, 3usize..=7),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        (0usize..=1, 0usize..=1),
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |((n, c, h, w), (kh, kw, sh, sw), (ph, pw), (include_pad, permuted, seed))| Case {
                shape: [n, c, h, w],
                k: (kh, kw),
                s: (sh, sw),
                p: (ph.min(kh / 2), pw.min(kw / 2)),
                include_pad,
                permuted,
                seed,
            },
        )
}

/// Sliding windows as PyTorch defines them: start `i s - p`, `k` taps (unclipped).
fn windows(len: usize, k: usize, s: usize, p: usize) -> Vec<(isize, isize)> {
    let out = (len + 2 * p - k) / s + 1;
    (0..out)
        .map(|i| {
            let a = (i * s) as isize - p as isize;
            (a, a + k as isize)
        })
        .collect()
}

/// Naive pooling over explicit (unclipped) windows; `f` reduces the in-range values, given the
/// window's unclipped area.
fn naive(
    x: &Tensor,
    rows: &[(isize, isize)],
    cols: &[(isize, isize)],
    f: impl Fn(&[f64], usize) -> f64,
) -> Vec<f64> {
    let s = x.shape().to_vec();
    let v = x.to_vec_f64().unwrap();
    let (h, w) = (s[2] as isize, s[3] as isize);
    let mut out = Vec::new();
    for plane in v.chunks(s[2] * s[3]) {
        for &(r0, r1) in rows {
            for &(c0, c1) in cols {
                let mut vals = Vec::new();
                for r in r0.max(0)..r1.min(h) {
                    for c in c0.max(0)..c1.min(w) {
                        vals.push(plane[(r * w + c) as usize]);
                    }
                }
                out.push(f(&vals, ((r1 - r0) * (c1 - c0)) as usize));
            }
        }
    }
    out
}

fn assert_close(got: &Tensor, want: &[f64]) {
    let g = got.to_vec_f64().unwrap();
    assert_eq!(g.len(), want.len());
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn max_pool2d_grad_matches_finite_differences(c in case()) {
        let x = distinct(c.shape, c.permuted, c.seed);
        let (k, s, p, perm) = (c.k, c.s, c.p, c.permuted);
        let r = check_grad(|xs| nchw(&xs[0], perm)?.max_pool2d(k, s, p), &[x]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{c:?}: {r:?}");
    }

    #[test]
    fn avg_pool2d_grad_matches_finite_differences(c in case()) {
        let x = distinct(c.shape, c.permuted, c.seed);
        let (k, s, p, perm, inc) = (c.k, c.s, c.p, c.permuted, c.include_pad);
        let r = check_grad(|xs| nchw(&xs[0], perm)?.avg_pool2d(k, s, p, inc), &[x]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{c:?}: {r:?}");
    }

    #[test]
    fn adaptive_and_global_avg_pool2d_grad(c in case(), oh in 1usize..=5, ow in 1usize..=5) {
        let x = distinct(c.shape, c.permuted, c.seed);
        let perm = c.permuted;
        let r = check_grad(|xs| nchw(&xs[0], perm)?.adaptive_avg_pool2d((oh, ow)), std::slice::from_ref(&x))
            .unwrap();
        prop_assert!(r.max_error < 1e-6, "{c:?}: {r:?}");
        let r = check_grad(|xs| nchw(&xs[0], perm)?.global_avg_pool2d(), &[x]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{c:?}: {r:?}");
    }

    #[test]
    fn pools_forward_match_naive_loops_grad_suite(c in case(), oh in 1usize..=9, ow in 1usize..=9) {
        let x = nchw(&distinct(c.shape, c.permuted, c.seed), c.permuted).unwrap();
        let [n, ch, h, w] = c.shape;
        let (rows, cols) = (windows(h, c.k.0, c.s.0, c.p.0), windows(w, c.k.1, c.s.1, c.p.1));
        let y = x.max_pool2d(c.k, c.s, c.p).unwrap();
        prop_assert_eq!(y.shape(), &[n, ch, rows.len(), cols.len()][..]);
        assert_close(&y, &naive(&x, &rows, &cols, |v, _| v.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
        let inc = c.include_pad;
        let y = x.avg_pool2d(c.k, c.s, c.p, inc).unwrap();
        assert_close(&y, &naive(&x, &rows, &cols, |v, area| {
            v.iter().sum::<f64>() / if inc { area } else { v.len() } as f64
        }));
        let bins = |len: usize, o: usize| -> Vec<(isize, isize)> {
            (0..o).map(|i| ((i * len / o) as isize, ((i + 1) * len).div_ceil(o) as isize)).collect()
        };
        let y = x.adaptive_avg_pool2d((oh, ow)).unwrap();
        prop_assert_eq!(y.shape(), &[n, ch, oh, ow][..]);
        assert_close(&y, &naive(&x, &bins(h, oh), &bins(w, ow), |v, _| v.iter().sum::<f64>() / v.len() as f64));
        let y = x.global_avg_pool2d().unwrap();
        prop_assert_eq!(y.shape(), &[n, ch][..]);
        assert_close(&y, &naive(&x, &[(0, h as isize)], &[(0, w as isize)], |v, _| v.iter().sum::<f64>() / v.len() as f64));
    }

    #[test]
    fn pools_f32_match_f64_grad_suite(c in case()) {
        let x = nchw(&distinct(c.shape, c.permuted, c.seed), c.permuted).unwrap();
        let (k, s, p, inc) = (c.k, c.s, c.p, c.include_pad);
        let f = |xs: &[Tensor]| -> Result<Tensor> {
            let a = xs[0].max_pool2d(k, s, p)?.sum_all()?;
            let b = xs[0].avg_pool2d(k, s, p, inc)?.sum_all()?;
            let c = xs[0].adaptive_avg_pool2d((2, 3))?.sum_all()?;
            let d = xs[0].global_avg_pool2d()?.sum_all()?;
            a.add(&b)?.add(&c)?.add(&d)
        };
        let err = f32_vs_f64(f, &[x]).unwrap();
        prop_assert!(err < 1e-5, "{c:?}: {err}");
    }
}

#[test]
fn max_pool2d_grad_routes_to_the_argmax_with_padding() {
    let x = Tensor::from_vec(vec![-3.0f64, -1.0, -2.0, -4.0], &[1, 1, 2, 2])
        .unwrap()
        .requires_grad_();
    // Padding counts as -inf, so every window's maximum is a real element.
    let y = x.max_pool2d((2, 2), (1, 1), (1, 1)).unwrap();
    assert_eq!(
        y.to_vec::<f64>().unwrap(),
        vec![-3.0, -1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -2.0, -4.0]
    );
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        x.grad().unwrap().to_vec::<f64>().unwrap(),
        vec![1.0, 4.0, 3.0, 1.0]
    );
}

fn err(r: Result<Tensor>) -> String {
    r.expect_err("should be refused").to_string()
}

#[test]
fn pool_grad_suite_errors_name_op_and_shapes() {
    let x = Tensor::zeros(&[2, 3, 4, 4], DType::F32);
    let e = err(x.max_pool2d((5, 5), (1, 1), (0, 0)));
    assert!(
        e.starts_with("max_pool2d:") && e.contains("[2, 3, 4, 4]") && e.contains("(5, 5)"),
        "{e}"
    );
    let e = err(x.avg_pool2d((2, 2), (1, 1), (2, 0), true));
    assert!(
        e.starts_with("avg_pool2d:") && e.contains("padding (2, 0)"),
        "{e}"
    );
    let e = err(x.max_pool2d((2, 2), (0, 1), (0, 0)));
    assert!(e.contains("stride (0, 1)"), "{e}");
    let e = err(Tensor::zeros(&[3, 4, 4], DType::F32).global_avg_pool2d());
    assert!(
        e.starts_with("global_avg_pool2d:") && e.contains("[3, 4, 4]"),
        "{e}"
    );
    let e = err(x.adaptive_avg_pool2d((0, 2)));
    assert!(
        e.starts_with("adaptive_avg_pool2d:") && e.contains("(0, 2)"),
        "{e}"
    );
    let e = err(Tensor::zeros(&[1, 1, 4, 4], DType::I64).max_pool2d((2, 2), (2, 2), (0, 0)));
    assert!(e.starts_with("max_pool2d:") && e.contains("I64"), "{e}");
}
