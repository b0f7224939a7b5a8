//! Self-supervised losses, one file each.

mod nt_xent;

pub use nt_xent::nt_xent;
