//! Elementwise binary ops with NumPy broadcasting (add, sub, mul, div, pow, maximum, minimum),
//! comparisons (no gradient) and `where_`. Backward reduces each gradient back to its operand's
//! shape over the broadcast axes.

use crate::autograd::BackwardOp;
use crate::cpu::strided::map_n;
use crate::dtype::Float;
use crate::error::Result;
use crate::layout::broadcast_shapes;
use crate::ops::{check_same, float_map2, float_map3, sum_to_shape};
use crate::storage::Storage;
use crate::Tensor;

/// One elementwise function of two arguments (the CUDA kernel is looked up by `NAME`).
pub trait BinaryOp: Clone + Send + Sync + 'static {
    /// Op and kernel name.
    const NAME: &'static str;
    /// f(a, b).
    fn f<T: Float>(a: T, b: T) -> T;
}

macro_rules! binary_op {
    ($name:ident, $kernel:literal, |$a:ident, $b:ident| $f:expr) => {
        #[doc = concat!("The `", $kernel, "` kernel.")]
        #[derive(Clone, Copy, Debug)]
        pub struct $name;
        impl BinaryOp for $name {
            const NAME: &'static str = $kernel;
            #[inline(always)]
            fn f<T: Float>($a: T, $b: T) -> T {
                $f
            }
        }
    };
}

binary_op!(Add, "add", |a, b| a + b);
binary_op!(Sub, "sub", |a, b| a - b);
binary_op!(Mul, "mul", |a, b| a * b);
binary_op!(Div, "div", |a, b| a / b);
binary_op!(Pow, "pow", |a, b| a.powf(b));
binary_op!(Maximum, "maximum", |a, b| a.max(b));
binary_op!(Minimum, "minimum", |a, b| a.min(b));
binary_op!(Eq, "eq", |a, b| if a == b { T::ONE } else { T::ZERO });
binary_op!(Ne, "ne", |a, b| if a != b { T::ONE } else { T::ZERO });
binary_op!(Lt, "lt", |a, b| if a < b { T::ONE } else { T::ZERO });
binary_op!(Le, "le", |a, b| if a <= b { T::ONE } else { T::ZERO });
binary_op!(Gt, "gt", |a, b| if a > b { T::ONE } else { T::ZERO });
binary_op!(Ge, "ge", |a, b| if a >= b { T::ONE } else { T::ZERO });

/// The kernel names of every op in this file (the CUDA kernels are `<name>_<dtype>`).
#[cfg(all(test, feature = "cuda"))]
pub(crate) const BINARY_NAMES: &[&str] = &[
    Add::NAME,
    Sub::NAME,
    Mul::NAME,
    Div::NAME,
    Pow::NAME,
    Maximum::NAME,
    Minimum::NAME,
    Eq::NAME,
    Ne::NAME,
    Lt::NAME,
    Le::NAME,
    Gt::NAME,
    Ge::NAME,
];

/// Evaluates `B` over the broadcast of `a` and `b` without recording.
fn binary_forward<B: BinaryOp>(a: &Tensor, b: &Tensor) -> Result<(Storage, Vec<usize>)> {
    check_same(B::NAME, a, b)?;
    let shape = broadcast_shapes(B::NAME, a.shape(), b.shape())?;
    let (la, lb) = (
        a.layout().broadcast_to(&shape)?,
        b.layout().broadcast_to(&shape)?,
    );
    let (ga, gb) = (a.read(), b.read());
    #[cfg(feature = "cuda")]
    if let (Storage::Cuda(x), Storage::Cuda(y)) = (&*ga, &*gb) {
        let s = crate::cuda::elementwise::binary(B::NAME, (x, &la), (y, &lb), &shape)?;
        return Ok((Storage::Cuda(s), shape));
    }
    let s = float_map2!(B::NAME, ga.cpu(B::NAME)?, gb.cpu(B::NAME)?, x, y =>
        map_n(&shape, [(&x[..], &la), (&y[..], &lb)], #[inline(always)] |[p, q]| B::f(p, q)));
    Ok((Storage::Cpu(s), shape))
}

fn binary<B: BinaryOp, G: BackwardOp + 'static>(
    a: &Tensor,
    b: &Tensor,
    bw: impl FnOnce() -> G,
) -> Result<Tensor> {
    let (s, shape) = binary_forward::<B>(a, b)?;
    Ok(Tensor::from_op(s, &shape, &[a, b], || Box::new(bw())))
}

fn no_grad_binary<B: BinaryOp>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (s, shape) = binary_forward::<B>(a, b)?;
    Ok(Tensor::from_storage(s, &shape))
}

/// Backward of the binary ops: a function from (a, b, out, grad) to the unreduced gradients.
struct BinaryBackward {
    name: &'static str,
    f: fn(&Tensor, &Tensor, &Tensor, &Tensor, [bool; 2]) -> Result<[Option<Tensor>; 2]>,
}

impl BackwardOp for BinaryBackward {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let need = [a.requires_grad(), b.requires_grad()];
        let [ga, gb] = (self.f)(a, b, out, g, need)?;
        Ok(vec![
            ga.map(|t| sum_to_shape(&t, a.shape())).transpose()?,
            gb.map(|t| sum_to_shape(&t, b.shape())).transpose()?,
        ])
    }
}

fn when(need: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if need {
        f().map(Some)
    } else {
        Ok(None)
    }
}

/// The share of the gradient that goes to `a` in maximum/minimum: 1 where `a` wins, 1/2 on ties.
fn winner_mask(
    a: &Tensor,
    b: &Tensor,
    wins: fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    wins(a, b)?.add(&a.eq(b)?.mul_scalar(0.5)?)
}

impl Tensor {
    /// `self + rhs`, broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary::<Add, _>(self, rhs, || BinaryBackward {
            name: "add",
            f: |_, _, _, g, n| Ok([n[0].then(|| g.clone()), n[1].then(|| g.clone())]),
        })
    }
    /// `self - rhs`, broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary::<Sub, _>(self, rhs, || BinaryBackward {
            name: "sub",
            f: |_, _, _, g, n| Ok([n[0].then(|| g.clone()), when(n[1], || g.neg())?]),
        })
    }
    /// `self * rhs`, broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary::<Mul, _>(self, rhs, || BinaryBackward {
            name: "mul",
            f: |a, b, _, g, n| Ok([when(n[0], || g.mul(b))?, when(n[1], || g.mul(a))?]),
        })
    }
    /// `self / rhs`, broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary::<Div, _>(self, rhs, || BinaryBackward {
            name: "div",
            f: |_, b, y, g, n| {
                Ok([
                    when(n[0], || g.div(b))?,
                    when(n[1], || g.mul(y)?.div(b)?.neg())?,
                ])
            },
        })
    }
    /// `self ^ rhs`, broadcasting (the gradient for the exponent needs `self > 0`).
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        binary::<Pow, _>(self, rhs, || BinaryBackward {
            name: "pow",
            f: |a, b, y, g, n| {
                Ok([
                    when(n[0], || g.mul(b)?.mul(&a.pow(&b.sub_scalar(1.0)?)?))?,
                    when(n[1], || g.mul(y)?.mul(&a.log()?))?,
                ])
            },
        })
    }
    /// Elementwise maximum (ties share the gradient equally).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary::<Maximum, _>(self, rhs, || BinaryBackward {
            name: "maximum",
            f: |a, b, _, g, n| {
                Ok([
                    when(n[0], || g.mul(&winner_mask(a, b, Tensor::gt)?))?,
                    when(n[1], || g.mul(&winner_mask(b, a, Tensor::gt)?))?,
                ])
            },
        })
    }
    /// Elementwise minimum (ties share the gradient equally).
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary::<Minimum, _>(self, rhs, || BinaryBackward {
            name: "minimum",
            f: |a, b, _, g, n| {
                Ok([
                    when(n[0], || g.mul(&winner_mask(a, b, Tensor::lt)?))?,
                    when(n[1], || g.mul(&winner_mask(b, a, Tensor::lt)?))?,
                ])
            },
        })
    }
    /// 1 where `self == rhs`, else 0 (same float dtype; no gradient).
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        no_grad_binary::<Eq>(self, rhs)
    }
    /// 1 where `self != rhs`, else 0.
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        no_grad_binary::<Ne>(self, rhs)
    }
    /// 1 where `self < rhs`, else 0.
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        no_grad_binary::<Lt>(self, rhs)
    }
    /// 1 where `self <= rhs`, else 0.
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        no_grad_binary::<Le>(self, rhs)
    }
    /// 1 where `self > rhs`, else 0.
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        no_grad_binary::<Gt>(self, rhs)
    }
    /// 1 where `self >= rhs`, else 0.
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        no_grad_binary::<Ge>(self, rhs)
    }
    /// `self > c` as 0/1.
    pub fn gt_scalar(&self, c: f64) -> Result<Tensor> {
        self.gt(&Tensor::full_on(c, &[], self.dtype(), self.device())?)
    }
    /// `self < c` as 0/1.
    pub fn lt_scalar(&self, c: f64) -> Result<Tensor> {
        self.lt(&Tensor::full_on(c, &[], self.dtype(), self.device())?)
    }

    /// `cond ? self : other` elementwise, broadcasting all three; `cond` is nonzero for true and
    /// has the float dtype of the operands. Gradients flow to `self` and `other`, not `cond`.
    pub fn where_(&self, cond: &Tensor, other: &Tensor) -> Result<Tensor> {
        check_same("where", self, other)?;
        check_same("where", self, cond)?;
        let shape = broadcast_shapes(
            "where",
            &broadcast_shapes("where", cond.shape(), self.shape())?,
            other.shape(),
        )?;
        let (lc, la, lb) = (
            cond.layout().broadcast_to(&shape)?,
            self.layout().broadcast_to(&shape)?,
            other.layout().broadcast_to(&shape)?,
        );
        let s = {
            let (gc, ga, gb) = (cond.read(), self.read(), other.read());
            #[cfg(feature = "cuda")]
            if let (Storage::Cuda(c), Storage::Cuda(a), Storage::Cuda(b)) = (&*gc, &*ga, &*gb) {
                let s = crate::cuda::elementwise::where_((c, &lc), (a, &la), (b, &lb), &shape)?;
                drop((gc, ga, gb));
                return Ok(Tensor::from_op(
                    Storage::Cuda(s),
                    &shape,
                    &[self, other, cond],
                    || Box::new(WhereBackward),
                ));
            }
            Storage::Cpu(
                float_map3!("where", gc.cpu("where")?, ga.cpu("where")?, gb.cpu("where")?, c, a, b =>
                map_n(&shape, [(&c[..], &lc), (&a[..], &la), (&b[..], &lb)], |[c, a, b]| if c != Float::ZERO { a } else { b })),
            )
        };
        Ok(Tensor::from_op(s, &shape, &[self, other, cond], || {
            Box::new(WhereBackward)
        }))
    }

    /// `self` with `value` wherever `mask` is nonzero.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        Tensor::full_on(value, &[], self.dtype(), self.device())?
            .where_(mask, self)?
            .broadcast_to(self.shape())
    }

    /// `self + alpha * rhs`.
    pub fn add_scaled(&self, rhs: &Tensor, alpha: f64) -> Result<Tensor> {
        self.add(&rhs.mul_scalar(alpha)?)
    }
}

struct WhereBackward;

impl BackwardOp for WhereBackward {
    fn name(&self) -> &'static str {
        "where"
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        _out: &Tensor,
        g: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let (a, b, c) = (&inputs[0], &inputs[1], &inputs[2]);
        let zero = Tensor::zeros_on(&[], g.dtype(), g.device())?;
        let ga = when(a.requires_grad(), || {
            sum_to_shape(&g.where_(c, &zero)?, a.shape())
        })?;
        let gb = when(b.requires_grad(), || {
            sum_to_shape(&zero.where_(c, g)?, b.shape())
        })?;
        Ok(vec![ga, gb, None])
    }
}
