//! `berth version`.

use crate::client;
use anyhow::Result;
use std::process::ExitCode;

pub async fn run(server: Option<String>) -> Result<ExitCode> {
    println!("Client Version: v{}", berth_proto::VERSION);
    let mut api = client::connect(server).await?;
    let cluster = api
        .cluster(berth_proto::pb::ClusterRequest {})
        .await
        .map_err(client::server_error)?
        .into_inner();
    println!("Server Version: v{}", cluster.version);
    Ok(ExitCode::SUCCESS)
}
