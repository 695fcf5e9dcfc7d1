//! A pod's container as an OCI runtime spec: a pure function, no IO.
//!
//! The defaults follow Docker/runc (capabilities, masked and read-only /proc paths, the /dev
//! and /proc mounts, a deny-all device cgroup with runc's default devices) and the Kubernetes
//! rules on top: `command` replaces the image's entrypoint and `args` its cmd, `$(VAR)` in
//! them expands from the container's env, cgroup limits come from `resources` the way the
//! kubelet computes them, the user from `securityContext`. The runtime fills in what only it
//! knows: the rootfs path and `linux.cgroupsPath`.
//!
//! What comes from outside the pod object is resolved by the agent first and passed in as a
//! [`ContainerConfig`] ([`build_with_config`]): the container's env with `valueFrom` and
//! `envFrom` already read from ConfigMaps, Secrets and the downward API, and its volume mounts
//! as host paths. Volume mounts become bind mounts (after the default mounts, parents before
//! children), so libcontainer makes them inside the container's mount namespace.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use berth_proto::quantity::{self, QuantityError};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// The PATH a container gets when its image sets none (Docker's and containerd's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every container's pids limit: a fork bomb stays inside its container.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// The cgroup v1 CFS period (the kubelet's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Bounds of cpu.shares, as the kubelet clamps them (a BestEffort container gets the minimum).
const MIN_CPU_SHARES: u64 = 2;
const MAX_CPU_SHARES: u64 = 262_144;
/// The smallest CFS quota the kernel accepts.
const MIN_CPU_QUOTA_US: i64 = 1000;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Docker's masked paths: bind-mounted over with /dev/null (files) or an empty tmpfs (dirs).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths under /proc.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the image contributes (its config); all empty until images exist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid` (numeric only for now).
    pub user: Option<String>,
}

/// Everything [`build`] needs.
#[derive(Clone, Debug)]
pub struct SpecInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    /// The pod's network namespace (a bind-mounted nsfs file, shared by the pod's containers);
    /// `None`: the container gets a new, empty one.
    pub netns: Option<PathBuf>,
}

/// What the agent resolved for a container beyond its pod object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerConfig {
    /// The container's env (explicit and from ConfigMaps, Secrets and the downward API), in
    /// order, `$(VAR)` already expanded; `None`: taken from `env` values (no valueFrom).
    pub env: Option<Vec<(String, String)>>,
    pub mounts: Vec<VolumeMount>,
}

/// A volume (or a subPath of one) bind-mounted into the container.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeMount {
    /// The directory or file on the node.
    pub host_path: PathBuf,
    /// Absolute, in the container.
    pub container_path: String,
    pub read_only: bool,
}

/// A container that cannot be expressed as a runtime spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("env {name}: valueFrom is resolved by the node agent, and was not")]
    EnvValueFrom { name: String },
    #[error("no command: the container sets neither command nor args and the image has no entrypoint or cmd")]
    NoCommand,
    #[error("resources.{field}: {source}")]
    Quantity {
        field: String,
        #[source]
        source: QuantityError,
    },
    #[error("resources.{field}: {value} is out of range")]
    OutOfRange { field: String, value: i64 },
    #[error("image user {0:?}: only numeric uid[:gid] is supported")]
    ImageUser(String),
    #[error("securityContext.{field}: {value} is not a valid id")]
    InvalidId { field: &'static str, value: i64 },
    #[error("securityContext.runAsNonRoot is set but the container would run as root (uid 0)")]
    RunsAsRoot,
    #[error("securityContext.privileged is not supported")]
    Privileged,
    #[error("securityContext.capabilities: unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// The OCI runtime spec of one container of a pod. `root.path` is `rootfs` (relative to the
/// bundle) and `linux.cgroupsPath` is unset: the runtime sets both.
pub fn build(input: &SpecInput) -> Result<Spec, SpecError> {
    build_with_config(input, &ContainerConfig::default())
}

/// [`build`], with the env and volume mounts the agent resolved.
pub fn build_with_config(input: &SpecInput, config: &ContainerConfig) -> Result<Spec, SpecError> {
    let container = input.container;
    let security = container.security_context.as_ref();
    if security.and_then(|s| s.privileged).unwrap_or(false) {
        return Err(SpecError::Privileged);
    }

    let container_env = match &config.env {
        Some(env) => env.clone(),
        None => container_env(container.env.as_deref().unwrap_or_default())?,
    };
    let hostname = hostname(input.pod);
    let env = merged_env(&input.image.env, &container_env, &hostname);
    let args = command_line(container, input.image, &container_env)?;
    let user = user(input)?;
    let capabilities = capabilities(container, user.uid())?;

    let cwd = container
        .working_dir
        .clone()
        .filter(|dir| !dir.is_empty())
        .or_else(|| input.image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(true)
        // No rlimits: like Docker and containerd, containers inherit the agent's (raising a
        // hard limit needs CAP_SYS_RESOURCE, which an agent may not have).
        .build()?;

    let read_only = security
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false);
    let root = RootBuilder::default()
        .path("rootfs")
        .readonly(read_only)
        .build()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces(input.netns.clone())?)
        .resources(resources(container)?)
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
        .build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .hostname(hostname)
        .root(root)
        .process(process)
        .mounts([default_mounts()?, volume_mounts(&config.mounts)?].concat())
        .linux(linux)
        .build()?)
}

/// The pod's hostname: `spec.hostname`, else the pod name cut to a DNS label (as the kubelet).
fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut name: String = name.chars().take(63).collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    name
}

/// The container's own env as (name, value) in order, each value expanded from the ones before.
fn container_env(vars: &[EnvVar]) -> Result<Vec<(String, String)>, SpecError> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(vars.len());
    for var in vars {
        if var.value_from.is_some() {
            return Err(SpecError::EnvValueFrom {
                name: var.name.clone(),
            });
        }
        let value = expand(var.value.as_deref().unwrap_or_default(), &env);
        env.retain(|(name, _)| *name != var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// Image env, then the container's (which wins), then PATH and HOSTNAME unless set.
fn merged_env(image: &[String], container: &[(String, String)], hostname: &str) -> Vec<String> {
    let overridden: HashSet<&str> = container.iter().map(|(k, _)| k.as_str()).collect();
    let mut env: Vec<String> = image
        .iter()
        .filter(|entry| {
            let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
            !overridden.contains(key)
        })
        .cloned()
        .collect();
    env.extend(container.iter().map(|(k, v)| format!("{k}={v}")));
    let has = |env: &[String], key: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
    };
    if !has(&env, "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOSTNAME") {
        env.insert(1, format!("HOSTNAME={hostname}"));
    }
    env
}

/// Kubernetes' rule: `command` replaces the entrypoint, `args` the cmd; `$(VAR)` in either
/// expands from the container's env.
fn command_line(
    container: &Container,
    image: &ImageConfig,
    env: &[(String, String)],
) -> Result<Vec<String>, SpecError> {
    let expand_all = |list: &[String]| list.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    let command = container.command.as_deref().filter(|c| !c.is_empty());
    let args = container.args.as_deref().filter(|a| !a.is_empty());
    let argv = match (command, args) {
        (Some(command), Some(args)) => [expand_all(command), expand_all(args)].concat(),
        (Some(command), None) => expand_all(command),
        (None, Some(args)) => [image.entrypoint.clone(), expand_all(args)].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(argv)
}

/// Kubernetes' `$(VAR)` expansion: a defined VAR is replaced, an undefined one stays as
/// written, `$$` is a literal `$`.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, value)) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// uid and gid: the container's securityContext, then the pod's, then the image's user.
fn user(input: &SpecInput) -> Result<oci_spec::runtime::User, SpecError> {
    let container = input.container.security_context.as_ref();
    let pod = input
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref());
    let (image_uid, image_gid) = match input.image.user.as_deref().filter(|u| !u.is_empty()) {
        None => (None, None),
        Some(user) => {
            let (uid, gid) = match user.split_once(':') {
                Some((uid, gid)) => (uid, Some(gid)),
                None => (user, None),
            };
            let parse = |s: &str| {
                s.parse::<u32>()
                    .map_err(|_| SpecError::ImageUser(user.to_string()))
            };
            (Some(parse(uid)?), gid.map(parse).transpose()?)
        }
    };
    let id = |field: &'static str, value: Option<i64>| -> Result<Option<u32>, SpecError> {
        value
            .map(|v| u32::try_from(v).map_err(|_| SpecError::InvalidId { field, value: v }))
            .transpose()
    };
    let uid = match id("runAsUser", container.and_then(|c| c.run_as_user))? {
        Some(uid) => uid,
        None => id("runAsUser", pod.and_then(|p| p.run_as_user))?
            .or(image_uid)
            .unwrap_or(0),
    };
    let gid = match id("runAsGroup", container.and_then(|c| c.run_as_group))? {
        Some(gid) => gid,
        None => id("runAsGroup", pod.and_then(|p| p.run_as_group))?
            .or(image_gid)
            .unwrap_or(0),
    };
    let non_root = container
        .and_then(|c| c.run_as_non_root)
        .or_else(|| pod.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if non_root && uid == 0 {
        return Err(SpecError::RunsAsRoot);
    }
    let mut additional = Vec::new();
    for group in pod
        .and_then(|p| p.supplemental_groups.as_deref())
        .unwrap_or_default()
    {
        additional.push(id("supplementalGroups", Some(*group))?.unwrap_or_default());
    }
    let mut builder = UserBuilder::default().uid(uid).gid(gid);
    if !additional.is_empty() {
        builder = builder.additional_gids(additional);
    }
    Ok(builder.build()?)
}

/// Docker's default set with securityContext.capabilities add/drop applied, in bounding,
/// effective and permitted. Inheritable and ambient stay empty (runc since CVE-2022-24769);
/// a non-root process gets no effective or permitted capabilities (moby since 20.10).
fn capabilities(container: &Container, uid: u32) -> Result<LinuxCapabilities, SpecError> {
    let mut set: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let requested = container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref());
    let parse = |name: &str| {
        let bare = name.strip_prefix("CAP_").unwrap_or(name);
        bare.to_ascii_uppercase()
            .parse::<Capability>()
            .map_err(|_| SpecError::UnknownCapability(name.to_string()))
    };
    if let Some(requested) = requested {
        for name in requested.drop.as_deref().unwrap_or_default() {
            if name.eq_ignore_ascii_case("ALL") {
                set.clear();
            } else {
                set.remove(&parse(name)?);
            }
        }
        for name in requested.add.as_deref().unwrap_or_default() {
            set.insert(parse(name)?);
        }
    }
    let effective = if uid == 0 {
        set.clone()
    } else {
        HashSet::new()
    };
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set)
        .effective(effective.clone())
        .permitted(effective)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?)
}

fn namespaces(netns: Option<PathBuf>) -> Result<Vec<LinuxNamespace>, SpecError> {
    let plain = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    let mut network = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(path) = netns {
        network = network.path(path);
    }
    Ok(vec![
        plain(LinuxNamespaceType::Pid)?,
        network.build()?,
        plain(LinuxNamespaceType::Ipc)?,
        plain(LinuxNamespaceType::Uts)?,
        plain(LinuxNamespaceType::Mount)?,
    ])
}

/// Memory, CPU and pids limits the way the kubelet sets them, and the device cgroup: deny all
/// (runc's default devices are allowed on top by the runtime).
fn resources(container: &Container) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let requirements = container.resources.as_ref();
    let limits = requirements.and_then(|r| r.limits.as_ref());
    let requests = requirements.and_then(|r| r.requests.as_ref());
    fn get<'a>(map: Option<&'a BTreeMap<String, Quantity>>, key: &str) -> Option<&'a Quantity> {
        map.and_then(|m| m.get(key))
    }
    let quantity_error = |field: String| move |source| SpecError::Quantity { field, source };

    let mut builder = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?])
        .pids(
            LinuxPidsBuilder::default()
                .limit(DEFAULT_PIDS_LIMIT)
                .build()?,
        );

    if let Some(q) = get(limits, "memory") {
        let bytes = quantity::bytes(q).map_err(quantity_error("limits.memory".to_string()))?;
        if bytes <= 0 {
            return Err(SpecError::OutOfRange {
                field: "limits.memory".to_string(),
                value: bytes,
            });
        }
        // Swap equal to the limit: no swap on top of memory, as the kubelet does.
        builder = builder.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()?,
        );
    }

    let cpu_limit = get(limits, "cpu")
        .map(|q| quantity::cpu_millis(q).map_err(quantity_error("limits.cpu".to_string())))
        .transpose()?;
    let cpu_request = get(requests, "cpu")
        .map(|q| quantity::cpu_millis(q).map_err(quantity_error("requests.cpu".to_string())))
        .transpose()?;
    // An unset request defaults to the limit (the API server's defaulting).
    let shares = match cpu_request.or(cpu_limit) {
        Some(millis) => (u64::try_from(millis.max(0)).unwrap_or(0) * 1024 / 1000)
            .clamp(MIN_CPU_SHARES, MAX_CPU_SHARES),
        None => MIN_CPU_SHARES,
    };
    let mut cpu = LinuxCpuBuilder::default().shares(shares);
    if let Some(millis) = cpu_limit {
        if millis <= 0 {
            return Err(SpecError::OutOfRange {
                field: "limits.cpu".to_string(),
                value: millis,
            });
        }
        let quota = (millis.saturating_mul(CPU_PERIOD_US as i64) / 1000).max(MIN_CPU_QUOTA_US);
        cpu = cpu.quota(quota).period(CPU_PERIOD_US);
    }
    builder = builder.cpu(cpu.build()?);
    Ok(builder.build()?)
}

/// runc's default mounts (without the cgroup filesystem): /proc, a tmpfs /dev with devpts, shm
/// and mqueue, and a read-only /sys.
fn default_mounts() -> Result<Vec<Mount>, SpecError> {
    let mount = |destination: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

/// Bind mounts of the container's volumes, parents before children (a mount inside another
/// volume's path must come after it, or it would be hidden).
fn volume_mounts(mounts: &[VolumeMount]) -> Result<Vec<Mount>, SpecError> {
    let mut sorted: Vec<&VolumeMount> = mounts.iter().collect();
    let depth = |m: &VolumeMount| {
        m.container_path
            .split('/')
            .filter(|part| !part.is_empty())
            .count()
    };
    sorted.sort_by_key(|m| depth(m));
    sorted
        .into_iter()
        .map(|m| {
            // As containerd binds volumes: recursively, read-only when asked.
            let mut options = vec!["rbind".to_string()];
            if m.read_only {
                options.push("ro".into());
            }
            Ok(MountBuilder::default()
                .destination(&m.container_path)
                .typ("bind")
                .source(&m.host_path)
                .options(options)
                .build()?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, PodSecurityContext, PodSpec, ResourceRequirements, SecurityContext,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            ..Default::default()
        }
    }

    fn container(command: &[&str]) -> Container {
        Container {
            name: "main".to_string(),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn build_with(pod: &Pod, container: &Container, image: &ImageConfig) -> Spec {
        build(&SpecInput {
            pod,
            container,
            image,
            netns: None,
        })
        .expect("spec")
    }

    fn env_var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.to_string(),
            value: Some(value.to_string()),
            value_from: None,
        }
    }

    fn limits(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn command_and_args_merge_with_the_image_the_kubernetes_way() {
        let image = ImageConfig {
            entrypoint: strings(&["/entry"]),
            cmd: strings(&["default-arg"]),
            ..Default::default()
        };
        let args = |command: Option<&[&str]>, args: Option<&[&str]>| {
            let c = Container {
                command: command.map(strings),
                args: args.map(strings),
                ..Default::default()
            };
            let spec = build_with(&pod("p"), &c, &image);
            spec.process().as_ref().unwrap().args().clone().unwrap()
        };
        assert_eq!(args(None, None), strings(&["/entry", "default-arg"]));
        assert_eq!(args(Some(&["/bin/sh"]), None), strings(&["/bin/sh"]));
        assert_eq!(args(None, Some(&["x"])), strings(&["/entry", "x"]));
        assert_eq!(
            args(Some(&["/bin/sh", "-c"]), Some(&["echo"])),
            strings(&["/bin/sh", "-c", "echo"])
        );
        let empty = build(&SpecInput {
            pod: &pod("p"),
            container: &Container::default(),
            image: &ImageConfig::default(),
            netns: None,
        });
        assert!(matches!(empty, Err(SpecError::NoCommand)));
    }

    #[test]
    fn env_merges_image_and_container_and_expands_references() {
        let image = ImageConfig {
            env: strings(&["PATH=/image/bin", "A=image", "KEEP=1"]),
            ..Default::default()
        };
        let mut c = container(&["/bin/echo", "$(B)", "$$(B)", "$(NOPE)"]);
        c.env = Some(vec![env_var("A", "container"), env_var("B", "a=$(A)")]);
        let spec = build_with(&pod("web-1"), &c, &image);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(
            process.env().clone().unwrap(),
            strings(&[
                "PATH=/image/bin",
                "HOSTNAME=web-1",
                "KEEP=1",
                "A=container",
                "B=a=container"
            ])
        );
        assert_eq!(
            process.args().clone().unwrap(),
            strings(&["/bin/echo", "a=container", "$(B)", "$(NOPE)"])
        );

        let spec = build_with(&pod("p"), &container(&["x"]), &ImageConfig::default());
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
        assert_eq!(env[1], "HOSTNAME=p");

        let mut c = container(&["x"]);
        c.env = Some(vec![EnvVar {
            name: "S".to_string(),
            value: None,
            value_from: Some(Default::default()),
        }]);
        let err = build(&SpecInput {
            pod: &pod("p"),
            container: &c,
            image: &ImageConfig::default(),
            netns: None,
        });
        assert!(matches!(err, Err(SpecError::EnvValueFrom { name }) if name == "S"));
    }

    #[test]
    fn expansion_edge_cases() {
        let env = vec![("X".to_string(), "1".to_string())];
        assert_eq!(expand("$(X)$(X)", &env), "11");
        assert_eq!(expand("$X $(X", &env), "$X $(X");
        assert_eq!(expand("$$$(X)$", &env), "$1$");
        assert_eq!(expand("", &env), "");
    }

    #[test]
    fn namespaces_hostname_and_netns_path() {
        let spec = build_with(&pod("web-1"), &container(&["x"]), &ImageConfig::default());
        assert_eq!(spec.hostname().as_deref(), Some("web-1"));
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let types: Vec<_> = namespaces.iter().map(|n| n.typ()).collect();
        for typ in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
        ] {
            assert!(types.contains(&typ), "{typ:?} missing");
        }
        assert!(namespaces.iter().all(|n| n.path().is_none()));

        let spec = build(&SpecInput {
            pod: &pod("p"),
            container: &container(&["x"]),
            image: &ImageConfig::default(),
            netns: Some(PathBuf::from("/run/berth/netns/p")),
        })
        .unwrap();
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let net = namespaces
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some("/run/berth/netns/p".as_ref()));

        let mut long = pod(&"a".repeat(70));
        assert_eq!(hostname(&long).len(), 63);
        long.spec.as_mut().unwrap().hostname = Some("custom".to_string());
        assert_eq!(hostname(&long), "custom");
    }

    #[test]
    fn limits_become_cgroup_settings() {
        let mut c = container(&["x"]);
        c.resources = Some(ResourceRequirements {
            limits: limits(&[("memory", "16Mi"), ("cpu", "500m")]),
            requests: limits(&[("cpu", "250m")]),
            ..Default::default()
        });
        let spec = build_with(&pod("p"), &c, &ImageConfig::default());
        let resources = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        let memory = resources.memory().unwrap();
        assert_eq!(memory.limit(), Some(16 * 1024 * 1024));
        assert_eq!(memory.swap(), Some(16 * 1024 * 1024));
        let cpu = resources.cpu().clone().unwrap();
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(resources.pids().unwrap().limit(), DEFAULT_PIDS_LIMIT);
        let devices = resources.devices().clone().unwrap();
        assert!(!devices[0].allow());

        // No requests: the limit; nothing at all: the kubelet's minimum shares.
        let mut c = container(&["x"]);
        c.resources = Some(ResourceRequirements {
            limits: limits(&[("cpu", "2")]),
            ..Default::default()
        });
        let spec = build_with(&pod("p"), &c, &ImageConfig::default());
        let cpu = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(cpu.cpu().clone().unwrap().shares(), Some(2048));
        let spec = build_with(&pod("p"), &container(&["x"]), &ImageConfig::default());
        let resources = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(resources.cpu().clone().unwrap().shares(), Some(2));
        assert!(resources.cpu().clone().unwrap().quota().is_none());
        assert!(resources.memory().is_none());

        let mut c = container(&["x"]);
        c.resources = Some(ResourceRequirements {
            limits: limits(&[("memory", "lots")]),
            ..Default::default()
        });
        let err = build(&SpecInput {
            pod: &pod("p"),
            container: &c,
            image: &ImageConfig::default(),
            netns: None,
        });
        assert!(matches!(err, Err(SpecError::Quantity { field, .. }) if field == "limits.memory"));
    }

    #[test]
    fn root_gets_docker_capabilities_and_non_root_none_effective() {
        let spec = build_with(&pod("p"), &container(&["x"]), &ImageConfig::default());
        let process = spec.process().as_ref().unwrap();
        let caps = process.capabilities().clone().unwrap();
        let expected: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
        assert_eq!(caps.bounding().clone().unwrap(), expected);
        assert_eq!(caps.effective().clone().unwrap(), expected);
        assert_eq!(caps.permitted().clone().unwrap(), expected);
        assert!(caps.inheritable().clone().unwrap_or_default().is_empty());
        assert!(caps.ambient().clone().unwrap_or_default().is_empty());
        assert!(!expected.contains(&Capability::NetAdmin));
        assert!(!expected.contains(&Capability::SysAdmin));
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.user().uid(), 0);

        let mut c = container(&["x"]);
        c.security_context = Some(SecurityContext {
            run_as_user: Some(1000),
            capabilities: Some(Capabilities {
                add: Some(strings(&["NET_ADMIN"])),
                drop: Some(strings(&["ALL"])),
            }),
            ..Default::default()
        });
        let mut p = pod("p");
        p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
            run_as_group: Some(2000),
            supplemental_groups: Some(vec![3000]),
            ..Default::default()
        });
        let spec = build_with(&p, &c, &ImageConfig::default());
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().gid(), 2000);
        assert_eq!(process.user().additional_gids().clone(), Some(vec![3000]));
        let caps = process.capabilities().clone().unwrap();
        assert_eq!(
            caps.bounding().clone().unwrap(),
            [Capability::NetAdmin].into_iter().collect()
        );
        assert!(caps.effective().clone().unwrap().is_empty());
    }

    #[test]
    fn user_from_image_and_run_as_non_root() {
        let image = ImageConfig {
            user: Some("33:44".to_string()),
            ..Default::default()
        };
        let spec = build_with(&pod("p"), &container(&["x"]), &image);
        let user = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (33, 44));

        let named = ImageConfig {
            user: Some("www-data".to_string()),
            ..Default::default()
        };
        let err = build(&SpecInput {
            pod: &pod("p"),
            container: &container(&["x"]),
            image: &named,
            netns: None,
        });
        assert!(matches!(err, Err(SpecError::ImageUser(_))));

        let mut c = container(&["x"]);
        c.security_context = Some(SecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        let err = build(&SpecInput {
            pod: &pod("p"),
            container: &c,
            image: &ImageConfig::default(),
            netns: None,
        });
        assert!(matches!(err, Err(SpecError::RunsAsRoot)));
    }

    #[test]
    fn hardening_paths_mounts_and_working_dir() {
        let mut c = container(&["x"]);
        c.working_dir = Some("/srv".to_string());
        c.security_context = Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            ..Default::default()
        });
        let spec = build_with(&pod("p"), &c, &ImageConfig::default());
        assert_eq!(
            spec.process().as_ref().unwrap().cwd(),
            &PathBuf::from("/srv")
        );
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert!(linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string()));
        let destinations: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            destinations,
            strings(&[
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ])
        );
        assert!(linux.cgroups_path().is_none());

        let spec = build_with(&pod("p"), &container(&["x"]), &ImageConfig::default());
        assert_eq!(spec.process().as_ref().unwrap().cwd(), &PathBuf::from("/"));

        let mut c = container(&["x"]);
        c.security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let err = build(&SpecInput {
            pod: &pod("p"),
            container: &c,
            image: &ImageConfig::default(),
            netns: None,
        });
        assert!(matches!(err, Err(SpecError::Privileged)));
    }

    #[test]
    fn resolved_env_and_volume_mounts() {
        let mut c = container(&["/bin/echo", "$(FROM_MAP)"]);
        c.env = Some(vec![EnvVar {
            name: "FROM_MAP".to_string(),
            value: None,
            value_from: Some(Default::default()),
        }]);
        let config = ContainerConfig {
            env: Some(vec![("FROM_MAP".to_string(), "fast".to_string())]),
            mounts: vec![
                VolumeMount {
                    host_path: PathBuf::from("/data/pods/u/volumes/cfg/..data/app.conf"),
                    container_path: "/etc/app/conf/app.conf".to_string(),
                    read_only: true,
                },
                VolumeMount {
                    host_path: PathBuf::from("/data/pods/u/volumes/scratch"),
                    container_path: "/etc/app".to_string(),
                    read_only: false,
                },
            ],
        };
        let spec = build_with_config(
            &SpecInput {
                pod: &pod("p"),
                container: &c,
                image: &ImageConfig::default(),
                netns: None,
            },
            &config,
        )
        .unwrap();
        let process = spec.process().as_ref().unwrap();
        assert!(process
            .env()
            .as_ref()
            .unwrap()
            .contains(&"FROM_MAP=fast".to_string()));
        assert_eq!(
            process.args().clone().unwrap(),
            strings(&["/bin/echo", "fast"])
        );
        let mounts = spec.mounts().clone().unwrap();
        let volumes: Vec<_> = mounts
            .iter()
            .skip(6)
            .map(|m| {
                (
                    m.destination().to_string_lossy().into_owned(),
                    m.typ().clone().unwrap(),
                    m.source().clone().unwrap(),
                    m.options().clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            volumes,
            vec![
                (
                    "/etc/app".to_string(),
                    "bind".to_string(),
                    PathBuf::from("/data/pods/u/volumes/scratch"),
                    strings(&["rbind"])
                ),
                (
                    "/etc/app/conf/app.conf".to_string(),
                    "bind".to_string(),
                    PathBuf::from("/data/pods/u/volumes/cfg/..data/app.conf"),
                    strings(&["rbind", "ro"])
                ),
            ]
        );
    }
}
