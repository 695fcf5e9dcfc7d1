//! Persistent network namespaces, made the way `ip netns add` makes them: a short-lived
//! thread unshares a new namespace and bind-mounts its `/proc/thread-self/ns/net` onto a
//! file, which keeps the namespace alive after the thread is gone. Whoever needs to enter it
//! (the container runtime, a netlink socket for the pod's side of a veth) opens that file.
//!
//! `unshare` and `setns` change only the calling thread, so each runs on a std thread made
//! for it that ends afterwards: never on a tokio worker, whose later tasks would run in the
//! wrong namespace, and never on the blocking pool, which reuses its threads.

use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

/// Makes `dir` (created if missing) a mount point with shared propagation, as `ip netns`
/// does for /run/netns: the namespace files mounted in it then propagate to mount namespaces
/// created later, and so do their unmounts, so that a copy made by a container runtime does
/// not keep a deleted pod's namespace alive. Idempotent.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let make_shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then it is one.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(make_shared()?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` is a mounted namespace file (a plain file left by a crash is not).
pub(crate) fn is_mounted(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Creates a new network namespace and binds it to `path`. The file must not be a mounted
/// namespace already (see [`is_mounted`]); a plain file left over is reused.
pub(crate) async fn create(path: PathBuf) -> io::Result<()> {
    on_own_thread(move || {
        File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let bind = || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        };
        bind().inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })
    })
    .await
}

/// Unmounts the namespace file at `path` and removes it. Whatever of it is already gone is
/// fine. The namespace itself ends when nothing else (a process, another mount) holds it.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    // Mounted more than once only after an unusual crash; a few rounds undo any stacking.
    for _ in 0..4 {
        if !is_mounted(path) {
            break;
        }
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs `f` on a new thread inside the network namespace bound at `netns`. The thread ends
/// with `f`, so `f` may block (a listener, a blocking connect) or build its own runtime.
pub fn spawn_in<T, F>(netns: &Path, f: F) -> io::Result<JoinHandle<io::Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(netns)?;
    std::thread::Builder::new()
        .name("berth-netns".to_string())
        .spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET)?;
            drop(ns);
            Ok(f())
        })
}

/// [`spawn_in`] for async callers: awaits `f`'s result without blocking the runtime.
pub async fn run_in<T, F>(netns: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(netns)?;
    on_own_thread(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET)?;
        drop(ns);
        Ok(f())
    })
    .await
}

/// Runs `f` on a new std thread and awaits its result.
fn on_own_thread<T, F>(f: F) -> impl Future<Output = io::Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("berth-netns".to_string())
        .spawn(move || {
            let _ = tx.send(f());
        });
    async move {
        spawned?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")))
    }
}
