//! `berth image build|load|ls|inspect|rm|tag|push|pull`: images in the cluster registry (served by
//! every control-plane member on its API address, so `--server` finds it) and in the local
//! image store (`--store`).

use crate::client;
use anyhow::{bail, Context, Result};
use berth_image::{ImageError, ImageStore, Progress, Reference, RegistryClient, MAX_DOCUMENT_SIZE};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The local image store. Default: $BERTH_IMAGE_STORE, then $XDG_DATA_HOME/berth/images
    /// (~/.local/share/berth/images).
    #[arg(long, global = true, env = "BERTH_IMAGE_STORE")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Import an image archive (OCI image layout or `docker save` tar) into the local store
    /// and push every image in it to the cluster registry under its names.
    Load {
        /// The archive.
        #[arg(short, long)]
        input: PathBuf,
    },
    /// List the images in the cluster registry.
    Ls,
    /// Print an image's digest, manifest and config as JSON.
    Inspect { name: String },
    /// Remove NAME[:TAG] (the tag only) or NAME@sha256:... (the manifest and its tags) from
    /// the cluster registry.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Give an image of the cluster registry another name.
    Tag { source: String, target: String },
    /// Push an image from the local store to the cluster registry.
    Push { name: String },
    /// Pull an image from the cluster registry into the local store.
    Pull { name: String },
    /// Build an image from a Dockerfile (see `crate::build` for what is supported), tag it
    /// in the local store and push it to the cluster registry. Needs root (RUN steps run in
    /// containers).
    Build {
        /// The image name, NAME[:TAG].
        #[arg(short = 't', long = "tag")]
        tag: String,
        /// The Dockerfile. Default: DIR/Dockerfile.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// A build argument, K=V (repeatable).
        #[arg(long = "build-arg", value_name = "K=V")]
        build_args: Vec<String>,
        /// Keep the image in the local store only.
        #[arg(long)]
        no_push: bool,
        /// The build context.
        dir: PathBuf,
    },
    /// Package berth itself (its binary and the shared libraries it needs) as the demo
    /// image, whose entrypoint is `berth demo-server` on port 8080, and push it.
    Demo {
        #[arg(default_value = "demo:latest")]
        name: String,
    },
}

pub async fn run(server: Option<String>, args: Args) -> Result<ExitCode> {
    let registry = RegistryClient::new(
        berth_proto::transport::http_client(),
        client::server_addresses(server)?,
    );
    let store_dir = args
        .store
        .unwrap_or_else(|| client::data_home().join("images"));
    match args.action {
        Action::Build {
            tag,
            file,
            build_args,
            no_push,
            dir,
        } => build(&registry, store_dir, tag, file, build_args, no_push, dir).await,
        Action::Load { input } => load(&registry, store_dir, input).await,
        Action::Ls => list(&registry).await,
        Action::Inspect { name } => inspect(&registry, &name).await,
        Action::Rm { names } => remove(&registry, &names).await,
        Action::Tag { source, target } => {
            let (source, target) = (parse(&source)?, parse(&target)?);
            let digest = registry.tag(&source, &target).await?;
            println!("Tagged: {} ({digest})", short_name(&target));
            Ok(ExitCode::SUCCESS)
        }
        Action::Push { name } => {
            let reference = parse(&name)?;
            let store = open_store(store_dir).await?;
            let digest = push(&registry, &store, &reference).await?;
            println!("Pushed: {} ({digest})", short_name(&reference));
            Ok(ExitCode::SUCCESS)
        }
        Action::Demo { name } => {
            let (reference, digest) = push_demo(&registry, store_dir, &name).await?;
            println!("Pushed: {} ({digest})", short_name(&reference));
            Ok(ExitCode::SUCCESS)
        }
        Action::Pull { name } => {
            let reference = parse(&name)?;
            let store = open_store(store_dir).await?;
            let mut line = ProgressLine::new(format!("pulling {}", short_name(&reference)));
            let image = registry.pull(&store, &reference, |p| line.update(p)).await;
            line.finish();
            let image = image.with_context(|| format!("pulling {name}"))?;
            println!("Pulled: {} ({})", short_name(&reference), image.top_digest);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn load(registry: &RegistryClient, store_dir: PathBuf, input: PathBuf) -> Result<ExitCode> {
    let store = open_store(store_dir).await?;
    let imported = {
        let (store, archive) = (store.clone(), input.clone());
        tokio::task::spawn_blocking(move || store.import_archive(&archive))
            .await?
            .with_context(|| format!("loading {}", input.display()))?
    };
    let mut pushed = 0;
    for image in &imported {
        if image.tags.is_empty() {
            eprintln!(
                "warning: image {} in {} has no name and was not pushed: give it one in the archive",
                image.digest,
                input.display()
            );
        }
        for reference in &image.tags {
            let digest = push(registry, &store, reference).await?;
            println!("Loaded image: {} ({digest})", short_name(reference));
            pushed += 1;
        }
    }
    if pushed == 0 {
        bail!("{} holds no named image", input.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn build(
    registry: &RegistryClient,
    store_dir: PathBuf,
    tag: String,
    file: Option<PathBuf>,
    build_args: Vec<String>,
    no_push: bool,
    context: PathBuf,
) -> Result<ExitCode> {
    let reference = parse(&tag)?;
    let build_args = build_args
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            // Docker's `--build-arg K`: the value from the environment.
            None => std::env::var(arg)
                .map(|v| (arg.clone(), v))
                .with_context(|| format!("--build-arg {arg}: no =VALUE and no such env var")),
        })
        .collect::<Result<_>>()?;
    let store = open_store(store_dir.clone()).await?;
    let request = crate::build::BuildRequest {
        dockerfile: file.unwrap_or_else(|| context.join("Dockerfile")),
        context,
        build_args,
    };
    let built = crate::build::build(registry, &store, &store_dir, request).await?;
    {
        let (store, reference, digest) = (store.clone(), reference.clone(), built.digest.clone());
        tokio::task::spawn_blocking(move || store.tag(&reference, &digest)).await??;
    }
    let cached = if built.all_cached {
        " (all steps cached)"
    } else {
        ""
    };
    println!("Successfully built {}{cached}", built.digest);
    println!("Successfully tagged {}", short_name(&reference));
    if !no_push {
        let digest = push(registry, &store, &reference).await?;
        println!("Pushed: {} ({digest})", short_name(&reference));
    }
    Ok(ExitCode::SUCCESS)
}

/// Packages berth itself as the demo image `name` in the local store and pushes it; returns
/// the image and its digest.
pub async fn push_demo(
    registry: &RegistryClient,
    store_dir: PathBuf,
    name: &str,
) -> Result<(Reference, String)> {
    let reference = parse(name)?;
    let store = open_store(store_dir).await?;
    let local = reference.clone();
    let made = store.clone();
    tokio::task::spawn_blocking(move || crate::demo::write_image(&made, &local)).await??;
    let digest = push(registry, &store, &reference).await?;
    Ok((reference, digest))
}

async fn push(
    registry: &RegistryClient,
    store: &ImageStore,
    reference: &Reference,
) -> Result<String> {
    let mut line = ProgressLine::new(format!("pushing {}", short_name(reference)));
    let digest = registry
        .push(store, reference, reference, |p| line.update(p))
        .await;
    line.finish();
    Ok(digest
        .with_context(|| format!("pushing {}", short_name(reference)))?
        .to_string())
}

async fn list(registry: &RegistryClient) -> Result<ExitCode> {
    let mut repositories = registry.catalog().await?;
    repositories.sort();
    let mut rows = vec![["REPOSITORY", "TAG", "DIGEST", "SIZE"]
        .map(String::from)
        .to_vec()];
    let mut failed = false;
    for repository in &repositories {
        let mut tags = match registry.tags(repository).await {
            Ok(tags) => tags,
            // A repository whose last tag went while listing.
            Err(ImageError::Registry { code, .. }) if code == "NAME_UNKNOWN" => continue,
            Err(error) => {
                failed = true;
                eprintln!("error: {error}");
                continue;
            }
        };
        tags.sort();
        for tag in tags {
            match image_row(registry, repository, &tag).await {
                Ok(row) => rows.push(row),
                Err(error) => {
                    failed = true;
                    eprintln!("error: {repository}:{tag}: {error:#}");
                }
            }
        }
    }
    if rows.len() == 1 {
        eprintln!("No images in the cluster registry.");
    } else {
        print!("{}", crate::output::columns(&rows));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// REPOSITORY, TAG, DIGEST (short), SIZE (config and layers, compressed, of the host
/// platform's manifest).
async fn image_row(registry: &RegistryClient, repository: &str, tag: &str) -> Result<Vec<String>> {
    let top = registry.manifest_at(repository, tag).await?;
    let platform = registry.platform_manifest(repository, &top).await?;
    let manifest: serde_json::Value = serde_json::from_slice(&platform.bytes)?;
    let size_of = |d: &serde_json::Value| d["size"].as_u64().unwrap_or(0);
    let size = size_of(&manifest["config"])
        + manifest["layers"]
            .as_array()
            .map(|layers| layers.iter().map(size_of).sum())
            .unwrap_or(0);
    let hex = top.digest.digest();
    Ok(vec![
        repository.to_owned(),
        tag.to_owned(),
        hex[..12.min(hex.len())].to_owned(),
        human_size(size),
    ])
}

async fn inspect(registry: &RegistryClient, name: &str) -> Result<ExitCode> {
    let reference = parse(name)?;
    let repository = reference.cluster_repository();
    let top = registry.manifest(&reference).await?;
    let platform = registry.platform_manifest(&repository, &top).await?;
    let manifest: serde_json::Value = serde_json::from_slice(&platform.bytes)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .context("the manifest names no config")?;
    let config_digest = berth_image::store::parse_digest(config_digest)?;
    let config = registry
        .read_blob(&repository, &config_digest, MAX_DOCUMENT_SIZE)
        .await?;
    let mut out = serde_json::json!({
        "name": short_name(&reference),
        "digest": top.digest.to_string(),
        "mediaType": top.media_type,
        "manifest": serde_json::from_slice::<serde_json::Value>(&top.bytes)?,
    });
    if platform.digest != top.digest {
        out["platformManifest"] = serde_json::json!({
            "digest": platform.digest.to_string(),
            "mediaType": platform.media_type,
            "manifest": manifest,
        });
    }
    out["config"] = serde_json::from_slice(&config)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

async fn remove(registry: &RegistryClient, names: &[String]) -> Result<ExitCode> {
    let mut failed = false;
    for name in names {
        let result = match parse(name) {
            Ok(reference) => registry.delete(&reference).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => println!("Deleted: {name}"),
            Err(error) => {
                failed = true;
                eprintln!("error: {error:#}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn parse(name: &str) -> Result<Reference> {
    Ok(Reference::parse(name)?)
}

async fn open_store(dir: PathBuf) -> Result<ImageStore> {
    tokio::task::spawn_blocking(move || {
        ImageStore::open(&dir).with_context(|| format!("opening the image store {}", dir.display()))
    })
    .await?
}

/// `repository:tag` as the cluster registry names it (what `berth image ls` shows).
fn short_name(reference: &Reference) -> String {
    match &reference.digest {
        Some(digest) => format!("{}@{digest}", reference.cluster_repository()),
        None => format!("{}:{}", reference.cluster_repository(), reference.tag),
    }
}

/// Bytes the way image tools show them: 1000-based, three significant digits.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else if value < 10.0 {
        format!("{value:.2}{}", UNITS[unit])
    } else if value < 100.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// Transfer progress on stderr: one line redrawn in place on a terminal, a line per finished
/// blob otherwise (logs stay readable).
struct ProgressLine {
    label: String,
    terminal: bool,
    drawn: Option<Instant>,
    blobs_done: usize,
}

impl ProgressLine {
    fn new(label: String) -> Self {
        Self {
            label,
            terminal: std::io::stderr().is_terminal(),
            drawn: None,
            blobs_done: 0,
        }
    }

    fn update(&mut self, p: Progress) {
        if p.blobs == 0 {
            return; // nothing to transfer: the destination has every blob
        }
        let blob_finished = p.blobs_done != self.blobs_done;
        self.blobs_done = p.blobs_done;
        let text = format!(
            "{}: {}/{} blobs, {} / {}",
            self.label,
            p.blobs_done,
            p.blobs,
            human_size(p.bytes_done),
            human_size(p.bytes)
        );
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let due = self
                .drawn
                .is_none_or(|at| at.elapsed() >= Duration::from_millis(100));
            if due || blob_finished {
                let _ = write!(stderr, "\r{text}\x1b[K");
                let _ = stderr.flush();
                self.drawn = Some(Instant::now());
            }
        } else if blob_finished || self.drawn.is_none() {
            let _ = writeln!(stderr, "{text}");
            self.drawn = Some(Instant::now());
        }
    }

    fn finish(self) {
        if self.terminal && self.drawn.is_some() {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234), "1.23kB");
        assert_eq!(human_size(45_600_000), "45.6MB");
        assert_eq!(human_size(123_000_000_000), "123GB");
        assert_eq!(
            short_name(&Reference::parse("busybox").unwrap()),
            "busybox:latest"
        );
        assert_eq!(
            short_name(&Reference::parse("127.0.0.1:7443/team/app:v1").unwrap()),
            "team/app:v1"
        );
    }
}
