//! The [`Tensor`] type: a layout over shared storage, plus what autograd needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::autograd::{self, BackwardOp, Node};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::layout::{numel, Layout};
use crate::storage::{CpuStorage, Storage};
use crate::Device;

/// A process-unique tensor identity (used to key gradients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

static LIVE_STORAGES: AtomicU64 = AtomicU64::new(0);

/// Storage plus a live-count so tests can check that training loops do not leak buffers, a
/// count of the writes to it, and (on a GPU) the bf16 copy kept of a parameter's values.
pub(crate) struct Tracked {
    data: RwLock<Storage>,
    /// Bumped each time a write guard is taken (under the lock): a copy made at one count is
    /// current while the count is unchanged.
    pub(crate) version: AtomicU64,
    /// The bf16 copy of these values read as a product operand (`crate::shadow`).
    #[cfg(feature = "cuda")]
    pub(crate) shadow: Mutex<Option<crate::shadow::Shadow>>,
}

impl Tracked {
    fn new(s: Storage) -> Self {
        LIVE_STORAGES.fetch_add(1, Ordering::Relaxed);
        Tracked {
            data: RwLock::new(s),
            version: AtomicU64::new(0),
            #[cfg(feature = "cuda")]
            shadow: Mutex::new(None),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        LIVE_STORAGES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Number of tensor buffers alive in this process (views share one). A training loop whose
/// count grows from step to step is leaking.
pub fn live_buffers() -> u64 {
    LIVE_STORAGES.load(Ordering::Relaxed)
}

pub(crate) struct Inner {
    pub(crate) id: TensorId,
    pub(crate) storage: Arc<Tracked>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) node: Option<Node>,
    pub(crate) requires_grad: bool,
    pub(crate) grad: Mutex<Option<Tensor>>,
}

/// An n-dimensional array with reverse-mode autograd.
///
/// Cloning a `Tensor` is cheap (it is reference-counted) and the clone is the same tensor: it
/// shares storage, gradient and identity. View ops (`reshape`, `permute`, `narrow`, ...) make new
/// tensors over the same storage. All ops return [`Result`]; see [`crate::Error`] for the policy.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}, {:?}",
            self.shape(),
            self.dtype(),
            self.device()
        )?;
        if self.requires_grad() {
            write!(f, ", requires_grad")?;
        }
        if self.numel() <= 16 {
            if let Ok(v) = self.to_vec_f64() {
                write!(f, ", {v:?}")?;
            }
        }
        write!(f, ")")
    }
}

impl Tensor {
    // ----------------------------------------------------------------- construction

    pub(crate) fn from_parts(
        storage: Arc<Tracked>,
        layout: Layout,
        dtype: DType,
        device: Device,
        node: Option<Node>,
        requires_grad: bool,
    ) -> Tensor {
        Tensor(Arc::new(Inner {
            id: TensorId::fresh(),
            storage,
            layout,
            dtype,
            device,
            node,
            requires_grad,
            grad: Mutex::new(None),
        }))
    }

    /// A new contiguous tensor over a fresh buffer, not part of any graph.
    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        let (dtype, device) = (storage.dtype(), storage.device());
        Tensor::from_parts(
            Arc::new(Tracked::new(storage)),
            Layout::contiguous(shape),
            dtype,
            device,
            None,
            false,
        )
    }

    pub(crate) fn from_cpu(storage: CpuStorage, shape: &[usize]) -> Tensor {
        Tensor::from_storage(Storage::Cpu(storage), shape)
    }

    /// The result of an op: attaches a backward node when autograd is recording and an input
    /// requires a gradient. `backward` is only called in that case.
    pub(crate) fn from_op(
        storage: Storage,
        shape: &[usize],
        inputs: &[&Tensor],
        backward: impl FnOnce() -> Box<dyn BackwardOp>,
    ) -> Tensor {
        let t = Tensor::from_storage(storage, shape);
        t.attach(inputs, backward)
    }

    /// Same data and layout as `self`, with a backward node over `inputs` if recording.
    pub(crate) fn attach(
        self,
        inputs: &[&Tensor],
        backward: impl FnOnce() -> Box<dyn BackwardOp>,
    ) -> Tensor {
        if !autograd::is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return self;
        }
        let node = Node::new(inputs.iter().map(|t| (*t).clone()).collect(), backward());
        let i = &self.0;
        Tensor::from_parts(
            i.storage.clone(),
            i.layout.clone(),
            i.dtype,
            i.device,
            Some(node),
            true,
        )
    }

    /// A view of `self` with another layout over the same storage (no graph node).
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        let i = &self.0;
        Tensor::from_parts(i.storage.clone(), layout, i.dtype, i.device, None, false)
    }

    /// A tensor holding `data` with the given shape, on the CPU.
    ///
    /// ```
    /// # use selfsup_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(t.shape(), &[2, 3]);
    /// # Ok::<(), selfsup_tensor::Error>(())
    /// ```
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let expected = numel(shape);
        if data.len() != expected {
            return Err(Error::DataLength {
                op: "from_vec",
                len: data.len(),
                shape: shape.into(),
                expected,
            });
        }
        Ok(Tensor::from_cpu(T::into_storage(data), shape))
    }

    /// A tensor copied from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A 0-dimensional tensor holding one value.
    pub fn scalar<T: Element>(x: T) -> Tensor {
        Tensor::from_cpu(T::into_storage(vec![x]), &[])
    }

    /// A tensor filled with `value`, converted to `dtype`.
    pub fn full(value: f64, shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_cpu(CpuStorage::full(dtype, numel(shape), value), shape)
    }

    /// A tensor filled with `value`, converted to `dtype`, on `device` (an error when the
    /// device cannot be used).
    pub fn full_on(value: f64, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Ok(Tensor::from_storage(
            Storage::full(device, dtype, numel(shape), value)?,
            shape,
        ))
    }

    /// Zeros on `device`.
    pub fn zeros_on(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full_on(0.0, shape, dtype, device)
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_cpu(CpuStorage::zeros(dtype, numel(shape)), shape)
    }

    /// Ones.
    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(1.0, shape, dtype)
    }

    /// Zeros with the shape, dtype and device of `self`.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros_on(self.shape(), self.dtype(), self.device())
    }

    /// Ones with the shape, dtype and device of `self`.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::full_on(1.0, self.shape(), self.dtype(), self.device())
    }

    /// The `n x n` identity in `dtype`, built on `device` itself: on a GPU, a fill and a copy of
    /// `n` ones, with no host buffer and no upload whatever `n` (the losses' masks are built in
    /// every training step).
    pub fn eye_on(n: usize, dtype: DType, device: Device) -> Result<Tensor> {
        // Ones in column 0 of an [n, n + 1] zero matrix lie at flat offsets i·(n + 1) = i·n + i,
        // so its first n·n elements, read as [n, n], are the identity.
        let z = Tensor::zeros_on(&[n, n + 1], dtype, device)?;
        z.narrow(1, 0, 1)?
            .assign(&Tensor::full_on(1.0, &[n, 1], dtype, device)?)?;
        z.reshape(&[n * (n + 1)])?
            .narrow(0, 0, n * n)?
            .reshape(&[n, n])
    }

    /// `0, 1, ..., n-1` as a 1-D tensor of `dtype`.
    pub fn arange(n: usize, dtype: DType) -> Tensor {
        Tensor::from_cpu(CpuStorage::arange(dtype, n), &[n])
    }

    /// [`Tensor::arange`] written on `device` itself (no host buffer or upload; bf16 and f16 on a
    /// GPU go through f32, which holds every integer below 2^24).
    pub fn arange_on(n: usize, dtype: DType, device: Device) -> Result<Tensor> {
        Ok(Tensor::from_storage(
            Storage::arange(device, dtype, n)?,
            &[n],
        ))
    }

    // ----------------------------------------------------------------- accessors

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    /// The size of axis `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let a = crate::layout::resolve_axis("dim", axis, self.shape())?;
        Ok(self.shape()[a])
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// The layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.0.device
    }

    /// Identity, shared by clones, distinct for views.
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// Whether the elements are dense in row-major order.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// Whether the two tensors share a storage buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Storage> {
        // A poisoned lock only means another thread panicked mid-kernel; the data is plain numbers.
        self.0
            .storage
            .data
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The storage for writing. Every in-place change goes through here, so the write count
    /// it bumps marks copies of the old values (the bf16 shadow) as stale.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Storage> {
        let g = self
            .0
            .storage
            .data
            .write()
            .unwrap_or_else(|e| e.into_inner());
        self.0.storage.version.fetch_add(1, Ordering::Relaxed);
        g
    }

    // ----------------------------------------------------------------- autograd state

    /// Whether gradients flow to this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// A leaf tensor sharing this one's storage that records gradients (a parameter).
    ///
    /// The gradient accumulated by [`Tensor::backward`] is read with [`Tensor::grad`].
    pub fn requires_grad_(&self) -> Tensor {
        let i = &self.0;
        Tensor::from_parts(
            i.storage.clone(),
            i.layout.clone(),
            i.dtype,
            i.device,
            None,
            true,
        )
    }

    /// Alias of [`Tensor::requires_grad_`] that reads better on construction.
    pub fn into_param(self) -> Tensor {
        self.requires_grad_()
    }

    /// Stop-gradient: the same values, cut from the graph (no gradient flows through it).
    pub fn detach(&self) -> Tensor {
        self.with_layout(self.0.layout.clone())
    }

    /// Whether this tensor was produced by an op that autograd recorded.
    pub fn is_leaf(&self) -> bool {
        self.0.node.is_none()
    }

    /// The gradient accumulated into this leaf by `backward` calls since the last zeroing.
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Drops the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Replaces the accumulated gradient (used by gradient clipping and tests).
    pub fn set_grad(&self, g: Option<Tensor>) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = g;
    }

    pub(crate) fn node(&self) -> Option<&Node> {
        self.0.node.as_ref()
    }

    // ----------------------------------------------------------------- reading values

    /// The elements in row-major order, as `T` (which must be the tensor's dtype).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        let c = self.to_device(Device::Cpu)?.contiguous()?;
        let g = c.read();
        let cpu = g.cpu("to_vec")?;
        let s = T::slice(cpu).ok_or(Error::DTypeMismatch {
            op: "to_vec",
            lhs: cpu.dtype(),
            rhs: T::DTYPE,
        })?;
        let l = c.layout();
        Ok(s[l.offset()..l.offset() + l.numel()].to_vec())
    }

    /// The elements converted to f64, whatever the dtype.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        let c = self.to_device(Device::Cpu)?.contiguous()?;
        let g = c.read();
        let cpu = g.cpu("to_vec_f64")?;
        let l = c.layout();
        let r = l.offset()..l.offset() + l.numel();
        Ok(crate::with_cpu!(cpu, v => v[r].iter().map(|x| x.to_f64()).collect()))
    }

    /// The single value of a one-element tensor, as f64.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::Shape {
                op: "item",
                msg: format!(
                    "needs exactly one element, the tensor has shape {:?}",
                    self.shape()
                ),
            });
        }
        Ok(self.to_vec_f64()?[0])
    }

    /// Moves the tensor to `device` (a copy unless it is already there); gradients flow back
    /// to the source device.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        device.check()?;
        let s = crate::ops::transfer::copy_to(self, device)?;
        let from = self.device();
        Ok(Tensor::from_storage(s, self.shape()).attach(&[self], || {
            Box::new(crate::ops::transfer::ToDeviceBack(from))
        }))
    }
}
