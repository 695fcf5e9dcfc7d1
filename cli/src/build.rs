//! `berth image build`: runs a Dockerfile's steps into layers in the local image store.
//!
//! ```text
//!  Dockerfile ──berth_image::dockerfile::parse──▶ instructions
//!  FROM: pull the base from the cluster registry (or scratch)
//!  each step: key = parent key + step text (+ copied files' digest) ──build cache hit?──▶ CACHED
//!    COPY/ADD: context files (minus .dockerignore) into a fresh dir ──▶ layer_from_dir
//!    RUN: a berth container on the layers so far, no network ──▶ its overlay upper dir
//!         ──▶ layer_from_overlay_upper (deletions become OCI whiteouts)
//!    WORKDIR: a layer with the directory, only when it does not exist yet
//!    ENV ARG USER CMD ENTRYPOINT EXPOSE LABEL STOPSIGNAL VOLUME: config only, no layer
//!  all steps cached ──▶ the image built last time (same digest); else write_image
//! ```
//!
//! Config-only instructions make no (empty) layer, unlike Docker: they appear in the
//! config's history as `empty_layer`. History entries carry no time, so identical steps give
//! identical configs. Path lookups in the layers so far (for parent directories of COPY
//! destinations and WORKDIR) take the topmost layer holding the path and do not follow
//! symlinks in it; a destination under a symlinked directory is refused.
//!
//! Needs root: RUN uses namespaces, overlayfs and cgroups. Scratch state (copied files, the
//! RUN containers' bundles) lives under `STORE/build/` and is removed after the build.

use anyhow::{anyhow, bail, Context, Result};
use berth_image::buildcache::{tree_digest, BuildCache, CacheKey, CachedStep};
use berth_image::dockerfile::{self, CommandForm, Instruction, Keyword, Step};
use berth_image::dockerignore::{glob_match, is_glob, DockerIgnore};
use berth_image::{
    layer_from_dir, layer_from_overlay_upper, write_image_with_history, ImageStore,
    LayerDescriptor, Reference, RegistryClient,
};
use berth_node_agent::logfile;
use berth_node_agent::runtime::spec::{self, ImageConfig, SpecInput};
use berth_node_agent::runtime::{ContainerStatus, Runtime, StartRequest};
use berth_proto::k8s_openapi::api::core::v1::{Container, Pod};
use oci_spec::image::{Config, Digest, History, HistoryBuilder};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// What to build.
pub struct BuildRequest {
    /// The build context: COPY and ADD sources are relative to it.
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
}

/// The image built, recorded in the store but not yet tagged.
pub struct Built {
    pub digest: Digest,
    /// Every step came from the cache.
    pub all_cached: bool,
}

/// Parse and run the Dockerfile; the image is written into `store` (`store_dir` is its
/// root, which holds the build cache and the scratch dir).
pub async fn build(
    registry: &RegistryClient,
    store: &ImageStore,
    store_dir: &Path,
    request: BuildRequest,
) -> Result<Built> {
    let text = fs::read_to_string(&request.dockerfile)
        .with_context(|| format!("reading {}", request.dockerfile.display()))?;
    let instructions = dockerfile::parse(&text)?;
    let from_index = instructions
        .iter()
        .position(|i| i.keyword == Keyword::From)
        .expect("the parser requires a FROM");
    let total = instructions.len() - from_index;

    // ARGs before FROM are in scope for FROM only (and as defaults of later ARGs).
    let mut global_args = BTreeMap::new();
    let mut used_args = BTreeSet::new();
    for instruction in &instructions[..from_index] {
        if let Step::Arg { name, default } = instruction.resolve(&global_args)? {
            if let Some(value) = arg_value(&name, default, &request.build_args, &mut used_args) {
                global_args.insert(name, value);
            }
        }
    }
    let from = &instructions[from_index];
    let Step::From { image } = from.resolve(&global_args)? else {
        unreachable!("a FROM instruction resolves to Step::From");
    };
    println!("Step 1/{total} : FROM {image}");
    let base = if image == "scratch" {
        BuildState::scratch()
    } else {
        let reference = Reference::parse(&image)
            .map_err(|e| anyhow!("Dockerfile:{}: FROM {image}: {e}", from.line))?;
        let resolved = registry
            .pull(store, &reference, |_| {})
            .await
            .with_context(|| format!("Dockerfile:{}: pulling {image}", from.line))?;
        println!(" ---> {}", resolved.manifest_digest);
        BuildState::from_image(&image, &resolved)?
    };

    let scratch_root = store_dir.join("build");
    fs::create_dir_all(&scratch_root)
        .with_context(|| format!("creating {}", scratch_root.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&scratch_root)
        .with_context(|| format!("creating a scratch dir in {}", scratch_root.display()))?;
    let mut builder = Builder {
        store: store.clone(),
        cache: BuildCache::open(store_dir.join("build-cache.json")),
        context: request.context.clone(),
        ignore: read_dockerignore(&request.context)?,
        scratch: scratch.path().to_path_buf(),
        runtime: None,
        state: base,
        build_args: request.build_args.clone(),
        global_args,
        used_args,
        all_cached: true,
        cmd_from_base: true,
    };
    let steps = instructions[from_index + 1..].to_vec();
    let built = tokio::task::spawn_blocking(move || -> Result<Built> {
        for (n, instruction) in steps.iter().enumerate() {
            builder.step(n + 2, total, instruction)?;
        }
        let unused: Vec<&String> = builder
            .build_args
            .keys()
            .filter(|k| !builder.used_args.contains(*k))
            .collect();
        if !unused.is_empty() {
            eprintln!("warning: build args not declared by an ARG: {unused:?}");
        }
        builder.finish()
    })
    .await?;
    drop(scratch);
    built
}

/// A build arg's value: `--build-arg`, else the ARG's default.
fn arg_value(
    name: &str,
    default: Option<String>,
    build_args: &BTreeMap<String, String>,
    used: &mut BTreeSet<String>,
) -> Option<String> {
    match build_args.get(name) {
        Some(value) => {
            used.insert(name.to_owned());
            Some(value.clone())
        }
        None => default,
    }
}

fn read_dockerignore(context: &Path) -> Result<DockerIgnore> {
    let path = context.join(".dockerignore");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(DockerIgnore::parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The image so far.
struct BuildState {
    key: CacheKey,
    layers: Vec<LayerDescriptor>,
    config: Config,
    history: Vec<History>,
    /// ARG values in scope (for substitution and RUN's environment; not in the image).
    args: BTreeMap<String, String>,
}

impl BuildState {
    fn scratch() -> BuildState {
        BuildState {
            key: CacheKey::base(None),
            layers: Vec::new(),
            config: Config::default(),
            history: Vec::new(),
            args: BTreeMap::new(),
        }
    }

    fn from_image(name: &str, image: &berth_image::ResolvedImage) -> Result<BuildState> {
        let diff_ids = image.config.rootfs().diff_ids();
        if diff_ids.len() != image.layers.len() {
            bail!(
                "image {name}: its config lists {} layers, its manifest {}",
                diff_ids.len(),
                image.layers.len()
            );
        }
        let layers = image
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(descriptor, diff_id)| {
                Ok(LayerDescriptor {
                    descriptor: descriptor.clone(),
                    diff_id: berth_image::store::parse_digest(diff_id)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // History must have one non-empty entry per layer; a base without one gets its own.
        let mut history = image.config.history().clone().unwrap_or_default();
        let with_layers = history
            .iter()
            .filter(|h| !h.empty_layer().unwrap_or(false))
            .count();
        if with_layers != layers.len() {
            history = layers
                .iter()
                .map(|_| history_entry(&format!("FROM {name}"), false))
                .collect();
        }
        Ok(BuildState {
            key: CacheKey::base(Some(&image.manifest_digest)),
            layers,
            config: image.config.config().clone().unwrap_or_default(),
            history,
            args: BTreeMap::new(),
        })
    }

    /// ENV values, over ARG values: what `$VAR` means in an instruction.
    fn vars(&self) -> BTreeMap<String, String> {
        let mut vars = self.args.clone();
        vars.extend(env_pairs(self.config.env().as_deref().unwrap_or_default()));
        vars
    }

    fn working_dir(&self) -> PathBuf {
        PathBuf::from(
            self.config
                .working_dir()
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "/".into()),
        )
    }
}

fn env_pairs(env: &[String]) -> impl Iterator<Item = (String, String)> + '_ {
    env.iter().map(|entry| match entry.split_once('=') {
        Some((k, v)) => (k.to_owned(), v.to_owned()),
        None => (entry.clone(), String::new()),
    })
}

fn history_entry(created_by: &str, empty_layer: bool) -> History {
    let mut builder = HistoryBuilder::default().created_by(created_by);
    if empty_layer {
        builder = builder.empty_layer(true);
    }
    builder.build().expect("a history entry builds")
}

struct Builder {
    store: ImageStore,
    cache: BuildCache,
    context: PathBuf,
    ignore: DockerIgnore,
    scratch: PathBuf,
    runtime: Option<Runtime>,
    state: BuildState,
    build_args: BTreeMap<String, String>,
    global_args: BTreeMap<String, String>,
    used_args: BTreeSet<String>,
    all_cached: bool,
    /// CMD still comes from the base image (ENTRYPOINT then resets it, as in Docker).
    cmd_from_base: bool,
}

/// What a step did to the filesystem.
enum Outcome {
    ConfigOnly,
    Layer(Option<Box<LayerDescriptor>>),
}

impl Builder {
    fn step(&mut self, number: usize, total: usize, instruction: &Instruction) -> Result<()> {
        let line = instruction.line;
        let step = instruction.resolve(&self.state.vars())?;
        let text = step.describe();
        println!("Step {number}/{total} : {text}");
        let _ = std::io::stdout().flush();
        let outcome = match &step {
            Step::From { .. } => unreachable!("the parser allows one FROM"),
            Step::Arg { name, default } => {
                let default = default
                    .clone()
                    .or_else(|| self.global_args.get(name).cloned());
                let value = arg_value(name, default, &self.build_args, &mut self.used_args);
                // The value is part of the key: a changed build arg invalidates what follows.
                let described = format!("ARG {name}={}", value.as_deref().unwrap_or("<unset>"));
                self.state.key = self.state.key.child(&described, None);
                match value {
                    Some(value) => self.state.args.insert(name.clone(), value),
                    None => self.state.args.remove(name),
                };
                return Ok(());
            }
            Step::Env(pairs) => {
                let mut env: Vec<(String, String)> =
                    env_pairs(self.state.config.env().as_deref().unwrap_or_default()).collect();
                for (key, value) in pairs {
                    env.retain(|(k, _)| k != key);
                    env.push((key.clone(), value.clone()));
                }
                let env = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                self.state.config.set_env(Some(env));
                Outcome::ConfigOnly
            }
            Step::User(user) => {
                self.state.config.set_user(Some(user.clone()));
                Outcome::ConfigOnly
            }
            Step::Cmd(form) => {
                self.state.config.set_cmd(Some(form.argv()));
                self.cmd_from_base = false;
                Outcome::ConfigOnly
            }
            Step::Entrypoint(form) => {
                self.state.config.set_entrypoint(Some(form.argv()));
                if self.cmd_from_base {
                    self.state.config.set_cmd(None);
                }
                Outcome::ConfigOnly
            }
            Step::Expose(ports) => {
                let mut all = self
                    .state
                    .config
                    .exposed_ports()
                    .clone()
                    .unwrap_or_default();
                for port in ports {
                    if !all.contains(port) {
                        all.push(port.clone());
                    }
                }
                self.state.config.set_exposed_ports(Some(all));
                Outcome::ConfigOnly
            }
            Step::Label(pairs) => {
                let mut labels = self.state.config.labels().clone().unwrap_or_default();
                labels.extend(pairs.iter().cloned());
                self.state.config.set_labels(Some(labels));
                Outcome::ConfigOnly
            }
            Step::StopSignal(signal) => {
                self.state.config.set_stop_signal(Some(signal.clone()));
                Outcome::ConfigOnly
            }
            Step::Volume(volumes) => {
                let mut all = self.state.config.volumes().clone().unwrap_or_default();
                all.extend(volumes.iter().cloned());
                self.state.config.set_volumes(Some(all));
                Outcome::ConfigOnly
            }
            Step::Workdir(dir) => {
                let dir = self.state.working_dir().join(dir);
                let dir = normalize(&dir);
                self.state
                    .config
                    .set_working_dir(Some(dir.to_string_lossy().into_owned()));
                let key = self.state.key.child(&text, None);
                let layer = self.cached_or(&key, |b| b.workdir_layer(line, &dir))?;
                self.state.key = key;
                Outcome::Layer(layer.map(Box::new))
            }
            Step::Copy {
                sources,
                dest,
                chown,
                archive,
            } => {
                let tree = self.scratch.join(format!("copy-{line}"));
                self.collect(line, sources, dest, *chown, *archive, &tree)?;
                let digest = tree_digest(&tree)?;
                let key = self.state.key.child(&text, Some(&digest));
                let layer = self.cached_or(&key, |b| {
                    Ok(Some(layer_from_dir(b.store.content(), &tree)?))
                })?;
                let _ = fs::remove_dir_all(&tree);
                self.state.key = key;
                Outcome::Layer(layer.map(Box::new))
            }
            Step::Run(form) => {
                let key = self.state.key.child(&text, None);
                let layer = self.cached_or(&key, |b| b.run(line, form))?;
                self.state.key = key;
                Outcome::Layer(layer.map(Box::new))
            }
        };
        match outcome {
            Outcome::ConfigOnly => {
                self.state.key = self.state.key.child(&text, None);
                self.state.history.push(history_entry(&text, true));
            }
            Outcome::Layer(layer) => {
                self.state
                    .history
                    .push(history_entry(&text, layer.is_none()));
                self.state.layers.extend(layer.map(|l| *l));
            }
        }
        Ok(())
    }

    /// The cached result of step `key`, or `make`'s (then recorded).
    fn cached_or(
        &mut self,
        key: &CacheKey,
        make: impl FnOnce(&mut Builder) -> Result<Option<LayerDescriptor>>,
    ) -> Result<Option<LayerDescriptor>> {
        if let Some(cached) = self.cache.step(key, &self.store) {
            println!(" ---> CACHED");
            return Ok(match cached {
                CachedStep::Layer(layer) => Some(*layer),
                CachedStep::NoLayer => None,
            });
        }
        self.all_cached = false;
        let layer = make(self)?;
        match &layer {
            Some(layer) => println!(" ---> layer {}", layer.descriptor.digest()),
            None => println!(" ---> no changes"),
        }
        self.cache.record_step(key, layer.as_ref());
        // Saved per step: a later failing step keeps what was built before it.
        self.cache.save()?;
        Ok(layer)
    }

    fn finish(mut self) -> Result<Built> {
        let key = self.state.key.clone();
        if self.all_cached {
            if let Some(digest) = self.cache.image(&key, &self.store) {
                return Ok(Built {
                    digest,
                    all_cached: true,
                });
            }
        }
        let digest = write_image_with_history(
            &self.store,
            self.state.config.clone(),
            &self.state.layers,
            self.state.history.clone(),
        )?;
        self.cache.record_image(&key, &digest);
        self.cache.save()?;
        self.all_cached = false;
        Ok(Built {
            digest,
            all_cached: false,
        })
    }

    /// The unpacked layers so far, topmost first (overlayfs `lowerdir=` order).
    fn lowers(&self) -> Result<Vec<PathBuf>> {
        let mut dirs = self
            .state
            .layers
            .iter()
            .map(|l| {
                self.store
                    .layers()
                    .unpack(self.store.content(), &l.descriptor)
            })
            .collect::<berth_image::Result<Vec<_>>>()?;
        dirs.reverse();
        Ok(dirs)
    }

    /// A layer with `dir` (and its missing parents), or none when it exists already.
    fn workdir_layer(&mut self, line: usize, dir: &Path) -> Result<Option<LayerDescriptor>> {
        let lowers = self.lowers()?;
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        if rel.as_os_str().is_empty() {
            return Ok(None);
        }
        if let Some(meta) = lookup(&lowers, rel) {
            if meta.is_dir() || meta.is_symlink() {
                return Ok(None);
            }
            bail!(
                "Dockerfile:{line}: WORKDIR {}: exists and is not a directory",
                dir.display()
            );
        }
        let tree = self.scratch.join(format!("workdir-{line}"));
        fs::create_dir_all(&tree)?;
        make_parents(&tree, rel, &lowers, line)?;
        let layer = layer_from_dir(self.store.content(), &tree)?;
        let _ = fs::remove_dir_all(&tree);
        Ok(Some(layer))
    }

    /// Copy the sources of a COPY/ADD into `tree` as they will be in the layer.
    fn collect(
        &self,
        line: usize,
        sources: &[String],
        dest: &str,
        chown: Option<(u32, u32)>,
        archive: bool,
        tree: &Path,
    ) -> Result<()> {
        let keyword = if archive { "ADD" } else { "COPY" };
        let fail = |message: String| anyhow!("Dockerfile:{line}: {keyword}: {message}");
        let mut matched = Vec::new();
        for source in sources {
            let clean = normalize(&Path::new("/").join(source));
            let rel = clean
                .strip_prefix("/")
                .expect("normalized paths are absolute");
            if is_glob(source) {
                let before = matched.len();
                walk(&self.context, Path::new(""), &mut |path: &Path| {
                    let text = path.to_string_lossy();
                    if glob_match(&rel.to_string_lossy(), &text) && !self.ignore.is_excluded(&text)
                    {
                        matched.push(path.to_path_buf());
                    }
                })?;
                if matched.len() == before {
                    return Err(fail(format!(
                        "no file in the build context matches {source}"
                    )));
                }
            } else {
                let text = rel.to_string_lossy();
                let path = self.context.join(rel);
                if (!text.is_empty() && self.ignore.is_excluded(&text))
                    || fs::symlink_metadata(&path).is_err()
                {
                    return Err(fail(format!(
                        "{source} is not in the build context (or .dockerignore excludes it)"
                    )));
                }
                matched.push(rel.to_path_buf());
            }
        }
        let dest_path = normalize(&self.state.working_dir().join(dest));
        let into_dir = dest.ends_with('/') || matched.len() > 1 || sources.len() > 1;
        let lowers = self.lowers()?;
        fs::create_dir_all(tree)?;
        let owner = chown.unwrap_or((0, 0));
        for rel in &matched {
            let source = self.context.join(rel);
            let meta = fs::symlink_metadata(&source)
                .with_context(|| format!("stat {}", source.display()))?;
            let target_rel = dest_path
                .strip_prefix("/")
                .unwrap_or(&dest_path)
                .to_path_buf();
            if meta.is_dir() {
                make_parents(tree, &target_rel, &lowers, line)?;
                self.copy_tree(rel, &source, &tree.join(&target_rel), owner)?;
            } else if archive && is_tar(&source)? {
                make_parents(tree, &target_rel, &lowers, line)?;
                extract(&source, &tree.join(&target_rel))
                    .map_err(|e| fail(format!("extracting {}: {e:#}", rel.display())))?;
            } else {
                let file_rel = if into_dir {
                    let name = rel.file_name().ok_or_else(|| fail("no file name".into()))?;
                    target_rel.join(name)
                } else {
                    target_rel
                };
                if let Some(parent) = file_rel.parent() {
                    make_parents(tree, parent, &lowers, line)?;
                }
                copy_entry(&source, &tree.join(&file_rel), &meta, owner)?;
            }
        }
        Ok(())
    }

    /// Copy the directory `source` (context path `rel`) into `target`, skipping what
    /// `.dockerignore` excludes.
    fn copy_tree(&self, rel: &Path, source: &Path, target: &Path, owner: (u32, u32)) -> Result<()> {
        if !target.exists() {
            let meta = fs::symlink_metadata(source)?;
            copy_entry(source, target, &meta, owner)?;
        }
        let mut names: Vec<_> = fs::read_dir(source)
            .with_context(|| format!("listing {}", source.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for name in names {
            let child_rel = rel.join(&name);
            if self.ignore.is_excluded(&child_rel.to_string_lossy()) {
                continue;
            }
            let child = source.join(&name);
            let meta = fs::symlink_metadata(&child)?;
            if meta.is_dir() {
                self.copy_tree(&child_rel, &child, &target.join(&name), owner)?;
            } else {
                copy_entry(&child, &target.join(&name), &meta, owner)?;
            }
        }
        Ok(())
    }

    fn runtime(&mut self) -> Result<Runtime> {
        if let Some(runtime) = &self.runtime {
            return Ok(runtime.clone());
        }
        let shim = std::env::current_exe().context("finding the berth binary (the shim)")?;
        let runtime =
            Runtime::new(self.scratch.join("runtime"), shim)?.with_cgroup_parent("berth-build");
        self.runtime = Some(runtime.clone());
        Ok(runtime)
    }

    /// Run `form` in a container on the layers so far; the layer is what it changed.
    fn run(&mut self, line: usize, form: &CommandForm) -> Result<Option<LayerDescriptor>> {
        let runtime = self.runtime()?;
        let mut lowers = self.lowers()?;
        if lowers.is_empty() {
            let empty = self.scratch.join("empty");
            fs::create_dir_all(&empty)?;
            lowers.push(empty);
        }
        // ARG values are in RUN's environment, under ENV's.
        let env_keys: BTreeSet<String> =
            env_pairs(self.state.config.env().as_deref().unwrap_or_default())
                .map(|(k, _)| k)
                .collect();
        let mut env = self.state.config.env().clone().unwrap_or_default();
        for (k, v) in &self.state.args {
            if !env_keys.contains(k) {
                env.push(format!("{k}={v}"));
            }
        }
        let image = ImageConfig {
            entrypoint: form.argv(),
            cmd: Vec::new(),
            env,
            working_dir: Some(self.state.working_dir().to_string_lossy().into_owned()),
            user: self.state.config.user().clone(),
        };
        let mut pod = Pod::default();
        pod.metadata.name = Some("berth-build".into());
        let container = Container {
            name: "build".into(),
            ..Container::default()
        };
        let spec = spec::build(&SpecInput {
            pod: &pod,
            container: &container,
            image: &image,
            netns: None,
        })
        .map_err(|e| anyhow!("Dockerfile:{line}: RUN: {e}"))?;
        let id = format!("build-{}-{line}", std::process::id());
        let log_path = self.scratch.join(format!("{id}.log"));
        let _removal = Removal {
            runtime: &runtime,
            id: &id,
        };
        let started = runtime.start(StartRequest {
            id: id.clone(),
            spec,
            lowers,
            log_path: log_path.clone(),
            log_max_bytes: u64::MAX / 2,
            log_max_files: 2,
        })?;
        let mut output = LogTail::default();
        let exit_code = match started {
            ContainerStatus::Exited {
                started_at: None,
                message,
                ..
            } => bail!(
                "Dockerfile:{line}: RUN could not start: {}",
                message.unwrap_or_else(|| "unknown reason".into())
            ),
            _ => loop {
                output.print_new(&log_path);
                if let ContainerStatus::Exited { exit_code, .. } = runtime.status(&id)? {
                    break exit_code;
                }
                std::thread::sleep(Duration::from_millis(50));
            },
        };
        output.print_new(&log_path);
        output.finish();
        if exit_code != 0 {
            bail!("Dockerfile:{line}: RUN returned a non-zero code: {exit_code}");
        }
        let upper = runtime.bundle(&id).join("upper");
        let changed = fs::read_dir(&upper)
            .with_context(|| format!("listing {}", upper.display()))?
            .next()
            .is_some();
        if !changed {
            return Ok(None);
        }
        Ok(Some(layer_from_overlay_upper(
            self.store.content(),
            &upper,
        )?))
    }
}

/// Removes a RUN container (unmounting its rootfs) when the step ends, also on error.
struct Removal<'a> {
    runtime: &'a Runtime,
    id: &'a str,
}

impl Drop for Removal<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.runtime.remove(self.id) {
            eprintln!("warning: removing build container {}: {e}", self.id);
        }
    }
}

/// Prints a RUN container's output from its CRI log file as it grows.
#[derive(Default)]
struct LogTail {
    offset: u64,
    pending: Vec<u8>,
    open_line: bool,
}

impl LogTail {
    fn print_new(&mut self, path: &Path) {
        let Ok(mut file) = fs::File::open(path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut fresh = Vec::new();
        let Ok(n) = file.read_to_end(&mut fresh) else {
            return;
        };
        self.offset += n as u64;
        self.pending.extend_from_slice(&fresh);
        let mut stdout = std::io::stdout().lock();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let record: Vec<u8> = self.pending.drain(..=end).collect();
            if let Some(line) = logfile::parse_line(&record) {
                let _ = stdout.write_all(&line.content);
                if !line.partial {
                    let _ = stdout.write_all(b"\n");
                }
                self.open_line = line.partial;
            }
        }
        let _ = stdout.flush();
    }

    fn finish(&self) {
        if self.open_line {
            println!();
        }
    }
}

/// `path` with `.` and `..` applied (never above `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The metadata of `rel` in the topmost layer that has it; `None` if no layer has it or the
/// topmost one deleted it (a whiteout). Opaque directories are not considered.
fn lookup(lowers: &[PathBuf], rel: &Path) -> Option<fs::Metadata> {
    for lower in lowers {
        if let Ok(meta) = fs::symlink_metadata(lower.join(rel)) {
            let whiteout = meta.file_type().is_char_device() && meta.rdev() == 0;
            return (!whiteout).then_some(meta);
        }
    }
    None
}

/// Create `rel` and its parents under `tree`: a directory the layers so far have keeps its
/// mode and owner (the layer must not change them), a new one is 0755 root.
fn make_parents(tree: &Path, rel: &Path, lowers: &[PathBuf], line: usize) -> Result<()> {
    let mut prefix = PathBuf::new();
    for component in rel.components() {
        prefix.push(component);
        let path = tree.join(&prefix);
        if path.exists() {
            continue;
        }
        let (mode, uid, gid) = match lookup(lowers, &prefix) {
            Some(meta) if meta.is_dir() => (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            Some(meta) if meta.is_symlink() => bail!(
                "Dockerfile:{line}: /{} is a symbolic link in the image: use the path it points to",
                prefix.display()
            ),
            Some(_) => bail!(
                "Dockerfile:{line}: /{} exists in the image and is not a directory",
                prefix.display()
            ),
            None => (0o755, 0, 0),
        };
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Copy one file, symlink or (empty) directory, owned by `owner`.
fn copy_entry(source: &Path, target: &Path, meta: &fs::Metadata, owner: (u32, u32)) -> Result<()> {
    let kind = meta.file_type();
    if target.symlink_metadata().is_ok() && !kind.is_dir() {
        fs::remove_file(target).with_context(|| format!("replacing {}", target.display()))?;
    }
    if kind.is_dir() {
        fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    } else if kind.is_symlink() {
        let link = fs::read_link(source)?;
        std::os::unix::fs::symlink(&link, target)
            .with_context(|| format!("creating {}", target.display()))?;
    } else if kind.is_file() {
        fs::copy(source, target)
            .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    } else {
        bail!(
            "{}: only files, directories and symlinks can be copied",
            source.display()
        );
    }
    std::os::unix::fs::lchown(target, Some(owner.0), Some(owner.1))?;
    if !kind.is_symlink() {
        fs::set_permissions(target, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    Ok(())
}

/// Visit every path under `root/rel` (relative to `root`), parents before children.
fn walk(root: &Path, rel: &Path, visit: &mut dyn FnMut(&Path)) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = rel.join(&name);
        visit(&path);
        if fs::symlink_metadata(root.join(&path)).is_ok_and(|m| m.is_dir()) {
            walk(root, &path, visit)?;
        }
    }
    Ok(())
}

/// Whether `path` is a tar archive, plain or gzip-compressed (what ADD extracts).
fn is_tar(path: &Path) -> Result<bool> {
    if !fs::metadata(path)?.is_file() {
        return Ok(false);
    }
    let mut head = vec![0u8; 512];
    let n = read_up_to(&mut fs::File::open(path)?, &mut head)?;
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        let mut inner = vec![0u8; 512];
        let mut gz = flate2_reader(path)?;
        let n = read_up_to(&mut gz, &mut inner).unwrap_or(0);
        return Ok(n >= 262 && &inner[257..262] == b"ustar");
    }
    Ok(n >= 262 && &head[257..262] == b"ustar")
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn flate2_reader(path: &Path) -> Result<Box<dyn Read>> {
    Ok(Box::new(flate2::read::GzDecoder::new(fs::File::open(
        path,
    )?)))
}

/// Extract the tar (or tar.gz) `archive` into `dir`, keeping modes and owners.
fn extract(archive: &Path, dir: &Path) -> Result<()> {
    let mut head = [0u8; 2];
    let n = read_up_to(&mut fs::File::open(archive)?, &mut head)?;
    let reader: Box<dyn Read> = if n == 2 && head == [0x1f, 0x8b] {
        flate2_reader(archive)?
    } else {
        Box::new(fs::File::open(archive)?)
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_overwrite(true);
    fs::create_dir_all(dir)?;
    tar.unpack(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_under_root() {
        assert_eq!(normalize(Path::new("/app/./x/../y")), Path::new("/app/y"));
        assert_eq!(normalize(Path::new("/../../etc")), Path::new("/etc"));
        assert_eq!(normalize(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn tars_are_recognised_plain_and_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o640);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, "d/f", &b"hi"[..]).unwrap();
        let plain = builder.into_inner().unwrap();
        fs::write(dir.path().join("a.tar"), &plain).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        fs::write(dir.path().join("a.tgz"), gz.finish().unwrap()).unwrap();
        fs::write(dir.path().join("text"), "not a tar").unwrap();
        assert!(is_tar(&dir.path().join("a.tar")).unwrap());
        assert!(is_tar(&dir.path().join("a.tgz")).unwrap());
        assert!(!is_tar(&dir.path().join("text")).unwrap());
        extract(&dir.path().join("a.tgz"), &dir.path().join("out")).unwrap();
        assert_eq!(fs::read(dir.path().join("out/d/f")).unwrap(), b"hi");
        let mode = fs::metadata(dir.path().join("out/d/f")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
