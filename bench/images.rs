//! Image pull benchmark: pull and unpack of a multi-layer image from berth's registry, through
//! the agent's path (`RegistryClient::pull` into a fresh `ImageStore`, then
//! `ImageStore::layer_dirs`), against `skopeo copy` + `umoci unpack` of the same image from the
//! same registry, interleaved in one run.
//!
//! ```text
//!  once:  generated trees ─▶ layer_from_dir ×5 ─▶ write_image ─▶ RegistryClient::push
//!                                                                   │
//!                                              berth server --init (one member, loopback)
//!                                                                   │
//!  each iteration, the order alternating:                           ▼
//!    berth  RegistryClient::pull (fetch, verify, unpack each layer) ─▶ layer_dirs
//!    peer   skopeo copy docker://ADDR/REPO:TAG oci:FRESH:TAG ─▶ umoci unpack --image FRESH:TAG
//!           └───────────────────── timed, into a fresh directory ─────────────────────┘
//!    then, untimed: remove both destinations, sync(2)
//! ```
//!
//! The image is made here, with no download: files copied from the host's /usr/share,
//! /usr/lib/x86_64-linux-gnu and /usr/bin up to a budget each (sorted walks, so the same host
//! gives the same layers), incompressible data and generated text from a seeded PRNG, and a top
//! layer that deletes a file of the bottom one (a whiteout). The warm-up iterations read every
//! blob once, so both contenders pull with the registry's blobs in the page cache.
//!
//! The unpacked results are checked once (warm-up): berth's layer directories hold every
//! file of every layer, umoci's rootfs every file of the image but the deleted one.
//!
//! Everything runs in a network namespace of the benchmark's own with only loopback (needs
//! root): no packet leaves the machine.
//!
//! Usage: image-bench [--berth PATH] [--runs N] [--warmup N] [--seed N] [--skopeo PATH]
//!                    [--umoci PATH]

use anyhow::{bail, ensure, Context, Result};
use berth_e2e::{isolate_network, Server, TestEnv};
use berth_image::write::{layer_from_dir, write_image, LayerDescriptor};
use berth_image::{ImageStore, LayerStore, Reference, RegistryClient};
use clap::Parser;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use load::percentile;

#[derive(Parser)]
struct Args {
    /// The berth binary (the registry's server).
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// Measured pulls per contender.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Unmeasured pulls per contender first (they warm the page cache and check the result).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seed of the generated files.
    #[arg(long, default_value_t = 5)]
    seed: u64,
    /// The skopeo binary (default: `skopeo` on PATH).
    #[arg(long)]
    skopeo: Option<PathBuf>,
    /// The umoci binary (default: `umoci` on PATH).
    #[arg(long)]
    umoci: Option<PathBuf>,
}

/// The image, as pushed (`REPOSITORY:TAG` in the cluster registry).
const REPOSITORY: &str = "bench/layers";
const TAG: &str = "v1";
/// Where the one-member control plane serves its API and registry (inside the namespace).
const LISTEN: &str = "127.0.0.1:7443";
const MIB: u64 = 1 << 20;

/// Set by SIGINT/SIGTERM: stop after the current iteration, clean up, report what was measured.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// One layer of the generated image, bottom first.
enum LayerSource {
    /// Files of a host directory, copied to the same path, up to a byte budget.
    Host { dir: &'static str, budget: u64 },
    /// Incompressible files (an application's assets) under /opt/app/assets.
    Random { budget: u64 },
    /// The application: generated source-like text under /opt/app/src, its config, and the
    /// deletion of a file of the bottom layer.
    App { files: usize },
}

const LAYERS: [LayerSource; 5] = [
    LayerSource::Host {
        dir: "/usr/share",
        budget: 20 * MIB,
    },
    LayerSource::Host {
        dir: "/usr/lib/x86_64-linux-gnu",
        budget: 36 * MIB,
    },
    LayerSource::Host {
        dir: "/usr/bin",
        budget: 12 * MIB,
    },
    LayerSource::Random { budget: 20 * MIB },
    LayerSource::App { files: 400 },
];

/// splitmix64: deterministic from the seed, so a run can be repeated byte for byte.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Regular files and their bytes in a tree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    files: u64,
    bytes: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

/// Regular files under `dir`, whiteout markers (`.wh.*`, empty) left out.
fn tally(dir: &Path) -> Result<Tally> {
    let mut total = Tally::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tally(&entry.path())?;
        } else if kind.is_file() && !entry.file_name().to_string_lossy().starts_with(".wh.") {
            total.files += 1;
            total.bytes += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Copies `src`'s tree into `dst` in name order: directories, symlinks (as they are) and
/// regular files while they fit in `budget`, each added to `copied`.
fn copy_tree(src: &Path, dst: &Path, budget: &mut u64, copied: &mut Vec<PathBuf>) -> Result<()> {
    // Below this, no file worth having fits: stop walking.
    const FULL: u64 = 64 * 1024;
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("listing {}", src.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if *budget < FULL {
            break;
        }
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let meta = entry.metadata()?;
        let kind = meta.file_type();
        if kind.is_dir() {
            copy_tree(&from, &to, budget, copied)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)
                .with_context(|| format!("linking {}", to.display()))?;
        } else if kind.is_file() && meta.len() <= *budget {
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            *budget -= meta.len();
            copied.push(to);
        }
    }
    Ok(())
}

/// Text that compresses like source code: words from a small vocabulary, in lines.
fn source_text(rng: &mut Rng, bytes: usize) -> String {
    const WORDS: [&str; 24] = [
        "def", "return", "self", "value", "config", "request", "if", "else", "for", "in", "import",
        "from", "class", "None", "True", "items", "result", "error", "log", "node", "pod", "image",
        "layer", "=",
    ];
    let mut text = String::with_capacity(bytes + 64);
    while text.len() < bytes {
        let indent = rng.below(4) as usize * 4;
        text.extend(std::iter::repeat_n(' ', indent));
        for w in 0..3 + rng.below(8) {
            if w > 0 {
                text.push(' ');
            }
            text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            if rng.below(5) == 0 {
                text.push_str(&format!("_{}", rng.below(100)));
            }
        }
        text.push('\n');
    }
    text
}

/// The generated image's layer trees under `dir`, bottom first, and the file of the bottom
/// layer that the top one deletes (relative to the root).
fn make_layer_trees(dir: &Path, seed: u64) -> Result<(Vec<PathBuf>, PathBuf)> {
    let mut rng = Rng(seed);
    let mut trees = Vec::new();
    let mut deleted = None;
    for (i, source) in LAYERS.iter().enumerate() {
        let tree = dir.join(format!("layer{i}"));
        match source {
            LayerSource::Host { dir: host, budget } => {
                let mut left = *budget;
                let mut copied = Vec::new();
                let inside = tree.join(host.trim_start_matches('/'));
                copy_tree(Path::new(host), &inside, &mut left, &mut copied)?;
                ensure!(
                    left < budget / 2,
                    "{host} holds less than half of the {} MiB wanted",
                    budget / MIB
                );
                if deleted.is_none() {
                    // A file from the middle of the bottom layer, as an `apt-get remove` would.
                    let victim = copied.get(copied.len() / 2).context("no file copied")?;
                    deleted = Some(victim.strip_prefix(&tree)?.to_path_buf());
                }
            }
            LayerSource::Random { budget } => {
                let assets = tree.join("opt/app/assets");
                std::fs::create_dir_all(&assets)?;
                let mut left = *budget;
                let mut n = 0;
                while left > 0 {
                    let size = (256 * 1024 + rng.below(3 * MIB)).min(left);
                    let mut data = vec![0; size as usize];
                    rng.fill(&mut data);
                    std::fs::write(assets.join(format!("asset-{n:03}.bin")), &data)?;
                    left -= size;
                    n += 1;
                }
            }
            LayerSource::App { files } => {
                let src = tree.join("opt/app/src");
                std::fs::create_dir_all(&src)?;
                for n in 0..*files {
                    let bytes = 1024 + rng.below(12 * 1024) as usize;
                    std::fs::write(
                        src.join(format!("module_{n:03}.py")),
                        source_text(&mut rng, bytes),
                    )?;
                }
                std::fs::create_dir_all(tree.join("etc/app"))?;
                std::fs::write(tree.join("etc/app/app.conf"), "listen = 0.0.0.0:8080\n")?;
                let deleted = deleted.as_ref().context("no bottom layer to delete from")?;
                let parent = tree.join(deleted.parent().context("a file has a parent")?);
                std::fs::create_dir_all(&parent)?;
                let name = deleted.file_name().context("a file has a name")?;
                std::fs::write(parent.join(format!(".wh.{}", name.to_string_lossy())), b"")?;
            }
        }
        trees.push(tree);
    }
    Ok((trees, deleted.context("no bottom layer")?))
}

/// What the generated image is.
struct ImageFacts {
    layers: Vec<LayerDescriptor>,
    /// Files in each layer tree (what berth's layer directories hold, whiteouts aside).
    per_layer: Vec<Tally>,
    /// Files in the image's root filesystem (every layer, the deleted file gone).
    rootfs: Tally,
    deleted: PathBuf,
}

impl ImageFacts {
    fn compressed(&self) -> u64 {
        self.layers.iter().map(|l| l.descriptor.size()).sum()
    }
}

/// Generates the image into `store_dir` and tags it `REPOSITORY:TAG` there.
fn make_image(work: &Path, store_dir: &Path, seed: u64) -> Result<(ImageStore, ImageFacts)> {
    let (trees, deleted) = make_layer_trees(&work.join("trees"), seed)?;
    let store = ImageStore::open(store_dir)?;
    let mut layers = Vec::new();
    let mut per_layer = Vec::new();
    let mut rootfs = Tally::default();
    for tree in &trees {
        layers.push(layer_from_dir(store.content(), tree)?);
        let files = tally(tree)?;
        per_layer.push(files);
        rootfs += files;
    }
    let gone = std::fs::metadata(trees[0].join(&deleted))?.len();
    rootfs.files -= 1;
    rootfs.bytes -= gone;
    let mut config = oci_spec::image::Config::default();
    config.set_cmd(Some(vec!["/usr/bin/env".into()]));
    let digest = write_image(&store, config, &layers)?;
    store.tag(&reference()?, &digest)?;
    for tree in &trees {
        std::fs::remove_dir_all(tree)?;
    }
    Ok((
        store,
        ImageFacts {
            layers,
            per_layer,
            rootfs,
            deleted,
        },
    ))
}

fn reference() -> Result<Reference> {
    Ok(Reference::parse(&format!("{REPOSITORY}:{TAG}"))?)
}

/// Pushes the image; retried while the new member is still electing itself.
async fn push(store: &ImageStore) -> Result<()> {
    let registry = RegistryClient::new(berth_proto::transport::http_client(), [LISTEN]);
    let reference = reference()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match registry.push(store, &reference, &reference, |_| {}).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("push: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("pushing the image"),
        }
    }
}

/// One measured berth pull.
struct BerthSample {
    /// From opening the fresh store until `layer_dirs` returned.
    total: Duration,
    /// `RegistryClient::pull`: manifest, config, layers fetched 3 at a time, each verified
    /// and unpacked as soon as it is stored.
    pull: Duration,
    /// `ImageStore::layer_dirs` after the pull (the layers are unpacked by then).
    layer_dirs: Duration,
    /// Apart from `total`: the layers unpacked again from the pulled blobs, one after the
    /// other, into a second layer store: the unpacking's share of the work.
    unpack_alone: Duration,
}

/// The agent's path: pull into a fresh store, then the layer directories a container's
/// overlay would stack.
fn berth_pull(
    runtime: &tokio::runtime::Runtime,
    dest: &Path,
    check: Option<&ImageFacts>,
) -> Result<BerthSample> {
    let registry = RegistryClient::new(berth_proto::transport::http_client(), [LISTEN]);
    let reference = reference()?;
    let started = Instant::now();
    let (image, store, pulled) = runtime.block_on(async {
        let store = ImageStore::open(dest)?;
        let image = registry.pull(&store, &reference, |_| {}).await?;
        anyhow::Ok((image, store, started.elapsed()))
    })?;
    let dirs = runtime.block_on(async {
        let (store, image) = (store.clone(), image.clone());
        anyhow::Ok(tokio::task::spawn_blocking(move || store.layer_dirs(&image)).await??)
    })?;
    let total = started.elapsed();

    if let Some(facts) = check {
        // Topmost first: the same order reversed.
        for (dir, want) in dirs.iter().rev().zip(&facts.per_layer) {
            let got = tally(dir)?;
            ensure!(
                got == *want,
                "berth layer {}: {got:?}, want {want:?}",
                dir.display()
            );
        }
        let whiteout = dirs[0].join(&facts.deleted);
        let kind = std::fs::symlink_metadata(&whiteout)
            .with_context(|| format!("berth's whiteout {}", whiteout.display()))?
            .file_type();
        ensure!(
            kind.is_char_device(),
            "{} is no whiteout",
            whiteout.display()
        );
    }

    let again = LayerStore::open(dest.join("again"))?;
    let unpacking = Instant::now();
    for layer in &image.layers {
        again.unpack(store.content(), layer)?;
    }
    Ok(BerthSample {
        total,
        pull: pulled,
        layer_dirs: total - pulled,
        unpack_alone: unpacking.elapsed(),
    })
}

/// One measured skopeo + umoci pull.
struct PeerSample {
    copy: Duration,
    unpack: Duration,
}

/// `skopeo copy` from the registry into a fresh OCI layout, then `umoci unpack` of it into a
/// bundle.
fn peer_pull(
    skopeo: &Path,
    umoci: &Path,
    dest: &Path,
    check: Option<&ImageFacts>,
) -> Result<PeerSample> {
    std::fs::create_dir(dest)?;
    let layout = dest.join("oci");
    let bundle = dest.join("bundle");
    let started = Instant::now();
    run(Command::new(skopeo)
        // The host's signature policy is not under test.
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{LISTEN}/{REPOSITORY}:{TAG}"))
        .arg(format!("oci:{}:{TAG}", layout.display())))?;
    let copy = started.elapsed();
    let unpacking = Instant::now();
    run(Command::new(umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:{TAG}", layout.display()))
        .arg(&bundle))?;
    let unpack = unpacking.elapsed();

    if let Some(facts) = check {
        let rootfs = bundle.join("rootfs");
        let got = tally(&rootfs)?;
        ensure!(
            got == facts.rootfs,
            "umoci rootfs: {got:?}, want {:?}",
            facts.rootfs
        );
        ensure!(
            std::fs::symlink_metadata(rootfs.join(&facts.deleted)).is_err(),
            "umoci kept the deleted {}",
            facts.deleted.display()
        );
    }
    Ok(PeerSample { copy, unpack })
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?}: {}; stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn remove(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// `name` as given, or found on PATH.
fn find_binary(given: Option<&Path>, name: &str) -> Result<PathBuf> {
    if let Some(path) = given {
        ensure!(path.exists(), "{} not found", path.display());
        return Ok(path.to_path_buf());
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .with_context(|| format!("{name} not found: apt-get install {name}"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.runs > 0, "--runs must be at least 1");
    let berth = args.berth.canonicalize().with_context(|| {
        format!(
            "{}: build it with cargo build --release -p berth",
            args.berth.display()
        )
    })?;
    let skopeo = find_binary(args.skopeo.as_deref(), "skopeo")?;
    let umoci = find_binary(args.umoci.as_deref(), "umoci")?;
    // Before any thread: the runtime's workers and every child inherit the namespace.
    isolate_network();
    let handler = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &handler) }?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let env = TestEnv::new();
    let work = env.root.path();
    eprintln!("generating the image (seed {})", args.seed);
    let (store, facts) = make_image(work, &work.join("source-store"), args.seed)?;
    let _server = Server::start_on(
        None,
        &berth,
        &env,
        &work.join("server"),
        &["--init", "--listen", LISTEN],
    );
    runtime.block_on(push(&store))?;
    drop(store);
    remove(&work.join("source-store"))?;

    let mut berth_samples = Vec::new();
    let mut peer_samples = Vec::new();
    for iteration in 0..args.warmup + args.runs {
        if STOP.load(Ordering::SeqCst) {
            eprintln!("interrupted after {iteration} iterations");
            break;
        }
        let measured = iteration >= args.warmup;
        // The first warm-up checks what both unpacked.
        let check = (iteration == 0).then_some(&facts);
        let berth_dest = work.join(format!("berth-{iteration}"));
        let peer_dest = work.join(format!("peer-{iteration}"));
        for turn in 0..2 {
            if (iteration + turn) % 2 == 0 {
                let sample = berth_pull(&runtime, &berth_dest, check)
                    .with_context(|| format!("berth, iteration {iteration}"))?;
                remove(&berth_dest)?;
                eprintln!(
                    "{iteration}: berth {:.0} ms (unpack alone {:.0} ms)",
                    ms(sample.total),
                    ms(sample.unpack_alone)
                );
                if measured {
                    berth_samples.push(sample);
                }
            } else {
                let sample = peer_pull(&skopeo, &umoci, &peer_dest, check)
                    .with_context(|| format!("skopeo + umoci, iteration {iteration}"))?;
                remove(&peer_dest)?;
                eprintln!(
                    "{iteration}: skopeo {:.0} ms + umoci {:.0} ms",
                    ms(sample.copy),
                    ms(sample.unpack)
                );
                if measured {
                    peer_samples.push(sample);
                }
            }
            // Neither contender pays for writing back what the other left dirty.
            nix::unistd::sync();
        }
    }
    report(&args, &facts, &berth_samples, &peer_samples);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn sorted<T>(samples: &[T], f: impl Fn(&T) -> Duration) -> Vec<Duration> {
    let mut values: Vec<Duration> = samples.iter().map(f).collect();
    values.sort();
    values
}

fn report(args: &Args, facts: &ImageFacts, berth: &[BerthSample], peer: &[PeerSample]) {
    println!(
        "image {REPOSITORY}:{TAG}: {} layers, {:.1} MiB compressed, {:.1} MiB in {} files \
         unpacked (root filesystem); {} pulls each after {} warm-up, interleaved, page cache warm",
        facts.layers.len(),
        facts.compressed() as f64 / MIB as f64,
        facts.rootfs.bytes as f64 / MIB as f64,
        facts.rootfs.files,
        berth.len().min(peer.len()),
        args.warmup,
    );
    println!(
        "{:<34} {:>10} {:>8} {:>8}",
        "", "median ms", "p90 ms", "min ms"
    );
    let row = |name: &str, values: Vec<Duration>| {
        if values.is_empty() {
            println!("{name:<34} {:>10}", "-");
            return None;
        }
        println!(
            "{name:<34} {:>10.0} {:>8.0} {:>8.0}",
            ms(percentile(&values, 0.5)),
            ms(percentile(&values, 0.9)),
            ms(values[0]),
        );
        Some((percentile(&values, 0.5), percentile(&values, 0.9)))
    };
    let berth_total = row("berth pull + unpack", sorted(berth, |s| s.total));
    row("  RegistryClient::pull", sorted(berth, |s| s.pull));
    row("  ImageStore::layer_dirs", sorted(berth, |s| s.layer_dirs));
    row(
        "  (unpack alone, measured apart)",
        sorted(berth, |s| s.unpack_alone),
    );
    row("skopeo copy", sorted(peer, |s| s.copy));
    row("umoci unpack", sorted(peer, |s| s.unpack));
    let peer_total = row(
        "skopeo copy + umoci unpack",
        sorted(peer, |s| s.copy + s.unpack),
    );
    if let (Some(b), Some(p)) = (berth_total, peer_total) {
        println!(
            "berth / (skopeo + umoci): {:.2} (medians), {:.2} (p90s)",
            b.0.as_secs_f64() / p.0.as_secs_f64(),
            b.1.as_secs_f64() / p.1.as_secs_f64()
        );
    }
    println!(
        "berth: in-process, a fresh ImageStore per pull; the pull fetches 3 blobs at a time and \
         unpacks each layer into a directory of its own (overlay lowers) as soon as it is \
         stored, fsyncing every blob. \"unpack alone\": the same layers unpacked again, one \
         after the other, from the stored blobs; not part of the total."
    );
    println!(
        "skopeo + umoci: `skopeo copy docker://{LISTEN}/… oci:FRESH` (HTTP, --insecure-policy) \
         then `umoci unpack` into a bundle: the layers applied onto one rootfs, plus umoci's \
         mtree manifest of it. Same registry, same loopback, in a network namespace."
    );
}
