//! egw engine
