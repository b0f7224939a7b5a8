//! `selfsup-data`: datasets, augmentations, masking and the batch loader (issue 4; not built yet).
