//! `berth demo-server`: the demo image's entrypoint (`berth image demo` makes the image).

use anyhow::Result;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ServerArgs {
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
}

pub fn serve(args: ServerArgs) -> Result<ExitCode> {
    crate::demo::serve(args.listen)?;
    Ok(ExitCode::SUCCESS)
}
