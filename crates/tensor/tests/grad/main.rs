//! The gradient-check suite: every differentiable op against central finite differences in
//! f64, on proptest-generated shapes, broadcasting, non-contiguous views and reused inputs.

mod autograd;
mod binary;
mod common;
mod index;
mod matmul;
mod reduce;
mod unary;
mod view;
