//! `selfsup-tensor`: the tensor engine under selfsup.
pub mod rng;
