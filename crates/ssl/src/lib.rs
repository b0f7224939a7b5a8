//! `selfsup-ssl`: self-supervised objectives, pretext tasks and evaluation (issue 5; not built yet).
