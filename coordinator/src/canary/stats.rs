//! Test statistics for the canary judge. (Being written: see the module docs
//! of [`super`].)
