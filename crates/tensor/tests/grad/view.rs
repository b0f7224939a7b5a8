//! Gradient checks of the view ops, contiguous/copy, concat/stack/split and casts.

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::{DType, Tensor};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn grad_reshape_permute_transpose(s in shape(3, 4), v in variant(), seed in 0u64..1000) {
        let x = uniform(&leaf_shape(&s, v), seed, -1.0, 1.0);
        let n: usize = s.iter().product();
        assert_grad(|xs| view(&xs[0], v)?.reshape(&[n])?.mul(&view(&xs[0], v)?.flatten(0, -1)?), &[x.clone()])?;
        assert_grad(|xs| { let y = view(&xs[0], v)?; let p: Vec<usize> = (0..y.rank()).rev().collect(); y.permute(&p)?.contiguous()?.exp() }, &[x.clone()])?;
        assert_grad(|xs| view(&xs[0], v)?.transpose(0, -1)?.sqr(), &[x])?;
    }

    #[test]
    fn grad_narrow_select_squeeze(s in shape(3, 5), v in variant(), seed in 0u64..1000, start in 0usize..5) {
        let x = uniform(&leaf_shape(&s, v), seed, -1.0, 1.0);
        let d = s[0];
        let st = start % d;
        assert_grad(|xs| view(&xs[0], v)?.narrow(0, st, d - st)?.sqr(), &[x.clone()])?;
        assert_grad(|xs| view(&xs[0], v)?.select(0, st)?.unsqueeze(0)?.squeeze(0)?.sqr(), &[x.clone()])?;
        assert_grad(|xs| view(&xs[0], v)?.unsqueeze(-1)?.exp(), &[x])?;
    }

    #[test]
    fn grad_broadcast_to(s in shape(2, 4), seed in 0u64..1000, extra in 1usize..4) {
        let x = uniform(&s, seed, -1.0, 1.0);
        let mut target = vec![extra];
        target.extend(&s);
        assert_grad(|xs| xs[0].broadcast_to(&target)?.sqr(), &[x.clone()])?;
        let mut s1 = s.clone();
        s1[0] = 1;
        let x1 = uniform(&s1, seed, -1.0, 1.0);
        assert_grad(|xs| xs[0].expand(&s)?.mul(&xs[0].expand(&s)?), &[x1])?;
    }

    #[test]
    fn grad_concat_stack_split_chunk(s in shape(3, 4), v in variant(), seed in 0u64..1000, axis_pick in 0usize..3) {
        let axis = (axis_pick % s.len()) as isize;
        let a = uniform(&leaf_shape(&s, v), seed, -1.0, 1.0);
        let b = uniform(&s, seed + 1, -1.0, 1.0);
        assert_grad(|xs| Tensor::concat(&[&view(&xs[0], v)?, &xs[1], &xs[1]], axis)?.sqr(), &[a.clone(), b.clone()])?;
        assert_grad(|xs| Tensor::stack(&[&view(&xs[0], v)?, &xs[1]], axis)?.exp(), &[a.clone(), b.clone()])?;
        assert_grad(|xs| {
            let parts = xs[1].chunk(2, axis)?;
            let mut acc = parts[0].sqr()?.sum_all()?;
            for p in &parts[1..] { acc = acc.add(&p.exp()?.sum_all()?)?; }
            Ok(acc)
        }, &[a, b])?;
    }
}

#[test]
fn grad_cast_routes_gradient_between_float_dtypes() {
    let x = uniform(&[5], 3, -1.0, 1.0).requires_grad_();
    x.to_dtype(DType::F32)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = x.grad().unwrap();
    assert_eq!(g.dtype(), DType::F64);
    for (g, x) in g
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .zip(x.to_vec::<f64>().unwrap())
    {
        assert!((g - 2.0 * x).abs() < 1e-6);
    }
}

#[test]
fn views_share_storage_and_copy_only_when_needed() {
    let x = Tensor::from_vec((0..12).map(|v| v as f32).collect::<Vec<_>>(), &[3, 4]).unwrap();
    let t = x.t().unwrap();
    assert!(t.same_storage(&x) && !t.is_contiguous());
    assert_eq!(t.to_vec::<f32>().unwrap()[..3], [0.0, 4.0, 8.0]);
    let c = t.contiguous().unwrap();
    assert!(!c.same_storage(&x) && c.is_contiguous());
    assert!(x.contiguous().unwrap().same_storage(&x));
    let n = x.narrow(1, 1, 2).unwrap();
    assert!(n.same_storage(&x));
    assert_eq!(
        n.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 5.0, 6.0, 9.0, 10.0]
    );
    // A reshape that strides can express stays a view.
    let r = x.reshape(&[3, 2, 2]).unwrap();
    assert!(r.same_storage(&x));
    let e = x.reshape(&[5, 2]).unwrap_err().to_string();
    assert_eq!(
        e,
        "reshape: cannot reshape [3, 4] (12 elements) to [5, 2] (10 elements)"
    );
    let parts = x.split(&[1, 3], 1).unwrap();
    assert_eq!(parts[1].shape(), &[3, 3]);
    assert!(x.split(&[1, 2], 1).is_err());
}

#[test]
fn eye_on_is_the_identity() {
    for n in [0, 1, 2, 7] {
        for dtype in [DType::F32, DType::F64, DType::BF16, DType::I64] {
            let eye = Tensor::eye_on(n, dtype, selfsup_tensor::Device::Cpu).unwrap();
            assert_eq!((eye.shape(), eye.dtype()), (&[n, n][..], dtype));
            let want = Tensor::arange(n, DType::I64)
                .one_hot(n, DType::F64)
                .unwrap();
            assert_eq!(
                eye.to_vec_f64().unwrap(),
                want.to_vec_f64().unwrap(),
                "{n} x {n} {dtype:?}"
            );
        }
    }
}

#[test]
fn dtypes_convert_and_matmul_in_half_precision() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    for d in [DType::BF16, DType::F16] {
        let h = x.to_dtype(d).unwrap();
        assert_eq!(h.dtype(), d);
        let p = h.matmul(&h).unwrap();
        assert_eq!(p.dtype(), d);
        assert_eq!(
            p.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(),
            vec![7.0, 10.0, 15.0, 22.0]
        );
    }
    let i = Tensor::from_vec(vec![3i64, 0, 1], &[3]).unwrap();
    assert_eq!(
        i.one_hot(4, DType::F32).unwrap().to_vec::<f32>().unwrap()[..4],
        [0.0, 0.0, 0.0, 1.0]
    );
    assert!(
        x.exp().is_ok()
            && x.to_dtype(DType::BF16)
                .unwrap()
                .exp()
                .unwrap_err()
                .to_string()
                .contains("bf16")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Reshaping a permuted or sliced view (a view when strides allow, else a copy) gives the
    /// same elements as reshaping a contiguous copy.
    #[test]
    fn reshape_of_strided_views_matches_contiguous(s in shape(4, 4), v in variant(), split in 0usize..4, seed in 0u64..1000) {
        let x = uniform(&leaf_shape(&s, v), seed, -1.0, 1.0);
        let y = view(&x, v).unwrap();
        // Target: split one axis into (d/f, f) if divisible, then merge the first two axes.
        let mut t = s.clone();
        let a = split % t.len();
        if t[a] % 2 == 0 && t[a] > 2 {
            let d = t[a];
            t.splice(a..=a, [d / 2, 2]);
        }
        if t.len() >= 2 {
            let m = t[0] * t[1];
            t.splice(0..2, [m]);
        }
        let r = y.reshape(&t).unwrap();
        let expected = y.contiguous().unwrap().to_vec::<f64>().unwrap();
        prop_assert_eq!(r.to_vec::<f64>().unwrap(), expected);
        prop_assert_eq!(r.shape(), &t[..]);
    }
}
