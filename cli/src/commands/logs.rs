//! `berth logs POD [-c NAME] [-f] [--tail N] [--previous]`: a container's output, read from
//! the node that runs it.

use crate::client;
use anyhow::Result;
use berth_proto::pb::LogsRequest;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    pod: String,
    /// The container (default: the pod's first).
    #[arg(short, long)]
    container: Option<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// Keep streaming new output until the container stops.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<i64>,
    /// The previous (terminated) instance of the container.
    #[arg(short, long)]
    previous: bool,
    /// Prefix each line with its time.
    #[arg(long)]
    timestamps: bool,
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let mut api = client::connect(server).await?;
    let mut stream = api
        .logs(LogsRequest {
            namespace: args
                .namespace
                .unwrap_or_else(|| berth_proto::DEFAULT_NAMESPACE.into()),
            pod: args.pod,
            container: args.container.unwrap_or_default(),
            follow: args.follow,
            tail: args.tail.unwrap_or(-1),
            previous: args.previous,
            timestamps: args.timestamps,
        })
        .await
        .map_err(client::server_error)?
        .into_inner();
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await.map_err(client::server_error)? {
        stdout.write_all(&chunk.data)?;
        stdout.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
