//! `berth image build` against a one-member control plane (in a network namespace of its
//! own): busybox is pushed as the base, a Dockerfile with FROM, COPY, WORKDIR, ENV, RUN and
//! CMD builds and pushes; the pulled image has the config and the RUN's output in its last
//! layer; a rebuild takes every step from the cache and gives the same digest with no new
//! blob; a failing RUN and an unsupported instruction name their line. Needs root (network
//! namespaces, and RUN's containers) and busybox-static.

use berth_e2e::{isolate_network, Server, TestEnv};
use berth_image::{layer_from_dir, write_image, ImageStore, Reference, RegistryClient};
use std::fs;
use std::path::Path;

fn berth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

fn blob_count(store: &Path) -> usize {
    fs::read_dir(store.join("blobs/sha256")).unwrap().count()
}

#[test]
fn build_push_and_rebuild_from_cache() {
    isolate_network();
    let env = TestEnv::new();
    let server = Server::start(berth(), &env, &["--init", "--listen", "127.0.0.1:7443"]);
    let work = tempfile::tempdir().unwrap();

    // The base: busybox, pushed as `busybox:latest`.
    let rootfs = berth_e2e::rootfs::busybox(work.path());
    let base_dir = work.path().join("base-store");
    let base = ImageStore::open(&base_dir).unwrap();
    let layer = layer_from_dir(base.content(), &rootfs).unwrap();
    let mut config = oci_spec::image::Config::default();
    config.set_cmd(Some(vec!["sh".into()]));
    config.set_env(Some(vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()]));
    let digest = write_image(&base, config, &[layer]).unwrap();
    base.tag(&Reference::parse("busybox").unwrap(), &digest)
        .unwrap();
    let base_store = base_dir.to_str().unwrap();
    env.run(
        berth(),
        &["image", "push", "--store", base_store, "busybox"],
    )
    .ok();

    let context = work.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("hello.txt"), "hello\n").unwrap();
    fs::write(context.join("secret.txt"), "secret\n").unwrap();
    fs::write(context.join(".dockerignore"), "secret.txt\n").unwrap();
    fs::write(
        context.join("Dockerfile"),
        "FROM busybox\n\
         COPY hello.txt /app/\n\
         WORKDIR /app\n\
         ENV GREETING=hi\n\
         # the output names the greeting and the file\n\
         RUN echo $GREETING > out.txt && \\\n    cat hello.txt >> out.txt && echo built\n\
         CMD [\"cat\", \"/app/out.txt\"]\n",
    )
    .unwrap();
    let store_dir = work.path().join("store");
    let store = store_dir.to_str().unwrap();
    let ctx = context.to_str().unwrap();

    let first = env
        .run(
            berth(),
            &["image", "build", "-t", "app:v1", "--store", store, ctx],
        )
        .ok()
        .stdout();
    assert!(first.contains("Step 5/6 : RUN echo $GREETING"), "{first}");
    assert!(
        first.contains("\nbuilt\n"),
        "the RUN output is shown: {first}"
    );
    assert!(first.contains("Pushed: app:v1 (sha256:"), "{first}");
    let built_line = first
        .lines()
        .find(|l| l.starts_with("Successfully built "))
        .expect("a digest line")
        .to_owned();
    let blobs = blob_count(&store_dir);

    // The pushed image, pulled into another store.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pulled_store = ImageStore::open(work.path().join("pulled")).unwrap();
    let registry =
        RegistryClient::new(berth_proto::transport::http_client(), [server.addr.clone()]);
    let image = runtime
        .block_on(registry.pull(&pulled_store, &Reference::parse("app:v1").unwrap(), |_| {}))
        .unwrap();
    let process = image.config.config().clone().unwrap();
    assert_eq!(process.cmd().clone().unwrap(), ["cat", "/app/out.txt"]);
    assert_eq!(process.working_dir().as_deref(), Some("/app"));
    assert!(process
        .env()
        .clone()
        .unwrap()
        .contains(&"GREETING=hi".to_owned()));
    // busybox, COPY, RUN: WORKDIR /app made no layer (COPY had made the directory).
    assert_eq!(image.layers.len(), 3);
    let history = image.config.history().clone().unwrap();
    assert_eq!(history.len(), 6, "{history:?}");
    let dirs = pulled_store.layer_dirs(&image).unwrap();
    assert_eq!(
        fs::read_to_string(dirs[0].join("app/out.txt")).unwrap(),
        "hi\nhello\n"
    );
    assert_eq!(
        fs::read_to_string(dirs[1].join("app/hello.txt")).unwrap(),
        "hello\n"
    );
    assert!(!dirs[1].join("app/secret.txt").exists());

    // Unchanged: every step from the cache, the same image, no new blob.
    let again = env
        .run(
            berth(),
            &["image", "build", "-t", "app:v1", "--store", store, ctx],
        )
        .ok()
        .stdout();
    assert_eq!(again.matches(" ---> CACHED").count(), 3, "{again}");
    assert!(!again.contains("---> layer"), "{again}");
    assert!(
        !again.contains("\nbuilt\n"),
        "RUN did not run again: {again}"
    );
    assert!(again.contains(&built_line), "same digest: {again}");
    assert_eq!(blob_count(&store_dir), blobs);
    assert!(
        fs::read_dir(store_dir.join("build"))
            .unwrap()
            .next()
            .is_none(),
        "the scratch dir is removed"
    );

    // A changed file: COPY and what follows are rebuilt.
    fs::write(context.join("hello.txt"), "hello again\n").unwrap();
    let changed = env
        .run(
            berth(),
            &[
                "image",
                "build",
                "-t",
                "app:v2",
                "--no-push",
                "--store",
                store,
                ctx,
            ],
        )
        .ok()
        .stdout();
    assert_eq!(changed.matches(" ---> CACHED").count(), 0, "{changed}");
    assert!(!changed.contains("Pushed"), "{changed}");
}

#[test]
fn failures_name_the_dockerfile_line() {
    isolate_network();
    let env = TestEnv::new();
    let _server = Server::start(berth(), &env, &["--init", "--listen", "127.0.0.1:7443"]);
    let work = tempfile::tempdir().unwrap();
    let rootfs = berth_e2e::rootfs::busybox(work.path());
    let base_dir = work.path().join("base-store");
    let base = ImageStore::open(&base_dir).unwrap();
    let layer = layer_from_dir(base.content(), &rootfs).unwrap();
    let digest = write_image(&base, oci_spec::image::Config::default(), &[layer]).unwrap();
    base.tag(&Reference::parse("busybox").unwrap(), &digest)
        .unwrap();
    env.run(
        berth(),
        &[
            "image",
            "push",
            "--store",
            base_dir.to_str().unwrap(),
            "busybox",
        ],
    )
    .ok();
    let store = work.path().join("store");
    let context = work.path().join("context");
    fs::create_dir_all(&context).unwrap();
    let build = |dockerfile: &str| {
        fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        env.run(
            berth(),
            &[
                "image",
                "build",
                "-t",
                "bad",
                "--store",
                store.to_str().unwrap(),
                context.to_str().unwrap(),
            ],
        )
        .failed()
    };

    let failed = build("FROM busybox\nENV A=1\nRUN echo oops; exit 3\n");
    assert!(failed.stdout().contains("oops"), "{}", failed.stdout());
    assert!(
        failed
            .stderr()
            .contains("Dockerfile:3: RUN returned a non-zero code: 3"),
        "{}",
        failed.stderr()
    );
    let unsupported = build("FROM busybox\n\nHEALTHCHECK CMD true\n");
    assert!(
        unsupported
            .stderr()
            .contains("Dockerfile:3: HEALTHCHECK is not supported"),
        "{}",
        unsupported.stderr()
    );
    let missing = build("FROM busybox\nCOPY nope.txt /\n");
    assert!(
        missing
            .stderr()
            .contains("Dockerfile:2: COPY: nope.txt is not in the build context"),
        "{}",
        missing.stderr()
    );
}
