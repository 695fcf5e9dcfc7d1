//! A pod's status as the agent reports it, computed from what its containers are doing.
//! Pure: the pod worker gathers [`ContainerView`]s, this turns them into a `PodStatus`.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How one container of a pod stands, as the pod worker knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// The pulled image's `REPOSITORY@sha256:...`, once there is one.
    pub image_id: Option<String>,
    pub id: Option<String>,
    pub state: ViewState,
    /// The previous instance's end, if it was restarted.
    pub last_termination: Option<Termination>,
    pub restart_count: i32,
    /// Readiness probe passed (or there is none and the container runs).
    pub ready: bool,
    /// Startup probe passed (or there is none).
    pub started: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ViewState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: jiff::Timestamp,
    },
    Terminated(Termination),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: jiff::Timestamp,
    pub message: Option<String>,
}

impl Termination {
    /// Kubernetes' reason words.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }

    fn to_k8s(&self, container_id: Option<&String>) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code: self.exit_code,
            signal: self.signal,
            reason: Some(self.reason().to_string()),
            message: self.message.clone(),
            started_at: self.started_at.map(time),
            finished_at: Some(time(self.finished_at)),
            container_id: container_id.cloned(),
        }
    }
}

fn time(t: jiff::Timestamp) -> Time {
    Time(t)
}

/// The pod's phase from its containers and restart policy (Kubernetes' rules, simplified to
/// regular containers).
pub fn phase(containers: &[ContainerView], restart_policy: &str) -> &'static str {
    if containers.is_empty() {
        return "Pending";
    }
    let terminated: Vec<&Termination> = containers
        .iter()
        .filter_map(|c| match &c.state {
            ViewState::Terminated(t) => Some(t),
            _ => None,
        })
        .collect();
    let running = containers
        .iter()
        .any(|c| matches!(c.state, ViewState::Running { .. }));
    if terminated.len() == containers.len() {
        let all_succeeded = terminated.iter().all(|t| t.exit_code == 0);
        return match restart_policy {
            "Always" => "Running", // about to be restarted
            "OnFailure" if !all_succeeded => "Running",
            _ if all_succeeded => "Succeeded",
            _ => "Failed",
        };
    }
    // A container waiting to be restarted has run: the pod is past Pending (Kubernetes).
    let restarting = containers
        .iter()
        .any(|c| matches!(c.state, ViewState::Waiting { .. }) && c.last_termination.is_some());
    if running || restarting {
        return "Running";
    }
    if !terminated.is_empty()
        && containers
            .iter()
            .all(|c| !matches!(c.state, ViewState::Waiting { .. }))
    {
        return "Running";
    }
    "Pending"
}

fn condition(type_: &str, ok: bool, now: jiff::Timestamp, previous: &PodStatus) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the condition changes.
    let last = previous
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        last_transition_time: Some(last.unwrap_or(time(now))),
        ..Default::default()
    }
}

/// The status to report, given the containers, the pod's addresses and the status reported
/// before (for transition times and the start time).
pub fn pod_status(
    containers: &[ContainerView],
    restart_policy: &str,
    pod_ip: Option<&str>,
    host_ip: &str,
    previous: &PodStatus,
    now: jiff::Timestamp,
) -> PodStatus {
    let phase = phase(containers, restart_policy);
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let statuses = containers
        .iter()
        .map(|c| {
            let state = match &c.state {
                ViewState::Waiting { reason, message } => ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: message.clone(),
                    }),
                    ..Default::default()
                },
                ViewState::Running { started_at } => ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(time(*started_at)),
                    }),
                    ..Default::default()
                },
                ViewState::Terminated(t) => ContainerState {
                    terminated: Some(t.to_k8s(c.id.as_ref())),
                    ..Default::default()
                },
            };
            ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone(),
                image_id: c.image_id.clone().unwrap_or_default(),
                container_id: c.id.clone(),
                ready: c.ready,
                started: Some(c.started && matches!(c.state, ViewState::Running { .. })),
                restart_count: c.restart_count,
                state: Some(state),
                last_state: c.last_termination.as_ref().map(|t| ContainerState {
                    terminated: Some(t.to_k8s(None)),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    PodStatus {
        phase: Some(phase.to_string()),
        host_ip: Some(host_ip.to_string()),
        pod_ip: pod_ip.map(str::to_string),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: previous.start_time.clone().or(Some(time(now))),
        conditions: Some(vec![
            condition("PodScheduled", true, now, previous),
            condition("Initialized", true, now, previous),
            condition("ContainersReady", all_ready, now, previous),
            condition("Ready", all_ready, now, previous),
        ]),
        container_statuses: Some(statuses),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: ViewState, ready: bool) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "busybox".into(),
            image_id: None,
            id: Some("berth://x".into()),
            state,
            last_termination: None,
            restart_count: 0,
            ready,
            started: true,
        }
    }

    fn exited(code: i32) -> ViewState {
        ViewState::Terminated(Termination {
            exit_code: code,
            signal: None,
            oom_killed: false,
            started_at: None,
            finished_at: jiff::Timestamp::UNIX_EPOCH,
            message: None,
        })
    }

    #[test]
    fn phases_follow_kubernetes() {
        let running = ViewState::Running {
            started_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let waiting = ViewState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        assert_eq!(phase(&[view(waiting, false)], "Always"), "Pending");
        assert_eq!(phase(&[view(running, true)], "Always"), "Running");
        assert_eq!(phase(&[view(exited(0), false)], "Never"), "Succeeded");
        assert_eq!(phase(&[view(exited(1), false)], "Never"), "Failed");
        assert_eq!(phase(&[view(exited(1), false)], "OnFailure"), "Running");
        assert_eq!(phase(&[view(exited(0), false)], "OnFailure"), "Succeeded");
        assert_eq!(phase(&[view(exited(0), false)], "Always"), "Running");
        let mut crash_looping = view(
            ViewState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
            false,
        );
        assert_eq!(
            phase(std::slice::from_ref(&crash_looping), "Always"),
            "Pending"
        );
        crash_looping.last_termination = Some(Termination {
            exit_code: 1,
            signal: None,
            oom_killed: false,
            started_at: None,
            finished_at: jiff::Timestamp::UNIX_EPOCH,
            message: None,
        });
        assert_eq!(phase(&[crash_looping], "Always"), "Running");
    }

    #[test]
    fn ready_condition_keeps_its_transition_time() {
        let t0 = jiff::Timestamp::from_second(1000).unwrap();
        let t1 = jiff::Timestamp::from_second(2000).unwrap();
        let running = ViewState::Running { started_at: t0 };
        let first = pod_status(
            &[view(running.clone(), true)],
            "Always",
            Some("10.244.0.2"),
            "10.0.0.1",
            &PodStatus::default(),
            t0,
        );
        let again = pod_status(
            &[view(running.clone(), true)],
            "Always",
            Some("10.244.0.2"),
            "10.0.0.1",
            &first,
            t1,
        );
        let ready = |s: &PodStatus| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&again).status, "True");
        assert_eq!(ready(&again).last_transition_time, Some(Time(t0)));
        let unready = pod_status(
            &[view(running, false)],
            "Always",
            Some("10.244.0.2"),
            "10.0.0.1",
            &again,
            t1,
        );
        assert_eq!(ready(&unready).status, "False");
        assert_eq!(ready(&unready).last_transition_time, Some(Time(t1)));
        assert_eq!(unready.start_time, Some(Time(t0)));
    }

    #[test]
    fn oom_kill_is_reported_as_such() {
        let t = Termination {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            started_at: None,
            finished_at: jiff::Timestamp::UNIX_EPOCH,
            message: None,
        };
        assert_eq!(t.reason(), "OOMKilled");
    }
}
