//! The gradient-check suite: every differentiable op against central finite differences in
//! f64, on proptest-generated shapes, broadcasting, non-contiguous views and reused inputs,
//! plus reference tests of forward values, one module per op family.

mod attention;
mod autograd;
mod batch_norm;
mod binary;
mod common;
mod conv;
mod index;
mod layer_norm;
mod matmul;
mod pool;
mod reduce;
mod unary;
mod view;
