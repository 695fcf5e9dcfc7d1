//! `berth demo-server` (the demo image's entrypoint) and `berth demo-rootfs DIR` (berth
//! itself as a root filesystem, until berth stores images).

use anyhow::Result;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ServerArgs {
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
}

#[derive(clap::Args)]
pub struct RootfsArgs {
    /// Where to write it (e.g. IMAGE_DIR/demo for `berth agent --image-dir IMAGE_DIR`).
    dir: PathBuf,
}

pub fn serve(args: ServerArgs) -> Result<ExitCode> {
    crate::demo::serve(args.listen)?;
    Ok(ExitCode::SUCCESS)
}

pub fn rootfs(args: RootfsArgs) -> Result<ExitCode> {
    crate::demo::write_rootfs(&args.dir)?;
    println!("{}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}
