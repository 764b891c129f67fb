//! egw benchmarks.
