//! The last step inside a container's init (and an exec'd process): libcontainer calls
//! [`Executor::exec`] after namespaces, rootfs, user and capabilities are set up. We restore a
//! clean signal state (the shim, a Rust program, ignores SIGPIPE and blocks SIGCHLD, and both
//! would be inherited across exec), install the seccomp profile, and exec.

use std::ffi::CString;

use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use oci_spec::runtime::Spec;
use seccompiler::BpfProgram;

#[derive(Clone)]
pub(crate) struct SeccompExecutor {
    /// Compiled in the shim before the clone, so the container's init only installs it.
    pub filter: BpfProgram,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        let argv: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| ExecutorError::InvalidArg)?;

        signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(|e| ExecutorError::Other(format!("resetting the signal mask: {e}")))?;
        for sig in [Signal::SIGPIPE, Signal::SIGCHLD] {
            // SAFETY: installs the default disposition, no handler code runs.
            unsafe { signal::signal(sig, SigHandler::SigDfl) }
                .map_err(|e| ExecutorError::Other(format!("resetting {sig}: {e}")))?;
        }

        seccompiler::apply_filter(&self.filter)
            .map_err(|e| ExecutorError::Other(format!("installing the seccomp profile: {e}")))?;
        let err = nix::unistd::execvp(&argv[0], &argv).unwrap_err();
        Err(ExecutorError::Other(format!(
            "exec {}: {err}",
            argv[0].to_string_lossy()
        )))
    }

    /// libcontainer's check (the executable exists in the container's PATH and is executable),
    /// run before the container is reported as created: a missing binary fails the start.
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}
