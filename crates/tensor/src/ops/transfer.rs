//! Moving tensors between devices: [`Tensor::to_device`]'s copy, and its backward (the gradient
//! goes back to the source device).

use crate::autograd::BackwardOp;
use crate::error::Result;
use crate::storage::Storage;
use crate::{Device, Tensor};

/// A contiguous copy of `t`'s elements on `to`.
pub(crate) fn copy_to(t: &Tensor, to: Device) -> Result<Storage> {
    let on_cpu = t.device().is_cpu();
    let host = if on_cpu {
        let c = t.detach().contiguous()?;
        let g = c.read();
        let host = g.cpu("to_device")?;
        let (o, n) = (c.layout().offset(), c.layout().numel());
        crate::with_cpu!(host, v => crate::Element::into_storage(v[o..o + n].to_vec()))
    } else {
        device_to_host(t)?
    };
    match to {
        Device::Cpu => Ok(Storage::Cpu(host)),
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => {
            let b = crate::cuda::CudaBackend::get(i)?;
            Ok(Storage::Cuda(crate::cuda::CudaStorage::from_cpu(
                &b, &host,
            )?))
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(crate::device::no_cuda_build(to)),
    }
}

/// The elements of a GPU tensor, contiguous, in host memory.
#[cfg(feature = "cuda")]
fn device_to_host(t: &Tensor) -> Result<crate::CpuStorage> {
    let g = t.read();
    let l = t.layout();
    match &*g {
        Storage::Cuda(c) => {
            if l.is_contiguous() && l.offset() == 0 && l.numel() == c.len() {
                c.to_cpu()
            } else {
                c.contiguous(l)?.to_cpu()
            }
        }
        Storage::Cpu(_) => unreachable!("device_to_host is called for GPU tensors only"),
    }
}

#[cfg(not(feature = "cuda"))]
fn device_to_host(t: &Tensor) -> Result<crate::CpuStorage> {
    Err(crate::device::no_cuda_build(t.device()))
}

/// Backward of [`Tensor::to_device`]: the gradient moves back to the source device.
pub(crate) struct ToDeviceBack(pub(crate) Device);

impl BackwardOp for ToDeviceBack {
    fn name(&self) -> &'static str {
        "to_device"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_device(self.0)?)])
    }
}
