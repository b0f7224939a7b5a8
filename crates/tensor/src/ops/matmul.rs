//! Matrix multiply: 2-D, batched, with broadcast batch axes (1-D operands are promoted as in
//! NumPy). Transposed views go to the GEMM as strides, without a copy. bf16/f16 operands are
//! multiplied in f32 and the result converted back.

use crate::autograd::BackwardOp;
use crate::cpu::matmul::matmul as cpu_matmul;
use crate::error::{shape_err, Result};
use crate::layout::broadcast_shapes;
use crate::ops::check_same;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Tensor};

struct MatmulBack;

impl BackwardOp for MatmulBack {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let ga = if a.requires_grad() {
            Some(crate::ops::sum_to_shape(&g.matmul(&b.t()?)?, a.shape())?)
        } else {
            None
        };
        let gb = if b.requires_grad() {
            Some(crate::ops::sum_to_shape(&a.t()?.matmul(g)?, b.shape())?)
        } else {
            None
        };
        Ok(vec![ga, gb])
    }
}

impl Tensor {
    /// Matrix product of `[.., m, k]` and `[.., k, n]`, broadcasting the batch axes.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        check_same("matmul", self, rhs)?;
        // NumPy promotion of 1-D operands.
        if self.rank() == 1 || rhs.rank() == 1 {
            let a = if self.rank() == 1 {
                self.unsqueeze(0)?
            } else {
                self.clone()
            };
            let b = if rhs.rank() == 1 {
                rhs.unsqueeze(-1)?
            } else {
                rhs.clone()
            };
            let out = a.matmul(&b)?;
            let out = if self.rank() == 1 {
                out.squeeze(-2)?
            } else {
                out
            };
            return if rhs.rank() == 1 {
                out.squeeze(-1)
            } else {
                Ok(out)
            };
        }
        if self.rank() == 0 || rhs.rank() == 0 {
            return shape_err(
                "matmul",
                format!(
                    "needs at least 1-D operands, got {:?} and {:?}",
                    self.shape(),
                    rhs.shape()
                ),
            );
        }
        let (sa, sb) = (self.shape(), rhs.shape());
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != k2 {
            return shape_err(
                "matmul",
                format!("lhs {sa:?} and rhs {sb:?} do not agree on the inner dimension"),
            );
        }
        let batch_shape = broadcast_shapes("matmul", &sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
        let batch: usize = batch_shape.iter().product();
        let mut fa = batch_shape.clone();
        fa.extend([m, k]);
        let mut fb = batch_shape.clone();
        fb.extend([k, n]);
        let mut out_shape = batch_shape;
        out_shape.extend([m, n]);
        // Also checks that the operands broadcast; the layouts are read by the CUDA arm.
        #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
        let (la, lb) = (
            self.layout().broadcast_to(&fa)?,
            rhs.layout().broadcast_to(&fb)?,
        );
        #[cfg(feature = "cuda")]
        if let (Storage::Cuda(x), Storage::Cuda(y)) = (&*self.read(), &*rhs.read()) {
            if matches!(self.dtype(), DType::F32 | DType::F64) {
                let s = crate::cuda::matmul::matmul(x, &la, y, &lb, batch, m, k, n)?;
                return Ok(Tensor::from_op(
                    Storage::Cuda(s),
                    &out_shape,
                    &[self, rhs],
                    || Box::new(MatmulBack),
                ));
            }
        }
        let s = match self.dtype() {
            DType::F32 | DType::F64 => {
                // Operands rounded as `crate::precision` asks (themselves at f32 precision), by
                // the GEMM as it packs them where it multiplies in bf16.
                let hw = crate::precision::cpu_bf16_products();
                let (ca, cb) = if hw {
                    (self.clone(), rhs.clone())
                } else {
                    (
                        crate::precision::cpu_operand(self)?,
                        crate::precision::cpu_operand(rhs)?,
                    )
                };
                let (la, lb) = (
                    ca.layout().broadcast_to(&fa)?,
                    cb.layout().broadcast_to(&fb)?,
                );
                let (ga, gb) = (ca.read(), cb.read());
                match (ga.cpu("matmul")?, gb.cpu("matmul")?) {
                    (CpuStorage::F32(x), CpuStorage::F32(y)) => {
                        CpuStorage::F32(crate::cpu::gemm::with_bf16_products(hw, || {
                            cpu_matmul(x, &la, y, &lb, batch, m, k, n)
                        }))
                    }
                    (CpuStorage::F64(x), CpuStorage::F64(y)) => {
                        CpuStorage::F64(cpu_matmul(x, &la, y, &lb, batch, m, k, n))
                    }
                    (x, _) => return Err(crate::ops::unsupported("matmul", x.dtype())),
                }
            }
            DType::BF16 | DType::F16 => {
                let _g = crate::no_grad();
                let r = self
                    .to_dtype(DType::F32)?
                    .matmul(&rhs.to_dtype(DType::F32)?)?
                    .to_dtype(self.dtype())?;
                return Ok(r.attach(&[self, rhs], || Box::new(MatmulBack)));
            }
            d => return Err(crate::ops::unsupported("matmul", d)),
        };
        Ok(Tensor::from_op(
            Storage::Cpu(s),
            &out_shape,
            &[self, rhs],
            || Box::new(MatmulBack),
        ))
    }
}
