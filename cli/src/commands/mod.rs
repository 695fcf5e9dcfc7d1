//! One module per `berth` command.

pub mod agent;
pub mod apply;
pub mod delete;
pub mod demo;
pub mod describe;
pub mod exec;
pub mod get;
pub mod image;
pub mod logs;
pub mod members;
pub mod node;
pub mod proxy;
pub mod rollout;
pub mod scale;
pub mod server;
pub mod up;
pub mod version;
