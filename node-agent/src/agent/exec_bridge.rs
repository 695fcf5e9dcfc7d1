//! A process run in a container ([`Runtime::exec`](crate::runtime::Runtime::exec)) bridged to
//! gRPC: stdin from the request stream, stdout/stderr (or the terminal) and finally the exit
//! code to the response stream. Also the plain run-to-completion that exec probes and preStop
//! hooks use.

use super::NodeContext;
use crate::runtime::ExecProcess;
use berth_proto::pb::{self, exec_input::Input, exec_output::Output};
use futures::Stream;
use std::collections::HashMap;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::Status;

type Outputs = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;

/// SIGKILLs `pid` and every process below it. The exec helper's command runs in the
/// container as the helper's child; killing the helper alone would leave it running.
fn kill_tree(pid: i32) {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces: split after ')'.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(child);
        }
    }
    let mut stack = vec![pid];
    while let Some(pid) = stack.pop() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        stack.extend(children.get(&pid).into_iter().flatten());
    }
}

fn out(output: Output) -> Result<pb::ExecOutput, Status> {
    Ok(pb::ExecOutput {
        output: Some(output),
    })
}

/// Copies an async reader to the response stream as `wrap`ped chunks until EOF (or, for a
/// terminal, until it is closed: EIO).
async fn pump(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    wrap: fn(Vec<u8>) -> Output,
    tx: mpsc::Sender<Result<pb::ExecOutput, Status>>,
) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(out(wrap(buf[..n].to_vec()))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts `command` in container `id` and streams its output.
pub async fn start(
    context: Arc<NodeContext>,
    id: String,
    command: Vec<String>,
    tty: bool,
    stdin: bool,
    mut input: tonic::Streaming<pb::ExecInput>,
) -> Result<Outputs, Status> {
    let ctx = context.clone();
    let mut process: ExecProcess =
        tokio::task::spawn_blocking(move || ctx.runtime.exec(&id, &command, tty))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let (tx, rx) = mpsc::channel(64);
    let mut readers = Vec::new();
    // Where stdin goes: the terminal, or the process's stdin pipe.
    let mut writer: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> = None;
    if let Some(pty) = process.pty.take() {
        let master = std::fs::File::from(pty);
        let reader = tokio::fs::File::from_std(
            master
                .try_clone()
                .map_err(|e| Status::internal(e.to_string()))?,
        );
        readers.push(tokio::spawn(pump(reader, Output::Stdout, tx.clone())));
        if stdin {
            writer = Some(Box::new(tokio::fs::File::from_std(master)));
        }
    }
    if let Some(stdout) = process.stdout.take() {
        let stdout = tokio::process::ChildStdout::from_std(stdout)
            .map_err(|e| Status::internal(e.to_string()))?;
        readers.push(tokio::spawn(pump(stdout, Output::Stdout, tx.clone())));
    }
    if let Some(stderr) = process.stderr.take() {
        let stderr = tokio::process::ChildStderr::from_std(stderr)
            .map_err(|e| Status::internal(e.to_string()))?;
        readers.push(tokio::spawn(pump(stderr, Output::Stderr, tx.clone())));
    }
    if let Some(pipe) = process.stdin.take() {
        if stdin {
            let pipe = tokio::process::ChildStdin::from_std(pipe)
                .map_err(|e| Status::internal(e.to_string()))?;
            writer = Some(Box::new(pipe));
        }
        // Without -i the pipe is dropped here: the command sees EOF at once.
    }
    // stdin: until the client closes it (or goes away).
    let feeder = tokio::spawn(async move {
        let Some(mut writer) = writer else { return };
        while let Ok(Some(message)) = input.message().await {
            match message.input {
                Some(Input::Stdin(bytes)) => {
                    if writer.write_all(&bytes).await.is_err() {
                        return;
                    }
                    let _ = writer.flush().await;
                }
                Some(Input::StdinClosed(_)) => return,
                _ => {}
            }
        }
    });
    // The client went away (the response stream was dropped): end the session's processes,
    // or an abandoned shell would live on in the container.
    let helper = process.helper_pid() as i32;
    let gone = tx.clone();
    let watcher = tokio::spawn(async move {
        gone.closed().await;
        kill_tree(helper);
    });
    tokio::spawn(async move {
        for reader in readers {
            let _ = reader.await;
        }
        let code = tokio::task::spawn_blocking(move || process.wait())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        feeder.abort();
        watcher.abort();
        let _ = match code {
            Ok(code) => tx.send(out(Output::ExitCode(code))).await,
            Err(e) => tx.send(Err(Status::internal(e))).await,
        };
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Runs `argv` in container `id` to completion (blocking), output discarded; killed after
/// `timeout`. For exec probes and preStop hooks.
pub fn run_to_end(
    context: &NodeContext,
    id: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<i32, String> {
    let mut process = context
        .runtime
        .exec(id, argv, false)
        .map_err(|e| e.to_string())?;
    drop(process.stdin.take());
    let drains: Vec<_> = [
        process
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        process
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(code) = process.try_wait().map_err(|e| e.to_string())? {
            break code;
        }
        if Instant::now() >= deadline {
            kill_tree(process.helper_pid() as i32);
            let _ = process.wait();
            // The drains end by themselves once the killed processes' pipes close.
            return Err(format!("timed out after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for drain in drains {
        let _ = drain.join();
    }
    Ok(code)
}
