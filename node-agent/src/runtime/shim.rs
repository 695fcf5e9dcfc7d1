//! The per-container shim (being written).

/// Entry point of `berth shim ...` (the berth binary re-executed, single-threaded).
pub fn main(args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let _ = args;
    eprintln!("berth shim: not implemented yet");
    std::process::ExitCode::FAILURE
}
