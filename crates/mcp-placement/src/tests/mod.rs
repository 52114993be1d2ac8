//! The crate's tests: table tests per rule, a naive reference implementation,
//! and property tests that hold the fast snapshot to the reference.

mod props;
mod reference;
mod table;
