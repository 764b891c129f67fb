//! egw-gateway library (in progress).
