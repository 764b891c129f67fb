//! egw engine

pub mod route;
