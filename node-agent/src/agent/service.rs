//! The agent's own gRPC service, reached through the API server: container logs and exec.

use super::pod::log_path;
use super::NodeContext;
use crate::logfile::{self, LogLine};
use berth_proto::pb::{self, agent_server::Agent};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

pub struct AgentService {
    context: Arc<NodeContext>,
}

impl AgentService {
    pub fn new(context: Arc<NodeContext>) -> Self {
        AgentService { context }
    }

    /// The pod's uid and the named (or first) container's restart count and running id.
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<(String, String, i32, Option<String>), Status> {
        let pods = self.context.pods.lock().expect("pods lock");
        let handle = pods
            .get(&(namespace.to_string(), pod.to_string()))
            .ok_or_else(|| {
                Status::not_found(format!("pod {namespace}/{pod} is not on this node"))
            })?;
        let (name, restarts, id) = if container.is_empty() {
            handle
                .containers
                .first()
                .ok_or_else(|| Status::not_found(format!("pod {pod} has no containers")))?
        } else {
            handle
                .containers
                .iter()
                .find(|(name, _, _)| name == container)
                .ok_or_else(|| {
                    Status::not_found(format!("container {container} is not in pod {pod}"))
                })?
        };
        Ok((handle.uid.clone(), name.clone(), *restarts, id.clone()))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn format_line(line: &LogLine, timestamps: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.content.len() + 40);
    if timestamps {
        out.extend_from_slice(line.time.to_string().as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&line.content);
    if !line.partial {
        out.push(b'\n');
    }
    out
}

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream = BoxStream<pb::LogChunk>;
    type ExecStream = BoxStream<pb::ExecOutput>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let request = request.into_inner();
        let (uid, name, restarts, running) =
            self.container(&request.namespace, &request.pod, &request.container)?;
        let instance = if request.previous {
            if restarts == 0 {
                return Err(Status::invalid_argument(format!(
                    "previous terminated container {name} in pod {} not found",
                    request.pod
                )));
            }
            restarts - 1
        } else {
            restarts
        };
        let path = log_path(&self.context, &uid, &name, instance);
        let tail = usize::try_from(request.tail).ok();
        let timestamps = request.timestamps;
        if !request.follow || request.previous || running.is_none() {
            let lines = tokio::task::spawn_blocking(move || logfile::read(&path, tail))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::internal(format!("reading logs: {e}")))?;
            let data: Vec<u8> = lines
                .iter()
                .flat_map(|l| format_line(l, timestamps))
                .collect();
            let chunk = pb::LogChunk { data };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(chunk)]))));
        }
        // Follow until this instance of the container stops.
        let id = running.expect("checked");
        let context = self.context.clone();
        let done = async move {
            loop {
                let ctx = context.clone();
                let id = id.clone();
                let running = tokio::task::spawn_blocking(move || {
                    matches!(
                        ctx.runtime.status(&id),
                        Ok(crate::runtime::ContainerStatus::Running { .. })
                    )
                })
                .await
                .unwrap_or(false);
                if !running {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        let stream = logfile::follow(path, tail, done).map(move |line| {
            line.map(|l| pb::LogChunk {
                data: format_line(&l, timestamps),
            })
            .map_err(|e| Status::internal(format!("reading logs: {e}")))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn exec(
        &self,
        request: Request<tonic::Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("exec: no start message"))?;
        let start = first.into_start()?;
        let (_, name, _, running) =
            self.container(&start.namespace, &start.pod, &start.container)?;
        let id = running.ok_or_else(|| {
            Status::failed_precondition(format!("container {name} is not running"))
        })?;
        let output = exec::start(
            self.context.clone(),
            id,
            start.command,
            start.tty,
            start.stdin,
            input,
        )
        .await?;
        Ok(Response::new(output))
    }
}

/// Runs exec probes and preStop hooks in a container.
pub struct ContainerExec {
    pub context: Arc<NodeContext>,
    pub id: String,
}

impl crate::probe::ExecRunner for ContainerExec {
    fn run(
        &self,
        argv: Vec<String>,
        timeout: Duration,
    ) -> futures::future::BoxFuture<'static, Result<i32, String>> {
        let context = self.context.clone();
        let id = self.id.clone();
        Box::pin(async move {
            let run = tokio::task::spawn_blocking(move || {
                exec::run_to_end(&context, &id, &argv, timeout)
            });
            run.await.map_err(|e| e.to_string())?
        })
    }
}

mod exec {
    //! Bridging a process run in a container (runtime::exec) to gRPC streams.
    pub use super::super::exec_bridge::*;
}
