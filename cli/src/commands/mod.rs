//! One module per `berth` command.

pub mod apply;
pub mod delete;
pub mod describe;
pub mod get;
pub mod members;
pub mod server;
pub mod version;
