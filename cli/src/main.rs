//! `berth`: the one binary users install. It parses flags and calls into the crates that do
//! the work; each command lives in its own file under `commands/`.

mod build;
mod client;
mod commands;
mod demo;
mod output;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// The server's hot path allocates and frees many small JSON values per write: glibc's malloc
// took ~19% of a loaded member's CPU, mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A container orchestrator you can understand: one binary, kubectl-style commands"
)]
struct Cli {
    /// Control-plane address (host:port). Default: $BERTH_SERVER, then the config file that
    /// `berth server --init` writes.
    #[arg(long, global = true, env = "BERTH_SERVER")]
    server: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole cluster on this machine in one process: a one-member control plane and a
    /// node agent (as root), with the client config written. `--demo` also runs the demo app.
    Up(commands::up::Args),
    /// Run a control-plane member.
    Server(commands::server::Args),
    /// Run a node agent: it registers its node and runs the pods bound to it.
    Agent(commands::agent::Args),
    /// Create or update objects from manifests (files, directories, or - for stdin).
    Apply(commands::apply::Args),
    /// List objects in a table, or print them as yaml, json or names.
    Get(commands::get::Args),
    /// Show details of objects.
    Describe(commands::describe::Args),
    /// Delete objects by name or by the manifests that made them.
    Delete(commands::delete::Args),
    /// Load, push, pull, list, tag and remove images in the cluster registry.
    Image(commands::image::Args),
    /// Print a container's logs.
    Logs(commands::logs::Args),
    /// Run a command in a container.
    Exec(commands::exec::Args),
    /// List the control-plane members, or remove one.
    Members(commands::members::Args),
    /// Keep the scheduler from placing new pods on a node.
    Cordon(commands::node::Args),
    /// Let the scheduler place pods on a node again.
    Uncordon(commands::node::Args),
    /// Cordon a node and move its pods away (their controllers recreate them elsewhere).
    Drain(commands::node::DrainArgs),
    /// Set the replicas of Deployments or ReplicaSets.
    Scale(commands::scale::Args),
    /// Follow, list, undo, restart, pause and resume a Deployment's rollouts.
    Rollout(commands::rollout::Args),
    /// Run the service proxy alone, with listeners and endpoints from a YAML file.
    Proxy(commands::proxy::Args),
    /// Print client and server versions.
    Version,
    /// The demo application: an HTTP server answering with the pod's name, IP and a request
    /// counter (the demo image's entrypoint).
    DemoServer(commands::demo::ServerArgs),
}

fn main() -> ExitCode {
    // `berth shim ...` is the per-container shim the node agent starts: it must stay
    // single-threaded (libcontainer clones with clone3), so it branches off before clap,
    // logging and the tokio runtime. Not a user command.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "shim") {
        return berth_node_agent::runtime::shim::main(args.collect());
    }
    let cli = Cli::parse();
    let default_log = if matches!(
        cli.command,
        Command::Server(_) | Command::Agent(_) | Command::Up(_)
    ) {
        // netlink-packet-route warns about every attribute newer than itself.
        "info,openraft=warn,netlink_packet_route=error,libcgroups=error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_log.into()),
        )
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = cli.server;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => commands::up::run(args).await,
            Command::Server(args) => commands::server::run(args).await,
            Command::Agent(args) => commands::agent::run(server, args).await,
            Command::Apply(args) => commands::apply::run(server, args).await,
            Command::Image(args) => commands::image::run(server, args).await,
            Command::Logs(args) => commands::logs::run(server, args).await,
            Command::Exec(args) => commands::exec::run(server, args).await,
            Command::Get(args) => commands::get::run(server, args).await,
            Command::Describe(args) => commands::describe::run(server, args).await,
            Command::Delete(args) => commands::delete::run(server, args).await,
            Command::Members(args) => commands::members::run(server, args).await,
            Command::Cordon(args) => commands::node::cordon(server, args, true).await,
            Command::Uncordon(args) => commands::node::cordon(server, args, false).await,
            Command::Drain(args) => commands::node::drain(server, args).await,
            Command::Scale(args) => commands::scale::run(server, args).await,
            Command::Rollout(args) => commands::rollout::run(server, args).await,
            Command::Proxy(args) => commands::proxy::run(args).await,
            Command::Version => commands::version::run(server).await,
            Command::DemoServer(args) => {
                tokio::task::block_in_place(|| commands::demo::serve(args))
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
