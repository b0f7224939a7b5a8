//! Reverse-mode automatic differentiation.
//!
//! Each op result that needs a gradient holds a `Node`: its input tensors and a
//! [`BackwardOp`] that maps the gradient of the result to gradients of the inputs, written with
//! tensor ops (so every device that runs the forward ops runs the backward ones too).
//! [`Tensor::backward`] sorts the graph behind a scalar, walks it in reverse topological order,
//! sums gradients where a tensor is used more than once, and adds the result into the `grad` of
//! each leaf that requires one. Nodes are emptied as they are used, so the buffers saved for
//! backward are freed during the backward pass (pass `retain_graph` to keep them).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorId};
use crate::DType;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record graph nodes.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous recording state when dropped; see [`no_grad`].
#[must_use = "recording resumes as soon as the guard is dropped"]
pub struct GradGuard {
    prev: bool,
}

impl Drop for GradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Stops recording on this thread until the returned guard is dropped (evaluation, EMA updates).
///
/// ```
/// # use selfsup_tensor::{Tensor, DType, no_grad};
/// let w = Tensor::ones(&[2], DType::F32).requires_grad_();
/// let y = {
///     let _g = no_grad();
///     w.mul_scalar(2.0)?
/// };
/// assert!(!y.requires_grad());
/// # Ok::<(), selfsup_tensor::Error>(())
/// ```
pub fn no_grad() -> GradGuard {
    set_grad_enabled(false)
}

/// Sets recording on or off until the guard is dropped.
pub fn set_grad_enabled(on: bool) -> GradGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(on));
    GradGuard { prev }
}

/// Runs `f` with recording off.
pub fn no_grad_scope<R>(f: impl FnOnce() -> R) -> R {
    let _g = no_grad();
    f()
}

/// The backward half of an op: gradients of its inputs from the gradient of its output.
pub trait BackwardOp: Send + Sync {
    /// The op's name, for error messages.
    fn name(&self) -> &'static str;
    /// Gradients for each input, in order (`None` where no gradient flows). `output` is the
    /// op's result; `grad` has its shape. Runs with recording off.
    fn backward(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>>;
}

struct NodeInner {
    inputs: Vec<Tensor>,
    op: Box<dyn BackwardOp>,
}

/// A recorded op: emptied when backward uses it (unless the graph is retained).
pub(crate) struct Node {
    inner: Mutex<Option<Arc<NodeInner>>>,
}

impl Node {
    pub(crate) fn new(inputs: Vec<Tensor>, op: Box<dyn BackwardOp>) -> Node {
        Node {
            inner: Mutex::new(Some(Arc::new(NodeInner { inputs, op }))),
        }
    }

    fn inputs(&self) -> Vec<Tensor> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|n| n.inputs.clone())
            .unwrap_or_default()
    }

    fn take(&self, retain: bool) -> Option<Arc<NodeInner>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if retain {
            g.clone()
        } else {
            g.take()
        }
    }
}

/// Reverse topological order of the tensors behind `root` that require gradients.
fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: (tensor, children pushed?)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let inputs = t.node().map(|n| n.inputs()).unwrap_or_default();
        stack.push((t, true));
        for i in inputs {
            if i.requires_grad() && !seen.contains(&i.id()) {
                stack.push((i, false));
            }
        }
    }
    order.reverse();
    order
}

fn accumulate(
    map: &mut HashMap<TensorId, Tensor>,
    id: TensorId,
    dtype: DType,
    g: Tensor,
) -> Result<()> {
    let new = match map.remove(&id) {
        Some(old) => add_grads(&old, &g, dtype)?,
        None => g,
    };
    map.insert(id, new);
    Ok(())
}

/// The sum of two gradients of one tensor, in that tensor's dtype `dtype`. Gradients of a bf16
/// or f16 tensor (an operand that products read rounded, read by more than one op), which the
/// elementwise ops do not add, are summed in f32 and rounded once, as PyTorch adds them.
fn add_grads(a: &Tensor, b: &Tensor, dtype: DType) -> Result<Tensor> {
    if a.dtype() == dtype && b.dtype() == dtype && matches!(dtype, DType::F32 | DType::F64) {
        return a.add(b);
    }
    let wide = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    a.to_dtype(wide)?.add(&b.to_dtype(wide)?)?.to_dtype(dtype)
}

impl Tensor {
    /// Backpropagates from this scalar: adds d(self)/d(leaf) into the `grad` of every leaf that
    /// requires a gradient. Gradients accumulate across calls until [`Tensor::zero_grad`].
    /// The graph is freed as it is used; see [`Tensor::backward_with`] to keep it.
    pub fn backward(&self) -> Result<()> {
        self.backward_with(None, false)
    }

    /// Backpropagates `grad` (default: 1 for a scalar) from this tensor; with `retain_graph`
    /// the graph can be backpropagated through again.
    pub fn backward_with(&self, grad: Option<&Tensor>, retain_graph: bool) -> Result<()> {
        if !self.requires_grad() {
            return Err(Error::Autograd { op: "backward", msg: "this tensor does not require a gradient (no input of the computation had requires_grad, or it was computed under no_grad)".into() });
        }
        let seed = match grad {
            Some(g) => {
                if g.shape() != self.shape() {
                    return Err(Error::Shape {
                        op: "backward",
                        msg: format!(
                            "gradient of shape {:?} given for a tensor of shape {:?}",
                            g.shape(),
                            self.shape()
                        ),
                    });
                }
                g.detach()
            }
            None => {
                if self.numel() != 1 {
                    return Err(Error::Autograd { op: "backward", msg: format!("needs a scalar (one element), got shape {:?}; pass a gradient with backward_with", self.shape()) });
                }
                self.ones_like()?
            }
        };
        let _g = crate::no_grad();
        let mut order: Vec<Option<Tensor>> = topo_order(self).into_iter().map(Some).collect();
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(self.id(), seed);
        for slot in order.iter_mut() {
            let Some(t) = slot.take() else { continue };
            let Some(g) = grads.remove(&t.id()) else {
                continue;
            };
            match t.node() {
                None => {
                    let g = if g.dtype() == t.dtype() {
                        g
                    } else {
                        g.to_dtype(t.dtype())?
                    };
                    let g = g.contiguous()?.detach();
                    let mut slot = t.0.grad.lock().unwrap_or_else(|e| e.into_inner());
                    *slot = Some(match slot.take() {
                        Some(old) => add_grads(&old, &g, t.dtype())?,
                        None => g,
                    });
                }
                Some(node) => {
                    let inner = node.take(retain_graph).ok_or_else(|| Error::Autograd {
                        op: "backward",
                        msg: "the graph was already freed by an earlier backward; pass retain_graph to backward_with the first time".into(),
                    })?;
                    let gi = inner.op.backward(&inner.inputs, &t, &g)?;
                    for (input, gi) in inner.inputs.iter().zip(gi) {
                        let Some(gi) = gi else { continue };
                        if !input.requires_grad() {
                            continue;
                        }
                        if gi.shape() != input.shape() {
                            return Err(Error::Autograd { op: inner.op.name(), msg: format!("backward produced a gradient of shape {:?} for an input of shape {:?}", gi.shape(), input.shape()) });
                        }
                        accumulate(&mut grads, input.id(), input.dtype(), gi)?;
                    }
                }
            }
        }
        Ok(())
    }
}
