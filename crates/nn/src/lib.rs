//! `selfsup-nn`: modules, initialisers, optimisers, schedules and checkpoints (issue 3; not built yet).
