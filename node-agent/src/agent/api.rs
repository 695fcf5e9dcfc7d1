//! The agent's connection to the control plane: any member will do; on failure it moves to
//! the next one.

use super::AgentError;
use berth_proto::pb::{self, api_client::ApiClient};
use serde_json::Value;
use tonic::transport::Channel;

#[derive(Clone)]
pub struct ApiConnection {
    servers: Vec<String>,
    next: usize,
    client: ApiClient<Channel>,
}

impl ApiConnection {
    /// Connects to the first member that answers, trying for up to 30 s.
    pub async fn connect(servers: Vec<String>) -> Result<Self, AgentError> {
        if servers.is_empty() {
            return Err(AgentError::Api("no control-plane address given".into()));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut last_error = String::new();
        while std::time::Instant::now() < deadline {
            for (i, server) in servers.iter().enumerate() {
                match berth_proto::transport::connect(server).await {
                    Ok(channel) => {
                        return Ok(ApiConnection {
                            next: (i + 1) % servers.len(),
                            client: ApiClient::new(channel).max_decoding_message_size(64 << 20),
                            servers,
                        })
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        Err(AgentError::Api(last_error))
    }

    /// Moves to the next member that answers (after an error that may be the member's).
    pub async fn reconnect(&mut self) {
        for _ in 0..self.servers.len() {
            let server = self.servers[self.next].clone();
            self.next = (self.next + 1) % self.servers.len();
            if let Ok(channel) = berth_proto::transport::connect(&server).await {
                self.client = ApiClient::new(channel).max_decoding_message_size(64 << 20);
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    async fn retrying<T, F, Fut>(&mut self, mut call: F) -> Result<T, String>
    where
        F: FnMut(ApiClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut attempts = 0;
        loop {
            match call(self.client.clone()).await {
                Ok(value) => return Ok(value),
                Err(status)
                    if attempts < 20
                        && matches!(
                            status.code(),
                            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                        ) =>
                {
                    attempts += 1;
                    if attempts % 3 == 0 {
                        self.reconnect().await;
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
                Err(status) => return Err(status.message().to_string()),
            }
        }
    }

    pub async fn apply(&mut self, object: &Value) -> Result<Value, String> {
        let bytes = serde_json::to_vec(object).expect("JSON values serialise");
        let response = self
            .retrying(|mut c| {
                let object = bytes.clone();
                async move {
                    c.apply(pb::ApplyRequest {
                        object,
                        dry_run: false,
                    })
                    .await
                }
            })
            .await?
            .into_inner();
        serde_json::from_slice(&response.object).map_err(|e| e.to_string())
    }

    /// Creates or updates Events in one call; one error (or `None`) per event, in order.
    pub async fn record_events(
        &mut self,
        events: &[k8s_openapi::api::core::v1::Event],
    ) -> Result<Vec<Option<String>>, String> {
        let events: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).expect("events serialise"))
            .collect();
        let response = self
            .retrying(|mut c| {
                let events = events.clone();
                async move { c.record_events(pb::RecordEventsRequest { events }).await }
            })
            .await?
            .into_inner();
        Ok(response
            .errors
            .into_iter()
            .map(|e| Some(e).filter(|e| !e.is_empty()))
            .collect())
    }

    pub async fn heartbeat(&mut self, node: &str) -> Result<(), String> {
        let node = node.to_string();
        self.retrying(|mut c| {
            let node = node.clone();
            async move { c.node_heartbeat(pb::NodeHeartbeatRequest { node }).await }
        })
        .await
        .map(drop)
    }

    /// The object, or `None` if there is none.
    pub async fn get(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, String> {
        let object = pb::ObjectRef {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let mut attempts = 0;
        loop {
            let request = pb::GetRequest {
                object: Some(object.clone()),
                stale_ok: false,
            };
            match self.client.clone().get(request).await {
                Ok(response) => {
                    return serde_json::from_slice(&response.into_inner().object)
                        .map(Some)
                        .map_err(|e| e.to_string())
                }
                Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
                Err(status) if attempts < 20 && status.code() == tonic::Code::Unavailable => {
                    attempts += 1;
                    self.reconnect().await;
                }
                Err(status) => return Err(status.message().to_string()),
            }
        }
    }

    pub async fn update_status(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<(), String> {
        let errors = self
            .update_statuses(
                kind,
                vec![(namespace.into(), name.into(), String::new(), status)],
            )
            .await?;
        match errors.into_iter().next().flatten() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// One error (or `None`) per update `(namespace, name, uid or "", status)`, in order.
    pub async fn update_statuses(
        &mut self,
        kind: &str,
        updates: Vec<(String, String, String, Value)>,
    ) -> Result<Vec<Option<String>>, String> {
        let updates: Vec<pb::StatusUpdate> = updates
            .into_iter()
            .map(|(namespace, name, uid, status)| pb::StatusUpdate {
                uid,
                object: Some(pb::ObjectRef {
                    kind: kind.into(),
                    namespace,
                    name,
                }),
                status: serde_json::to_vec(&status).expect("JSON values serialise"),
                resource_version: 0,
            })
            .collect();
        let response = self
            .retrying(|mut c| {
                let updates = updates.clone();
                async move { c.update_status(pb::UpdateStatusRequest { updates }).await }
            })
            .await?
            .into_inner();
        Ok(response
            .results
            .into_iter()
            .map(|r| Some(r.error).filter(|e| !e.is_empty()))
            .collect())
    }

    pub async fn list_pods(
        &mut self,
    ) -> Result<(Vec<k8s_openapi::api::core::v1::Pod>, u64), String> {
        let response = self
            .retrying(|mut c| async move {
                c.list(pb::ListRequest {
                    kind: "Pod".into(),
                    namespace: String::new(),
                    label_selector: String::new(),
                    stale_ok: false,
                })
                .await
            })
            .await?
            .into_inner();
        let pods = response
            .objects
            .iter()
            .filter_map(|bytes| serde_json::from_slice(bytes).ok())
            .collect();
        Ok((pods, response.revision))
    }

    /// Every object of `kind` in every namespace, as JSON, and the revision they were read at.
    pub async fn list(&mut self, kind: &str) -> Result<(Vec<Vec<u8>>, u64), String> {
        let response = self
            .retrying(|mut c| async move {
                c.list(pb::ListRequest {
                    kind: kind.into(),
                    namespace: String::new(),
                    label_selector: String::new(),
                    stale_ok: false,
                })
                .await
            })
            .await?
            .into_inner();
        Ok((response.objects, response.revision))
    }

    /// Changes to the objects of `kind` in every namespace after `from_revision`.
    pub async fn watch(
        &mut self,
        kind: &str,
        from_revision: u64,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, String> {
        Ok(self
            .retrying(|mut c| async move {
                c.watch(pb::WatchRequest {
                    kind: kind.into(),
                    namespace: String::new(),
                    label_selector: String::new(),
                    from_revision,
                })
                .await
            })
            .await?
            .into_inner())
    }

    pub async fn watch_pods(
        &mut self,
        from_revision: u64,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, String> {
        Ok(self
            .retrying(|mut c| async move {
                c.watch(pb::WatchRequest {
                    kind: "Pod".into(),
                    namespace: String::new(),
                    label_selector: String::new(),
                    from_revision,
                })
                .await
            })
            .await?
            .into_inner())
    }
}
