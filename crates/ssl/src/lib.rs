//! `selfsup-ssl`: self-supervised objectives, pretext tasks, evaluation protocols and
//! diagnostics (issue 5, in progress).
//!
//! Built so far: the NT-Xent loss of SimCLR ([`loss::nt_xent`]) and the collapse diagnostics
//! every joint-embedding method reports ([`diagnostics`]). The method trait, the other methods
//! and the pretext tasks are not built yet.

pub mod diagnostics;
pub mod loss;
