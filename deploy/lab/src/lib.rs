//! egw lab.
