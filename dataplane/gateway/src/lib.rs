//! egw-gateway library (in progress).

pub mod control;
