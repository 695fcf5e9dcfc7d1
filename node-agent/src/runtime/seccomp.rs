//! The default seccomp profile, in the spirit of Docker's: everything is allowed except the
//! system calls a container has no business making (kernel keyring, module loading, mounts and
//! namespaces, clock and reboot, BPF and perf, handle-based opens, ...), which fail with EPERM.
//!
//! libcontainer is built without libseccomp, so it ignores `linux.seccomp`; the shim compiles
//! this list with `seccompiler` (pure Rust BPF) and installs it in the container's init right
//! before the final exec (`executor.rs`).
//!
//! A deny list must not be bypassable by another syscall ABI: the program kills any process
//! whose syscall does not come from the native architecture (i386 `int 0x80`), and on x86_64
//! answers every x32 syscall (`nr | 0x40000000`) with ENOSYS. `clone3` gets ENOSYS too (its
//! flags live in memory BPF cannot read, so libc falls back to `clone`, whose namespace flags
//! are checked).

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// The architecture the filter is compiled for: the one this binary runs on.
#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the seccomp profile supports x86_64 and aarch64 only");

/// System calls that fail with EPERM, whatever their arguments.
const DENIED: &[libc::c_long] = &[
    // Kernel keyring: not namespaced.
    libc::SYS_add_key,
    libc::SYS_keyctl,
    libc::SYS_request_key,
    // Kernel modules and kexec.
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    // Mounts, root and namespaces.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // Host-wide state.
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    // Kernel attack surface.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_fanotify_init,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_lookup_dcookie,
    // Handles bypass path-based checks.
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    // Other processes' memory (Docker allows these only with CAP_SYS_PTRACE).
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    // Legacy x86 only.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
];

/// `clone` flags that create namespaces: denied like `unshare`.
const CLONE_NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// x32 syscalls carry this bit in their number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[derive(Debug, thiserror::Error)]
#[error("compiling the seccomp profile: {0}")]
pub struct SeccompError(#[from] seccompiler::BackendError);

/// The default profile as a BPF program, ready for `seccompiler::apply_filter`.
pub fn default_profile() -> Result<BpfProgram, SeccompError> {
    let errno = |e: i32| SeccompAction::Errno(e as u32);

    // Rules matched by syscall number: EPERM, but ENOSYS for clone3.
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    // The flags argument of clone is the first on both x86_64 and aarch64.
    let mut clone_rules = Vec::new();
    for flag in CLONE_NAMESPACE_FLAGS {
        let flag = flag as u64;
        clone_rules.push(SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )?])?);
    }
    denied.insert(libc::SYS_clone, clone_rules);
    let eperm: BpfProgram =
        SeccompFilter::new(denied, SeccompAction::Allow, errno(libc::EPERM), ARCH)?.try_into()?;

    let clone3: BpfProgram = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        errno(libc::ENOSYS),
        ARCH,
    )?
    .try_into()?;

    // One program: our ABI prologue, then the two compiled filters chained (each starts with
    // its own arch check; the first's "allow" falls through to the second).
    let mut program = abi_prologue();
    program.extend(chain(eperm));
    program.extend(clone3);
    Ok(program)
}

/// Kill on a foreign architecture; ENOSYS for x32 syscalls.
fn abi_prologue() -> BpfProgram {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // struct seccomp_data { int nr; __u32 arch; ... }
    const OFFSET_ARCH: u32 = 4;
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut program = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        sock_filter {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH,
        },
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
        const OFFSET_NR: u32 = 0;
        program.extend([
            stmt(LD_W_ABS, OFFSET_NR),
            sock_filter {
                code: JGE_K,
                jt: 0,
                jf: 1,
                k: X32_SYSCALL_BIT,
            },
            stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ]);
    }
    program
}

/// A compiled filter whose "allow" returns continue to the instruction after it instead.
fn chain(mut program: BpfProgram) -> BpfProgram {
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    let len = program.len();
    for (i, insn) in program.iter_mut().enumerate() {
        if insn.code == RET_K && insn.k == libc::SECCOMP_RET_ALLOW {
            // Jump to the end of this program (the next filter's first instruction).
            *insn = sock_filter {
                code: JA,
                jt: 0,
                jf: 0,
                k: (len - i - 1) as u32,
            };
        }
    }
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_compiles_and_fits_the_kernel_limit() {
        let program = default_profile().expect("profile");
        // BPF_MAXINSNS
        assert!(program.len() < 4096, "{} instructions", program.len());
        assert_eq!(program[0].k, 4, "starts with the arch check");
        // No "allow" return except the final filter's.
        let allows = program
            .iter()
            .filter(|i| i.code == (libc::BPF_RET | libc::BPF_K) as u16)
            .filter(|i| i.k == libc::SECCOMP_RET_ALLOW)
            .count();
        assert!(allows >= 1);
    }

    /// Installs the profile in a forked child and reports what some syscalls return there.
    #[test]
    fn denied_calls_fail_and_others_work() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};

        let program = default_profile().expect("profile");
        // SAFETY: the child only makes raw system calls and exits with _exit.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = (|| {
                    if seccompiler::apply_filter(&program).is_err() {
                        return 10;
                    }
                    // SAFETY: plain system calls with valid arguments.
                    unsafe {
                        if libc::unshare(libc::CLONE_NEWUSER) != -1
                            || *libc::__errno_location() != libc::EPERM
                        {
                            return 11;
                        }
                        if libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) != -1
                            || *libc::__errno_location() != libc::EPERM
                        {
                            return 12;
                        }
                        let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long;
                        match libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) {
                            0 => libc::_exit(0), // the filter let it through: a child
                            -1 if *libc::__errno_location() == libc::EPERM => {}
                            _ => return 16,
                        }
                        if libc::syscall(libc::SYS_clone3, 0, 0) != -1
                            || *libc::__errno_location() != libc::ENOSYS
                        {
                            return 13;
                        }
                        #[cfg(target_arch = "x86_64")]
                        if libc::syscall(X32_SYSCALL_BIT as libc::c_long | libc::SYS_getpid) != -1
                            || *libc::__errno_location() != libc::ENOSYS
                        {
                            return 14;
                        }
                        if libc::getpid() <= 0 || libc::getppid() <= 0 {
                            return 15;
                        }
                    }
                    0
                })();
                // SAFETY: exits the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).expect("waitpid");
                assert_eq!(status, WaitStatus::Exited(child, 0));
            }
        }
    }
}
