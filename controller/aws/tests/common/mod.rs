//! The shared moto harness lives in `egw_aws::testing` (feature `testing`), so the controller's
//! tests can start moto too.
pub use egw_aws::testing::*;
