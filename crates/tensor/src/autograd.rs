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

    /// The input (by index) whose gradient so far, the sum of what the ops already run gave
    /// it, this op's backward can add into the gradient it writes for that input, sparing
    /// autograd's add and its pass over both (the GPU's LayerNorm: a transformer block's
    /// residual stream, read by the norm and by the residual add). `None`, the default:
    /// autograd adds the gradients itself.
    fn folds(&self) -> Option<usize> {
        None
    }

    /// [`BackwardOp::backward`] with `pending`, the gradient so far of input
    /// [`BackwardOp::folds`] (its shape), added into the gradient returned for that input,
    /// which is then the sum. Autograd calls it only when `folds` names an input, read once by
    /// this op, that has such a gradient. The default runs `backward` and adds the two as
    /// autograd would.
    fn backward_adding(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        grad: &Tensor,
        pending: Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let grads = self.backward(inputs, output, grad)?;
        match self.folds() {
            Some(i) => add_pending(grads, inputs, i, pending),
            None => Ok(grads),
        }
    }
}

/// `grads` (an op's input gradients) with `pending` added into input `i`'s, as autograd would
/// add them (the sum `pending + grads[i]`, in the input's dtype).
pub(crate) fn add_pending(
    mut grads: Vec<Option<Tensor>>,
    inputs: &[Tensor],
    i: usize,
    pending: Tensor,
) -> Result<Vec<Option<Tensor>>> {
    if grads.len() <= i {
        grads.resize(i + 1, None);
    }
    grads[i] = Some(match grads[i].take() {
        Some(g) => add_grads(&pending, &g, inputs[i].dtype())?,
        None => pending,
    });
    Ok(grads)
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
                    // An op that adds an input's gradient so far into its own is given it
                    // (`BackwardOp::folds`).
                    let pending = inner.op.folds().and_then(|i| {
                        let x = inner.inputs.get(i)?;
                        let once = inner.inputs.iter().filter(|t| t.id() == x.id()).count() == 1;
                        if once && x.requires_grad() {
                            grads.remove(&x.id())
                        } else {
                            None
                        }
                    });
                    let gi = match pending {
                        Some(p) => inner.op.backward_adding(&inner.inputs, &t, &g, p)?,
                        None => inner.op.backward(&inner.inputs, &t, &g)?,
                    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `y = 2x`, whose backward may add x's gradient so far into its own (`folds`), counting
    /// the calls that do; with `own` false it keeps the default `backward_adding`.
    struct Double {
        folded: Arc<AtomicUsize>,
        own: bool,
    }

    impl BackwardOp for Double {
        fn name(&self) -> &'static str {
            "double"
        }
        fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(g.mul_scalar(2.0)?)])
        }
        fn folds(&self) -> Option<usize> {
            Some(0)
        }
        fn backward_adding(
            &self,
            inputs: &[Tensor],
            output: &Tensor,
            g: &Tensor,
            pending: Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            self.folded.fetch_add(1, Ordering::SeqCst);
            if !self.own {
                let grads = self.backward(inputs, output, g)?;
                return add_pending(grads, inputs, 0, pending);
            }
            Ok(vec![Some(pending.add(&g.mul_scalar(2.0)?)?)])
        }
    }

    fn double(x: &Tensor, folded: &Arc<AtomicUsize>, own: bool) -> Tensor {
        let y = crate::no_grad_scope(|| x.mul_scalar(2.0)).unwrap();
        y.attach(&[x], || {
            Box::new(Double {
                folded: folded.clone(),
                own,
            })
        })
    }

    /// An op that folds is handed its input's gradient so far when the input has one (a
    /// residual: `x + 5 · double(x)`, whose add runs first) and returns the sum; autograd then
    /// adds nothing more. Without another reader it runs its plain backward.
    #[test]
    fn an_op_that_folds_gets_its_inputs_pending_gradient() {
        for own in [true, false] {
            let folded = Arc::new(AtomicUsize::new(0));
            let x = Tensor::from_vec(vec![1.0f64, -2.0, 3.0], &[3])
                .unwrap()
                .requires_grad_();
            let y = x
                .add(&double(&x, &folded, own).mul_scalar(5.0).unwrap())
                .unwrap();
            y.sum_all().unwrap().backward().unwrap();
            assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), [11.0; 3]);
            assert_eq!(folded.load(Ordering::SeqCst), 1, "own {own}");

            let folded = Arc::new(AtomicUsize::new(0));
            let x = x.detach().requires_grad_();
            double(&x, &folded, own)
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), [2.0; 3]);
            assert_eq!(
                folded.load(Ordering::SeqCst),
                0,
                "own {own}: nothing pending"
            );
        }
    }
}
