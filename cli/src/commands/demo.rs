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
    // As a container's init (pid 1) it gets only the signals it handles: without this, a
    // pod's graceful stop would wait out its whole grace period.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        terminate.recv().await;
        tracing::info!("terminated");
        std::process::exit(0);
    });
    crate::demo::serve(args.listen)?;
    Ok(ExitCode::SUCCESS)
}
