//! Unary and binary elementwise ops on the GPU against the CPU, forward and backward.

use selfsup_tensor::{DType, Device, Result, Tensor};

use crate::{compare, on_each_gpu, rand, tol};

type Unary = (&'static str, fn(&Tensor) -> Result<Tensor>, f64, f64);

/// Every unary op with the input range it is defined on.
const UNARY: &[Unary] = &[
    ("neg", |x| x.neg(), -2.0, 2.0),
    ("exp", |x| x.exp(), -2.0, 2.0),
    ("log", |x| x.log(), 0.1, 3.0),
    ("sqrt", |x| x.sqrt(), 0.1, 3.0),
    ("rsqrt", |x| x.rsqrt(), 0.1, 3.0),
    ("abs", |x| x.abs(), -2.0, 2.0),
    ("relu", |x| x.relu(), -2.0, 2.0),
    ("leaky_relu", |x| x.leaky_relu(0.1), -2.0, 2.0),
    ("sigmoid", |x| x.sigmoid(), -4.0, 4.0),
    ("tanh", |x| x.tanh(), -3.0, 3.0),
    ("silu", |x| x.silu(), -4.0, 4.0),
    ("gelu", |x| x.gelu(), -4.0, 4.0),
    ("gelu_tanh", |x| x.gelu_tanh(), -4.0, 4.0),
    ("clamp", |x| x.clamp(-0.5, 0.7), -2.0, 2.0),
    ("add_scalar", |x| x.add_scalar(1.5), -2.0, 2.0),
    ("mul_scalar", |x| x.mul_scalar(-0.3), -2.0, 2.0),
    ("pow_scalar", |x| x.pow_scalar(1.7), 0.1, 3.0),
    ("sqr", |x| x.sqr(), -2.0, 2.0),
    ("rdiv_scalar", |x| x.rdiv_scalar(2.0), 0.5, 3.0),
];

/// `f(x)` and `dx` for a seed gradient `w`, with x a non-contiguous view on `dev`.
fn run_unary(
    f: fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    w: &Tensor,
    dev: Device,
) -> (Tensor, Tensor) {
    let leaf = x.to_device(dev).unwrap().requires_grad_();
    let view = leaf.permute(&[2, 0, 1]).unwrap();
    let y = f(&view).unwrap();
    assert_eq!(y.device(), dev, "output stays on the input's device");
    y.backward_with(Some(&w.to_device(dev).unwrap()), false)
        .unwrap();
    let g = leaf.grad().expect("gradient reaches the leaf");
    assert_eq!(g.device(), dev, "gradient on the leaf's device");
    (y, g)
}

#[test]
fn unary_ops_match_the_cpu_forward_and_backward() {
    on_each_gpu("unary", |dev| {
        for dtype in [DType::F32, DType::F64] {
            for (i, &(name, f, lo, hi)) in UNARY.iter().enumerate() {
                let x = rand(&[3, 4, 5], dtype, lo, hi, 10 + i as u64);
                let w = rand(&[5, 3, 4], dtype, -1.0, 1.0, 100 + i as u64);
                let (yg, gg) = run_unary(f, &x, &w, dev);
                let (yc, gc) = run_unary(f, &x, &w, Device::Cpu);
                compare(&format!("{name} {dtype:?} forward"), &yg, &yc, tol(dtype));
                compare(&format!("{name} {dtype:?} backward"), &gg, &gc, tol(dtype));
            }
        }
    });
}

type Binary = (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>);

const BINARY: &[Binary] = &[
    ("add", |a, b| a.add(b)),
    ("sub", |a, b| a.sub(b)),
    ("mul", |a, b| a.mul(b)),
    ("div", |a, b| a.div(b)),
    ("pow", |a, b| a.pow(b)),
    ("maximum", |a, b| a.maximum(b)),
    ("minimum", |a, b| a.minimum(b)),
];

const COMPARE: &[Binary] = &[
    ("eq", |a, b| a.eq(b)),
    ("ne", |a, b| a.ne(b)),
    ("lt", |a, b| a.lt(b)),
    ("le", |a, b| a.le(b)),
    ("gt", |a, b| a.gt(b)),
    ("ge", |a, b| a.ge(b)),
];

#[test]
fn binary_ops_match_the_cpu_with_broadcasting_and_views() {
    on_each_gpu("binary", |dev| {
        for dtype in [DType::F32, DType::F64] {
            for (i, &(name, f)) in BINARY.iter().chain(COMPARE).enumerate() {
                // a: a transposed view [4, 3]; b broadcast along rows [1, 3] and a scalar.
                let a = rand(&[3, 4], dtype, 0.5, 2.0, 20 + i as u64).t().unwrap();
                let b = rand(&[1, 3], dtype, 0.5, 2.0, 40 + i as u64);
                // Ties, so eq/maximum see equal elements too.
                let b = if i % 2 == 0 {
                    b
                } else {
                    a.narrow(0, 1, 1).unwrap()
                };
                let s = Tensor::full(1.25, &[], dtype);
                for (which, rhs) in [("row", &b), ("scalar", &s)] {
                    let yg = f(&a.to_device(dev).unwrap(), &rhs.to_device(dev).unwrap()).unwrap();
                    assert_eq!(yg.device(), dev);
                    compare(
                        &format!("{name} {dtype:?} {which}"),
                        &yg,
                        &f(&a, rhs).unwrap(),
                        tol(dtype),
                    );
                }
            }
        }
    });
}

#[test]
fn binary_backward_matches_the_cpu_on_equal_shapes() {
    on_each_gpu("binary backward", |dev| {
        for dtype in [DType::F32, DType::F64] {
            for (i, &(name, f)) in BINARY.iter().enumerate() {
                let a = rand(&[4, 6], dtype, 0.5, 2.0, 60 + i as u64);
                let b = rand(&[6, 4], dtype, 0.5, 2.0, 80 + i as u64);
                let w = rand(&[4, 6], dtype, -1.0, 1.0, 90 + i as u64);
                let run = |d: Device| {
                    let (la, lb) = (
                        a.to_device(d).unwrap().requires_grad_(),
                        b.to_device(d).unwrap().requires_grad_(),
                    );
                    let y = f(&la, &lb.t().unwrap()).unwrap();
                    y.backward_with(Some(&w.to_device(d).unwrap()), false)
                        .unwrap();
                    (la.grad().unwrap(), lb.grad().unwrap())
                };
                let ((ga, gb), (ca, cb)) = (run(dev), run(Device::Cpu));
                compare(&format!("{name} {dtype:?} d/da"), &ga, &ca, tol(dtype));
                compare(&format!("{name} {dtype:?} d/db"), &gb, &cb, tol(dtype));
            }
        }
    });
}

#[test]
fn ops_refuse_operands_on_two_devices() {
    on_each_gpu("mixed devices", |dev| {
        let a = Tensor::ones(&[2], DType::F32);
        let e = a.add(&a.to_device(dev).unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("different devices") && e.contains("to_device"),
            "{e}"
        );
    });
}

#[test]
fn where_and_masked_fill_match_the_cpu() {
    on_each_gpu("where", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let x = rand(&[5, 6], dtype, -1.0, 1.0, 1);
            let y = rand(&[6], dtype, -1.0, 1.0, 2);
            let c = x.gt_scalar(0.0).unwrap();
            let on = |t: &Tensor| t.to_device(dev).unwrap();
            let g = on(&x).where_(&on(&c), &on(&y)).unwrap();
            compare(
                &format!("where {dtype:?}"),
                &g,
                &x.where_(&c, &y).unwrap(),
                0.0,
            );
            let m = on(&x).masked_fill(&on(&c), -9.0).unwrap();
            compare(
                &format!("masked_fill {dtype:?}"),
                &m,
                &x.masked_fill(&c, -9.0).unwrap(),
                0.0,
            );
        }
    });
}

/// Contiguous operands take the kernels' runs of 4 elements (16-byte vectors where every
/// operand is aligned): lengths with a partial last run, and starts that are aligned (0, 4) or
/// not (1), so both the vector and the element-by-element path run, forward and backward.
#[test]
fn contiguous_operands_match_the_cpu_in_runs_with_tails_and_misaligned_starts() {
    on_each_gpu("elementwise runs", |dev| {
        for dtype in [DType::F32, DType::F64] {
            for (k, &n) in [3usize, 1027].iter().enumerate() {
                for start in [0usize, 1, 4] {
                    let seed = 300 + 10 * k as u64 + start as u64;
                    let a = rand(&[n + 8], dtype, 0.5, 2.0, seed);
                    let b = rand(&[n + 8], dtype, 0.5, 2.0, seed + 1000);
                    let (ag, bg) = (a.to_device(dev).unwrap(), b.to_device(dev).unwrap());
                    let view = |t: &Tensor| t.narrow(0, start, n).unwrap();
                    let case = |what: &str| format!("{what} {dtype:?} n={n} start={start}");
                    for &(name, f) in BINARY.iter().chain(COMPARE) {
                        // b's view starts 4 later, so a and b are aligned alike only when
                        // start is.
                        let rhs = |t: &Tensor| t.narrow(0, (start + 4) % 8, n).unwrap();
                        let yg = f(&view(&ag), &rhs(&bg)).unwrap();
                        compare(
                            &case(name),
                            &yg,
                            &f(&view(&a), &rhs(&b)).unwrap(),
                            tol(dtype),
                        );
                    }
                    let c = view(&a).gt_scalar(1.2).unwrap();
                    let wg = view(&ag)
                        .where_(&c.to_device(dev).unwrap(), &view(&bg))
                        .unwrap();
                    let wc = view(&a).where_(&c, &view(&b)).unwrap();
                    compare(&case("where"), &wg, &wc, 0.0);
                    let seed_grad = rand(&[n], dtype, -1.0, 1.0, seed + 2000);
                    for &(name, f, _, _) in UNARY {
                        let run = |d: Device| {
                            let leaf = a.to_device(d).unwrap().requires_grad_();
                            let y = f(&view(&leaf)).unwrap();
                            y.backward_with(Some(&seed_grad.to_device(d).unwrap()), false)
                                .unwrap();
                            (y, leaf.grad().expect("gradient reaches the leaf"))
                        };
                        let ((yg, gg), (yc, gc)) = (run(dev), run(Device::Cpu));
                        compare(&case(&format!("{name} forward")), &yg, &yc, tol(dtype));
                        compare(&case(&format!("{name} backward")), &gg, &gc, tol(dtype));
                    }
                }
            }
        }
    });
}
