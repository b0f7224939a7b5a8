//! Self-supervised losses, one file each.

mod barlow_twins;
mod byol;
mod common;
mod dino;
mod info_nce;
mod negative_cosine;
mod nt_xent;
mod vicreg;

pub use barlow_twins::{barlow_twins, BARLOW_EPS};
pub use byol::byol_loss;
pub use dino::{dino_center, dino_loss};
pub use info_nce::{info_nce_batch, info_nce_queue};
pub use negative_cosine::negative_cosine;
pub use nt_xent::nt_xent;
pub use vicreg::{vicreg, VicregTerms, VicregWeights, VICREG_EPS};
