//! A minimal container root filesystem for tests: Debian's static busybox and its applets.
//! Needs `busybox-static` installed (`apt-get install busybox-static`; CI does).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's busybox-static puts the binary.
const BUSYBOX: &str = "/bin/busybox";

/// Makes `dir/busybox-rootfs` (once; an existing one is reused) with `bin/busybox`, a symlink
/// in `bin/` for every applet, `etc/passwd`, `etc/group`, and empty `tmp`, `proc`, `sys`,
/// `dev`, `root`. Returns its path. Use it as a read-only lower layer.
pub fn busybox(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-rootfs");
    if root.join(".complete").exists() {
        return root;
    }
    let busybox = Path::new(BUSYBOX);
    assert!(
        busybox.exists(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
    let building = dir.join(format!("busybox-rootfs.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(building.join(sub)).expect("create rootfs dir");
    }
    std::fs::set_permissions(
        building.join("tmp"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .expect("chmod tmp");
    std::fs::copy(busybox, building.join("bin/busybox")).expect("copy busybox");

    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", building.join("bin").join(applet)).expect("applet symlink");
    }
    std::fs::write(
        building.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write passwd");
    std::fs::write(building.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .expect("write group");
    std::fs::write(building.join(".complete"), "").expect("mark complete");
    // Another process may have finished first: keep theirs.
    if std::fs::rename(&building, &root).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(
        root.join(".complete").exists(),
        "no busybox rootfs at {}",
        root.display()
    );
    root
}
