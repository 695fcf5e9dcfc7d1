//! The container runtime (being written).

pub mod shim;
