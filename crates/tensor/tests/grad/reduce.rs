//! Gradient checks of reductions over random axis sets, softmax and log-softmax.

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::gradcheck::f32_vs_f64;
use selfsup_tensor::{Result, Tensor};

/// A shape and a non-empty subset of its axes (as isize, some negative).
fn shape_axes() -> impl Strategy<Value = (Vec<usize>, Vec<isize>, bool)> {
    (
        shape(3, 4),
        prop::collection::vec(any::<bool>(), 3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(s, pick, neg, keep)| {
            let r = s.len();
            let mut axes: Vec<isize> = (0..r)
                .filter(|&i| pick[i])
                .map(|i| {
                    if neg {
                        i as isize - r as isize
                    } else {
                        i as isize
                    }
                })
                .collect();
            if axes.is_empty() {
                axes.push(-1);
            }
            (s, axes, keep)
        })
}

type RedFn = fn(&Tensor, &[isize], bool) -> Result<Tensor>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn grad_reductions((s, axes, keep) in shape_axes(), v in variant(), seed in 0u64..1000) {
        let ops: Vec<(&str, RedFn)> = vec![
            ("sum", |x, a, k| x.sum(a, k)),
            ("mean", |x, a, k| x.mean(a, k)),
            ("max", |x, a, k| x.max(a, k)),
            ("min", |x, a, k| x.min(a, k)),
            ("logsumexp", |x, a, k| x.logsumexp(a, k)),
            ("var", |x, a, k| x.var(a, false, k)),
            ("std", |x, a, k| x.std(a, false, k)),
        ];
        let n: usize = axes.iter().map(|&a| s[(a + s.len() as isize) as usize % s.len()]).product();
        for (name, op) in ops {
            if name == "std" && n == 1 {
                continue; // d sqrt(var)/dx is undefined at var = 0, as in PyTorch
            }
            let x = distinct(&leaf_shape(&s, v), seed);
            let r = selfsup_tensor::gradcheck::check_grad(|xs| op(&view(&xs[0], v)?.mul_scalar(0.3)?, &axes, keep), &[x.clone()]).unwrap();
            prop_assert!(r.max_error < TOL, "{name} {s:?} axes {axes:?}: {r:?}");
            let e = f32_vs_f64(|xs| op(&view(&xs[0], v)?.mul_scalar(0.3)?, &axes, keep), &[x]).unwrap();
            prop_assert!(e < 1e-5, "{name}: f32 vs f64 {e}");
        }
    }

    #[test]
    fn grad_unbiased_var((s, axes, keep) in shape_axes(), seed in 0u64..1000) {
        let n: usize = axes.iter().map(|&a| s[(a + s.len() as isize) as usize % s.len()]).product();
        prop_assume!(n > 1);
        assert_grad(|xs| xs[0].var(&axes, true, keep), &[uniform(&s, seed, -1.0, 1.0)])?;
    }

    #[test]
    fn grad_softmax_and_log_softmax(s in shape(3, 5), v in variant(), axis_pick in 0usize..3, seed in 0u64..1000) {
        let axis = (axis_pick % s.len()) as isize;
        let x = uniform(&leaf_shape(&s, v), seed, -3.0, 3.0);
        assert_grad(|xs| view(&xs[0], v)?.softmax(axis), &[x.clone()])?;
        assert_grad(|xs| view(&xs[0], v)?.log_softmax(axis), &[x.clone()])?;
        let e = f32_vs_f64(|xs| xs[0].log_softmax(axis), &[x]).unwrap();
        prop_assert!(e < 1e-5);
    }
}

#[test]
fn reductions_forward_values() {
    let x = Tensor::from_vec((0..24).map(|v| v as f64).collect::<Vec<_>>(), &[2, 3, 4]).unwrap();
    assert_eq!(
        x.sum(&[0, 2], false).unwrap().to_vec::<f64>().unwrap(),
        vec![60.0, 92.0, 124.0]
    );
    assert_eq!(
        x.max(&[1], false).unwrap().to_vec::<f64>().unwrap(),
        vec![8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]
    );
    assert_eq!(
        x.argmax(1, false).unwrap().to_vec::<i64>().unwrap(),
        vec![2; 8]
    );
    assert_eq!(x.sum(&[], false).unwrap().item().unwrap(), 276.0);
    let s = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3])
        .unwrap()
        .softmax(0)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let z = 1.0 + 1f32.exp() + 2f32.exp();
    assert!((s[0] - 1.0 / z).abs() < 1e-7 && (s[2] - 2f32.exp() / z).abs() < 1e-6);
    let big = Tensor::from_vec(vec![1000.0f32, 0.0], &[2])
        .unwrap()
        .log_softmax(0)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(big, vec![0.0, -1000.0]);
    assert!(x
        .sum(&[3], false)
        .unwrap_err()
        .to_string()
        .contains("axis 3 is out of range"));
}

#[test]
fn large_parallel_sum_is_thread_count_independent() {
    let n = 1 << 20;
    let x = Tensor::from_vec(
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect::<Vec<f32>>(),
        &[n],
    )
    .unwrap();
    let a = x.sum_all().unwrap().item().unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = pool.install(|| x.sum_all().unwrap().item().unwrap());
    assert_eq!(a, b);
    let exact: f64 = (0..n).map(|i| ((i * 7919) % 1000) as f64 * 1e-3).sum();
    assert!((a - exact).abs() / exact < 1e-5, "{a} vs {exact}");
}
