//! Dtype conversion (`to_dtype`), differentiable between float types.

use crate::autograd::BackwardOp;
use crate::dtype::Element;
use crate::error::Result;
use crate::storage::CpuStorage;
use crate::{with_cpu, DType, Tensor};

fn convert<S: Element, D: Element>(v: &[S]) -> Vec<D> {
    v.iter().map(|&x| D::from_f64(x.to_f64())).collect()
}

fn convert_storage(c: &CpuStorage, to: DType) -> CpuStorage {
    // From i64 directly, not through f64: one rounding to f32 (through f64 a value past 2^53
    // would be rounded twice), and a saturating clamp to u32 (the CUDA kernels do the same).
    match (c, to) {
        (CpuStorage::I64(v), DType::F32) => {
            return CpuStorage::F32(v.iter().map(|&x| x as f32).collect())
        }
        (CpuStorage::I64(v), DType::U32) => {
            return CpuStorage::U32(
                v.iter()
                    .map(|&x| x.clamp(0, u32::MAX as i64) as u32)
                    .collect(),
            )
        }
        _ => {}
    }
    with_cpu!(c, v => match to {
        DType::F32 => CpuStorage::F32(convert(v)),
        DType::F64 => CpuStorage::F64(convert(v)),
        DType::BF16 => CpuStorage::BF16(convert(v)),
        DType::F16 => CpuStorage::F16(convert(v)),
        DType::I64 => CpuStorage::I64(convert(v)),
        DType::U32 => CpuStorage::U32(convert(v)),
    })
}

struct CastBack(DType);
impl BackwardOp for CastBack {
    fn name(&self) -> &'static str {
        "to_dtype"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_dtype(self.0)?)])
    }
}

impl Tensor {
    /// Converts the elements to `dtype` (rounding to nearest; float to integer truncates toward
    /// zero and saturates, as does i64 to u32). Gradients flow between float dtypes.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let c = self.contiguous()?;
        #[cfg(feature = "cuda")]
        if let crate::storage::Storage::Cuda(g) = &*c.read() {
            let l = c.layout();
            let src = if l.offset() == 0 {
                None
            } else {
                Some(g.contiguous(l)?)
            };
            let s = src.as_ref().unwrap_or(g).cast(dtype, l.numel())?;
            let out = Tensor::from_storage(crate::storage::Storage::Cuda(s), self.shape());
            return Ok(if dtype.is_float() && self.dtype().is_float() {
                let from = self.dtype();
                out.attach(&[self], || Box::new(CastBack(from)))
            } else {
                out
            });
        }
        let s = {
            let g = c.read();
            let cpu = g.cpu("to_dtype")?;
            let l = c.layout();
            let full = convert_storage(cpu, dtype);
            if l.offset() == 0 && l.numel() == cpu.len() {
                full
            } else {
                with_cpu!(full, v => Element::into_storage(v[l.offset()..l.offset() + l.numel()].to_vec()))
            }
        };
        let out = Tensor::from_cpu(s, self.shape());
        if dtype.is_float() && self.dtype().is_float() {
            let from = self.dtype();
            Ok(out.attach(&[self], || Box::new(CastBack(from))))
        } else {
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i64_converts_with_one_rounding_and_saturates_to_u32() {
        // 2^60 + 2^36 + 1 lies just above the midpoint of two f32 values: rounded once it goes
        // up; through f64 it would land on the midpoint and then round to even (down).
        let big = (1i64 << 60) + (1 << 36) + 1;
        let t = Tensor::from_vec(vec![big, -1, 1 << 40, 7], &[4]).unwrap();
        let f = t.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(f[0], ((1u64 << 60) + (1 << 37)) as f32);
        assert_eq!(f[0], big as f32);
        let u = t.to_dtype(DType::U32).unwrap().to_vec::<u32>().unwrap();
        assert_eq!(u, vec![u32::MAX, 0, u32::MAX, 7]);
    }
}
