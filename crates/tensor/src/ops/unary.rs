//! Elementwise unary ops (exp, log, relu, gelu, ...) and scalar variants (x + c, x * c, x^p),
//! with backward `dx = g * f'(x)` computed from the input and the saved output in one pass.

use crate::autograd::BackwardOp;
use crate::cpu::strided::map_n;
use crate::dtype::Float;
use crate::error::Result;
use crate::ops::{float_map, float_map2, float_map3};
use crate::storage::Storage;
use crate::Tensor;

/// One elementwise function: its value and its derivative (given input `x` and output `y`).
/// The CUDA backend looks its kernel up by [`UnaryOp::NAME`].
pub trait UnaryOp: Clone + Send + Sync + 'static {
    /// Op and kernel name.
    const NAME: &'static str;
    /// f(x).
    fn f<T: Float>(&self, x: T) -> T;
    /// f'(x), where `y = f(x)` is available for ops whose derivative is cheaper from it.
    fn df<T: Float>(&self, x: T, y: T) -> T;
    /// Whether [`UnaryOp::df`] reads `y`; when not, the backward pass does not read the saved
    /// output (one memory stream fewer).
    const DF_USES_Y: bool = true;
    /// The op's scalar fields in declaration order, padded with zeros (the CUDA kernels take
    /// them as `p0, p1`).
    fn params(&self) -> [f64; 2] {
        [0.0; 2]
    }
}

macro_rules! unary_op {
    ($(#[$m:meta])* $name:ident $( { $($field:ident),* } )?, $kernel:literal, |$s:ident, $x:ident| $f:expr, |$s2:ident, $x2:ident, $y2:ident| $df:expr $(, uses_y = $uy:literal)?) => {
        $(#[$m])*
        #[derive(Clone, Debug)]
        pub struct $name { $( $(#[doc = concat!("The op's `", stringify!($field), "` (see above).")] pub $field: f64),* )? }
        impl UnaryOp for $name {
            const NAME: &'static str = $kernel;
            $(const DF_USES_Y: bool = $uy;)?
            $(
            fn params(&self) -> [f64; 2] {
                let v = [$(self.$field),*];
                [v.first().copied().unwrap_or(0.0), v.get(1).copied().unwrap_or(0.0)]
            }
            )?
            #[inline(always)]
            #[allow(unused_variables)]
            fn f<T: Float>(&self, $x: T) -> T {
                let $s = self;
                $f
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn df<T: Float>(&self, $x2: T, $y2: T) -> T {
                let $s2 = self;
                $df
            }
        }
    };
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const INV_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

unary_op!(/** -x */ Neg, "neg", |s, x| -x, |s, x, y| -T::ONE);
unary_op!(/** e^x */ Exp, "exp", |s, x| x.exp(), |s, x, y| y);
unary_op!(/** ln x */ Log, "log", |s, x| x.ln(), |s, x, y| T::ONE / x);
unary_op!(/** sqrt x */ Sqrt, "sqrt", |s, x| x.sqrt(), |s, x, y| T::c(0.5) / y);
unary_op!(/** 1 / sqrt x */ Rsqrt, "rsqrt", |s, x| T::ONE / x.sqrt(), |s, x, y| T::c(-0.5) * y * y * y);
unary_op!(/** |x| (derivative 0 at 0) */ Abs, "abs", |s, x| x.abs(), |s, x, y| if x > T::ZERO { T::ONE } else if x < T::ZERO { -T::ONE } else { T::ZERO });
unary_op!(/** max(x, 0) */ Relu, "relu", |s, x| if x > T::ZERO { x } else { T::ZERO }, |s, x, y| if x > T::ZERO { T::ONE } else { T::ZERO }, uses_y = false);
unary_op!(/** x if x > 0 else slope * x */ LeakyRelu { slope }, "leaky_relu", |s, x| if x > T::ZERO { x } else { T::c(s.slope) * x }, |s, x, y| if x > T::ZERO { T::ONE } else { T::c(s.slope) });
unary_op!(/** 1 / (1 + e^-x) */ Sigmoid, "sigmoid", |s, x| sigmoid(x), |s, x, y| y * (T::ONE - y));
unary_op!(/** tanh x */ Tanh, "tanh", |s, x| x.tanh(), |s, x, y| T::ONE - y * y);
unary_op!(/** x * sigmoid(x) */ Silu, "silu", |s, x| x * sigmoid(x), |s, x, y| { let sg = sigmoid(x); sg * (T::ONE + x * (T::ONE - sg)) });
unary_op!(/** GELU, exact form x * Phi(x) */ GeluErf, "gelu_erf", |s, x| T::c(0.5) * x * (x * T::c(INV_SQRT_2)).erf1p_gauss().0,
    |s, x, y| { let (e1p, g) = (x * T::c(INV_SQRT_2)).erf1p_gauss(); T::c(0.5) * e1p + x * T::c(INV_SQRT_2PI) * g }, uses_y = false);
unary_op!(/** GELU, tanh approximation */ GeluTanh, "gelu_tanh",
|s, x| T::c(0.5) * x * (T::ONE + (T::c(SQRT_2_OVER_PI) * (x + T::c(0.044715) * x * x * x)).tanh()),
|s, x, y| {
    let u = T::c(SQRT_2_OVER_PI) * (x + T::c(0.044715) * x * x * x);
    let t = u.tanh();
    T::c(0.5) * (T::ONE + t) + T::c(0.5) * x * (T::ONE - t * t) * T::c(SQRT_2_OVER_PI) * (T::ONE + T::c(3.0 * 0.044715) * x * x)
}, uses_y = false);
unary_op!(/** min(max(x, lo), hi); derivative 1 strictly inside */ Clamp { lo, hi }, "clamp",
    |s, x| if x < T::c(s.lo) { T::c(s.lo) } else if x > T::c(s.hi) { T::c(s.hi) } else { x },
    |s, x, y| if x > T::c(s.lo) && x < T::c(s.hi) { T::ONE } else { T::ZERO });
unary_op!(/** x + c */ AddScalar { c }, "add_scalar", |s, x| x + T::c(s.c), |s, x, y| T::ONE);
unary_op!(/** x * c */ MulScalar { c }, "mul_scalar", |s, x| x * T::c(s.c), |s, x, y| T::c(s.c));
unary_op!(/** x ^ p */ PowScalar { p }, "pow_scalar", |s, x| pow_scalar(x, s.p), |s, x, y| T::c(s.p) * pow_scalar(x, s.p - 1.0));
unary_op!(/** c / x */ RdivScalar { c }, "rdiv_scalar", |s, x| T::c(s.c) / x, |s, x, y| -y / x);

/// The kernel names of every op in this file (the CUDA kernels are `<name>_<dtype>`).
#[cfg(all(test, feature = "cuda"))]
pub(crate) const UNARY_NAMES: &[&str] = &[
    Neg::NAME,
    Exp::NAME,
    Log::NAME,
    Sqrt::NAME,
    Rsqrt::NAME,
    Abs::NAME,
    Relu::NAME,
    LeakyRelu::NAME,
    Sigmoid::NAME,
    Tanh::NAME,
    Silu::NAME,
    GeluErf::NAME,
    GeluTanh::NAME,
    Clamp::NAME,
    AddScalar::NAME,
    MulScalar::NAME,
    PowScalar::NAME,
    RdivScalar::NAME,
];

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

#[inline(always)]
fn pow_scalar<T: Float>(x: T, p: f64) -> T {
    if p == 2.0 {
        x * x
    } else if p == 1.0 {
        x
    } else if p == 0.0 {
        T::ONE
    } else {
        x.powf(T::c(p))
    }
}

/// Applies `op` elementwise, recording its backward.
pub fn unary<U: UnaryOp>(x: &Tensor, op: U) -> Result<Tensor> {
    let storage = {
        let g = x.read();
        let l = x.layout();
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(c) = &*g {
            let s = crate::cuda::elementwise::unary(U::NAME, op.params(), c, l)?;
            drop(g);
            return Ok(Tensor::from_op(Storage::Cuda(s), x.shape(), &[x], || {
                Box::new(UnaryBackward(op))
            }));
        }
        let c = g.cpu(U::NAME)?;
        Storage::Cpu(
            float_map!(U::NAME, c, v => map_n(l.shape(), [(&v[..], l)], #[inline(always)] |[a]| op.f(a))),
        )
    };
    Ok(Tensor::from_op(storage, x.shape(), &[x], || {
        Box::new(UnaryBackward(op))
    }))
}

struct UnaryBackward<U>(U);

impl<U: UnaryOp> BackwardOp for UnaryBackward<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let op = &self.0;
        let shape = x.shape();
        let gb = grad.broadcast_to(shape)?;
        let storage = {
            let (gx, gy, gg) = (x.read(), out.read(), gb.read());
            let (lx, ly, lg) = (x.layout(), out.layout(), gb.layout());
            #[cfg(feature = "cuda")]
            if let (Storage::Cuda(cx), Storage::Cuda(cy), Storage::Cuda(cg)) = (&*gx, &*gy, &*gg) {
                let y = U::DF_USES_Y.then_some((cy, ly));
                let s = crate::cuda::elementwise::unary_backward(
                    U::NAME,
                    op.params(),
                    (cx, lx),
                    y,
                    (cg, lg),
                )?;
                return Ok(vec![Some(Tensor::from_storage(Storage::Cuda(s), shape))]);
            }
            Storage::Cpu(if U::DF_USES_Y {
                float_map3!(U::NAME, gx.cpu(U::NAME)?, gy.cpu(U::NAME)?, gg.cpu(U::NAME)?, a, b, c =>
                map_n(shape, [(&a[..], lx), (&b[..], ly), (&c[..], lg)], #[inline(always)] |[x, y, g]| g * op.df(x, y)))
            } else {
                float_map2!(U::NAME, gx.cpu(U::NAME)?, gg.cpu(U::NAME)?, a, c =>
                map_n(shape, [(&a[..], lx), (&c[..], lg)], #[inline(always)] |[x, g]| g * op.df(x, x)))
            })
        };
        Ok(vec![Some(Tensor::from_storage(storage, shape))])
    }
}

macro_rules! methods {
    ($($(#[$m:meta])* $fn:ident => $op:expr;)*) => {
        impl Tensor {
            $($(#[$m])* pub fn $fn(&self) -> Result<Tensor> { unary(self, $op) })*
        }
    };
}

methods! {
    /// Elementwise negation.
    neg => Neg {};
    /// Elementwise e^x.
    exp => Exp {};
    /// Elementwise natural logarithm.
    log => Log {};
    /// Elementwise square root.
    sqrt => Sqrt {};
    /// Elementwise 1/sqrt(x).
    rsqrt => Rsqrt {};
    /// Elementwise absolute value.
    abs => Abs {};
    /// Rectified linear unit.
    relu => Relu {};
    /// Logistic sigmoid.
    sigmoid => Sigmoid {};
    /// Hyperbolic tangent.
    tanh => Tanh {};
    /// x * sigmoid(x) (SiLU / swish).
    silu => Silu {};
    /// GELU, exact (erf) form, as PyTorch's default.
    gelu => GeluErf {};
    /// GELU, tanh approximation (GPT-2's).
    gelu_tanh => GeluTanh {};
    /// x * x.
    sqr => PowScalar { p: 2.0 };
    /// 1 / x.
    recip => RdivScalar { c: 1.0 };
}

impl Tensor {
    /// Leaky ReLU with the given negative slope.
    pub fn leaky_relu(&self, slope: f64) -> Result<Tensor> {
        unary(self, LeakyRelu { slope })
    }
    /// Clamps into `[lo, hi]` (use infinities for one-sided clamps).
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        if lo > hi || lo.is_nan() || hi.is_nan() {
            return crate::error::invalid(
                "clamp",
                format!("lower bound {lo} is above upper bound {hi}"),
            );
        }
        unary(self, Clamp { lo, hi })
    }
    /// x + c.
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        unary(self, AddScalar { c })
    }
    /// x - c.
    pub fn sub_scalar(&self, c: f64) -> Result<Tensor> {
        unary(self, AddScalar { c: -c })
    }
    /// x * c.
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        unary(self, MulScalar { c })
    }
    /// x / c.
    pub fn div_scalar(&self, c: f64) -> Result<Tensor> {
        unary(self, MulScalar { c: 1.0 / c })
    }
    /// x ^ p.
    pub fn pow_scalar(&self, p: f64) -> Result<Tensor> {
        unary(self, PowScalar { p })
    }
    /// c / x.
    pub fn rdiv_scalar(&self, c: f64) -> Result<Tensor> {
        unary(self, RdivScalar { c })
    }
}
