//! Gradient checks and reference tests of the tensor ops, one module per op family.

mod conv;
mod pool;
