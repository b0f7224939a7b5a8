//! `selfsup-tensor`: the tensor engine under selfsup.
pub mod cpu;
pub mod rng;
