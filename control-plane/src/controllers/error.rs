//! What can stop a controller from deciding: a spec it cannot act on.

/// A spec the deciders refuse. Validation rejects these at apply time; the deciders check
/// again because objects written before a rule existed still reach them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("{field}: {value:?} is not a number or a percentage like 25%")]
    InvalidIntOrPercent { field: &'static str, value: String },
    #[error(
        "spec.strategy.rollingUpdate: maxSurge and maxUnavailable are both 0, so the rollout \
         could never make progress; set one of them above 0"
    )]
    NoRolloutProgress,
}
