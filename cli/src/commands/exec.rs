//! `berth exec POD [-c NAME] [-i] [-t] -- CMD ARGS`: run a command in a container; its exit
//! code becomes berth's.

use crate::client;
use anyhow::{bail, Result};
use berth_proto::pb::{exec_input, exec_output, ExecInput, ExecStart};
use std::io::Write;
use std::process::ExitCode;
use tokio::io::AsyncReadExt;

#[derive(clap::Args)]
pub struct Args {
    pod: String,
    /// The container (default: the pod's first).
    #[arg(short, long)]
    container: Option<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Allocate a terminal (with -i: an interactive shell).
    #[arg(short, long)]
    tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Puts the local terminal in raw mode for a tty session; restores it when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter(tty: bool) -> RawMode {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        if !tty {
            return RawMode(None);
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let mut api = client::connect(server).await?;
    let start = ExecInput {
        input: Some(exec_input::Input::Start(ExecStart {
            namespace: args
                .namespace
                .unwrap_or_else(|| berth_proto::DEFAULT_NAMESPACE.into()),
            pod: args.pod,
            container: args.container.unwrap_or_default(),
            command: args.command,
            tty: args.tty,
            stdin: args.stdin,
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<ExecInput>(16);
    tx.send(start).await.expect("receiver alive");
    if args.stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx
                            .send(ExecInput {
                                input: Some(exec_input::Input::StdinClosed(true)),
                            })
                            .await;
                        return;
                    }
                    Ok(n) => {
                        let chunk = ExecInput {
                            input: Some(exec_input::Input::Stdin(buf[..n].to_vec())),
                        };
                        if tx.send(chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    // Keeps the request stream open until the command ends (stdin may never close).
    let input = tokio_stream::wrappers::ReceiverStream::new(rx);
    let _raw = RawMode::enter(args.tty && args.stdin);
    let mut output = api
        .exec(input)
        .await
        .map_err(client::server_error)?
        .into_inner();
    drop(tx);
    while let Some(message) = output.message().await.map_err(client::server_error)? {
        match message.output {
            Some(exec_output::Output::Stdout(bytes)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                out.flush()?;
            }
            Some(exec_output::Output::Stderr(bytes)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&bytes)?;
                err.flush()?;
            }
            Some(exec_output::Output::ExitCode(code)) => {
                // Exit now: a pending read of our stdin cannot be cancelled, and the runtime
                // would wait for it (until the user pressed Enter). The terminal first.
                drop(_raw);
                let _ = std::io::stdout().flush();
                std::process::exit(code.clamp(0, 255));
            }
            None => {}
        }
    }
    bail!("the connection ended before the command's exit code arrived")
}
