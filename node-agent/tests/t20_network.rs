//! Pod networking against the real kernel: bridge, pod namespaces, veths, addresses, routes,
//! reachability, and what is left after teardown, restarts and crashes.
//!
//! Each test runs on a thread of its own in a new network namespace
//! (`berth_e2e::isolate_network`) and a private mount namespace: nothing it makes is seen by
//! the machine, and whatever a failing test leaves dies with its thread. `/proc/thread-self`,
//! not `/proc/self` (the process's main thread), shows that thread's view.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use berth_e2e::TempDir;
use berth_node_agent::network::{
    host_veth_name, ipam, netns, IpamError, NetworkError, PodNetwork, PodNetworkInfo,
    DEFAULT_BRIDGE,
};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

const POD_A: &str = "0a4f7c2e-1111-4c1a-9d3e-aaaaaaaaaaaa";
const POD_B: &str = "0b5e8d3f-2222-4c1a-9d3e-bbbbbbbbbbbb";
const POD_C: &str = "0c6f9e40-3333-4c1a-9d3e-cccccccccccc";

/// Runs `test` on a thread of its own, in fresh network and mount namespaces, on a
/// current-thread runtime (so no tokio thread is ever outside the test's namespaces).
fn sandboxed<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let outcome = std::thread::spawn(move || {
        berth_e2e::isolate_network();
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        // Mounts made here must not propagate back to the machine's mount namespace.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(test());
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A node's pod network in a temporary state directory; unmounts everything under it when
/// dropped, so the directory can go too, also when the test fails.
struct Node {
    network: Option<PodNetwork>,
    subnet: Ipv4Net,
    dir: TempDir,
}

impl Node {
    async fn start(subnet: &str) -> Node {
        let dir = berth_e2e::TempDir::new().expect("temp dir");
        let subnet: Ipv4Net = subnet.parse().unwrap();
        let mut node = Node {
            network: None,
            subnet,
            dir,
        };
        node.restart().await;
        node
    }

    /// Drops the `PodNetwork` and makes a new one from the same state, as an agent restart does.
    async fn restart(&mut self) {
        self.network = None;
        let network = PodNetwork::new(
            self.dir.path().to_path_buf(),
            self.subnet,
            DEFAULT_BRIDGE.to_string(),
        )
        .expect("PodNetwork::new");
        network.ensure_bridge().await.expect("ensure_bridge");
        self.network = Some(network);
    }

    fn net(&self) -> &PodNetwork {
        self.network.as_ref().expect("started")
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("netns")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let netns_dir = self.netns_dir();
        if let Ok(entries) = std::fs::read_dir(&netns_dir) {
            for entry in entries.flatten() {
                let _ = umount2(&entry.path(), MntFlags::MNT_DETACH);
            }
        }
        let _ = umount2(&netns_dir, MntFlags::MNT_DETACH);
    }
}

/// Links, IPv4 addresses and the default route of one network namespace.
#[derive(Debug)]
struct Observed {
    /// name → (index, up, controller)
    links: BTreeMap<String, (u32, bool, Option<u32>)>,
    /// (interface, address, prefix length)
    addresses: BTreeSet<(String, Ipv4Addr, u8)>,
    default_gateway: Option<Ipv4Addr>,
}

impl Observed {
    fn link_names(&self) -> Vec<&str> {
        self.links.keys().map(String::as_str).collect()
    }

    fn addresses_of(&self, ifname: &str) -> Vec<(Ipv4Addr, u8)> {
        self.addresses
            .iter()
            .filter(|(name, ..)| name == ifname)
            .map(|(_, ip, prefix)| (*ip, *prefix))
            .collect()
    }
}

/// What the calling thread's network namespace holds.
async fn observe_here() -> Observed {
    let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
    tokio::spawn(connection);
    let mut links = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut stream = handle.link().get().execute();
    while let Some(link) = stream.try_next().await.expect("list links") {
        let mut name = String::new();
        let mut controller = None;
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::IfName(n) => name = n.clone(),
                LinkAttribute::Controller(c) => controller = Some(*c),
                _ => {}
            }
        }
        let up = link.header.flags.contains(LinkFlags::Up);
        names.insert(link.header.index, name.clone());
        links.insert(name, (link.header.index, up, controller));
    }
    let mut addresses = BTreeSet::new();
    let mut stream = handle.address().get().execute();
    while let Some(address) = stream.try_next().await.expect("list addresses") {
        if address.header.family != AddressFamily::Inet {
            continue;
        }
        for attribute in &address.attributes {
            if let AddressAttribute::Local(std::net::IpAddr::V4(ip)) = attribute {
                let name = names[&address.header.index].clone();
                addresses.insert((name, *ip, address.header.prefix_len));
            }
        }
    }
    let mut default_gateway = None;
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(route) = stream.try_next().await.expect("list routes") {
        if route.header.table != RouteHeader::RT_TABLE_MAIN
            || route.header.destination_prefix_length != 0
        {
            continue;
        }
        for attribute in &route.attributes {
            if let RouteAttribute::Gateway(RouteAddress::Inet(gateway)) = attribute {
                assert!(default_gateway.is_none(), "two default routes");
                default_gateway = Some(*gateway);
            }
        }
    }
    Observed {
        links,
        addresses,
        default_gateway,
    }
}

/// What the network namespace bound at `netns` holds.
fn observe_in(netns: &Path) -> Observed {
    netns::spawn_in(netns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(observe_here())
    })
    .expect("spawn in netns")
    .join()
    .expect("observer thread")
    .expect("enter netns")
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo")
}

/// A TCP server inside `netns` on `addr` that answers `connections` clients with their own
/// address as it sees it. Returns once it listens.
fn serve(netns: &Path, addr: SocketAddr, connections: usize) -> JoinHandle<std::io::Result<()>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = netns::spawn_in(netns, move || {
        let listener = TcpListener::bind(addr).expect("bind in pod");
        ready_tx.send(()).unwrap();
        for _ in 0..connections {
            let (mut stream, peer) = listener.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).expect("read");
            writeln!(stream, "{} says {} is {}", addr, line.trim(), peer.ip()).expect("write");
        }
    })
    .expect("spawn server");
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server listening");
    server
}

/// Connects to `addr` from the calling thread's namespace and returns the server's answer.
fn hello(addr: SocketAddr, me: &str) -> String {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to pod");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    writeln!(stream, "{me}").unwrap();
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).unwrap();
    answer.trim().to_string()
}

fn hello_from(netns: &Path, addr: SocketAddr, me: &'static str) -> String {
    netns::spawn_in(netns, move || hello(addr, me))
        .expect("spawn client")
        .join()
        .expect("client thread")
        .expect("enter netns")
}

/// Checks the pod's namespace holds exactly lo and eth0, up, with its address and route.
fn assert_pod_namespace(info: &PodNetworkInfo) {
    let pod = observe_in(&info.netns_path);
    assert_eq!(pod.link_names(), ["eth0", "lo"], "{pod:#?}");
    assert!(pod.links.values().all(|(_, up, _)| *up), "{pod:#?}");
    assert_eq!(pod.addresses_of("eth0"), [(info.ip, info.prefix_len)]);
    assert_eq!(pod.addresses_of("lo"), [(Ipv4Addr::LOCALHOST, 8)]);
    assert_eq!(pod.default_gateway, Some(info.gateway), "{pod:#?}");
}

#[test]
fn two_pods_reach_each_other_and_the_node_reaches_them() {
    sandboxed(|| async {
        let node = Node::start("10.244.1.0/24").await;
        let a = node
            .net()
            .setup_pod(POD_A, "default/a")
            .await
            .expect("setup a");
        let b = node
            .net()
            .setup_pod(POD_B, "default/b")
            .await
            .expect("setup b");

        assert_eq!(a.ip, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(b.ip, Ipv4Addr::new(10, 244, 1, 3));
        for info in [&a, &b] {
            assert_eq!(info.gateway, Ipv4Addr::new(10, 244, 1, 1));
            assert_eq!(info.prefix_len, 24);
            assert!(info.host_veth.len() <= 15);
            assert_pod_namespace(info);
        }
        assert_ne!(a.host_veth, b.host_veth);
        let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();
        assert_ne!(
            inode(&a.netns_path),
            inode(&b.netns_path),
            "two pods share a namespace"
        );

        // The node: the bridge holds the gateway address, both host ends hang on it, up.
        let here = observe_here().await;
        let (bridge, bridge_up, _) = here.links[DEFAULT_BRIDGE];
        assert!(bridge_up);
        assert_eq!(here.addresses_of(DEFAULT_BRIDGE), [(a.gateway, 24)]);
        for info in [&a, &b] {
            let (_, up, controller) = here.links[&info.host_veth];
            assert!(up, "{} down", info.host_veth);
            assert_eq!(
                controller,
                Some(bridge),
                "{} not on the bridge",
                info.host_veth
            );
        }
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "1"
        );

        // Pod A → pod B, and the node → pod B, without address translation.
        let server = serve(&b.netns_path, SocketAddr::from((b.ip, 8080)), 2);
        let answer = hello_from(&a.netns_path, SocketAddr::from((b.ip, 8080)), "a");
        assert_eq!(answer, format!("{}:8080 says a is {}", b.ip, a.ip));
        let answer = hello(SocketAddr::from((b.ip, 8080)), "node");
        assert_eq!(answer, format!("{}:8080 says node is {}", b.ip, b.gateway));
        server.join().unwrap().unwrap();
        // And back: pod B → pod A.
        let server = serve(&a.netns_path, SocketAddr::from((a.ip, 9090)), 1);
        let answer = hello_from(&b.netns_path, SocketAddr::from((a.ip, 9090)), "b");
        assert_eq!(answer, format!("{}:9090 says b is {}", a.ip, b.ip));
        server.join().unwrap().unwrap();

        let mut pods = node.net().list_pods().await.unwrap();
        pods.sort();
        assert_eq!(pods, [POD_A, POD_B]);
    });
}

#[test]
fn teardown_leaves_nothing_behind() {
    sandboxed(|| async {
        let node = Node::start("10.244.2.0/24").await;
        let a = node.net().setup_pod(POD_A, "default/a").await.unwrap();
        let b = node.net().setup_pod(POD_B, "default/b").await.unwrap();
        assert!(mountinfo().contains(a.netns_path.to_str().unwrap()));

        node.net().teardown_pod(POD_A).await.expect("teardown");

        let here = observe_here().await;
        assert!(!here.links.contains_key(&a.host_veth), "{here:#?}");
        assert!(here.links.contains_key(&b.host_veth), "{here:#?}");
        assert!(!mountinfo().contains(a.netns_path.to_str().unwrap()));
        assert!(!a.netns_path.exists());
        assert_eq!(node.net().list_pods().await.unwrap(), [POD_B]);
        let state = std::fs::read_to_string(node.dir.path().join("ipam.json")).unwrap();
        assert!(!state.contains(POD_A), "{state}");

        // Again, and for a pod this node never had: nothing to do, no error.
        node.net()
            .teardown_pod(POD_A)
            .await
            .expect("second teardown");
        node.net()
            .teardown_pod(POD_C)
            .await
            .expect("teardown of an unknown pod");

        // The freed address is the lowest free one again.
        let c = node.net().setup_pod(POD_C, "default/c").await.unwrap();
        assert_eq!(c.ip, a.ip);
        assert_pod_namespace(&c);

        node.net().teardown_pod(POD_B).await.unwrap();
        node.net().teardown_pod(POD_C).await.unwrap();
        let here = observe_here().await;
        assert_eq!(here.link_names(), [DEFAULT_BRIDGE, "lo"], "{here:#?}");
        assert!(node.net().list_pods().await.unwrap().is_empty());
        let netns_dir = node.netns_dir();
        let mounts = mountinfo();
        let left: Vec<&str> = mounts
            .lines()
            .filter(|line| line.contains(netns_dir.to_str().unwrap()))
            .collect();
        // Only the shared bind mount of the directory itself.
        assert_eq!(left.len(), 1, "{left:#?}");
        assert_eq!(std::fs::read_dir(&netns_dir).unwrap().count(), 0);
    });
}

#[test]
fn setup_is_idempotent_and_survives_an_agent_restart() {
    sandboxed(|| async {
        let mut node = Node::start("10.244.3.0/24").await;
        let a = node.net().setup_pod(POD_A, "default/a").await.unwrap();
        assert_eq!(node.net().setup_pod(POD_A, "default/a").await.unwrap(), a);
        let b = node.net().setup_pod(POD_B, "default/b").await.unwrap();

        node.restart().await;
        assert_eq!(node.net().list_pods().await.unwrap(), [POD_A, POD_B]);
        assert_eq!(node.net().setup_pod(POD_B, "default/b").await.unwrap(), b);
        assert_eq!(node.net().setup_pod(POD_A, "default/a").await.unwrap(), a);
        for info in [&a, &b] {
            assert_pod_namespace(info);
        }
        let c = node.net().setup_pod(POD_C, "default/c").await.unwrap();
        assert_eq!(c.ip, Ipv4Addr::new(10, 244, 3, 4));

        // Re-running changed nothing on the node: one bridge address, one netns dir mount.
        let here = observe_here().await;
        assert_eq!(here.addresses_of(DEFAULT_BRIDGE), [(a.gateway, 24)]);
        let netns_dir = node.netns_dir();
        let dir_mounts = mountinfo()
            .lines()
            .filter(|line| line.split(' ').nth(4) == netns_dir.to_str())
            .count();
        assert_eq!(dir_mounts, 1);

        let server = serve(&a.netns_path, SocketAddr::from((a.ip, 80)), 1);
        let answer = hello_from(&c.netns_path, SocketAddr::from((a.ip, 80)), "c");
        assert_eq!(answer, format!("{}:80 says c is {}", a.ip, c.ip));
        server.join().unwrap().unwrap();
    });
}

#[test]
fn setup_repairs_and_teardown_tolerates_what_a_crash_left() {
    sandboxed(|| async {
        let mut node = Node::start("10.244.4.0/24").await;

        // The host end was deleted behind the agent's back: setup makes the pair again.
        let a = node.net().setup_pod(POD_A, "default/a").await.unwrap();
        let (connection, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(connection);
        let (index, ..) = observe_here().await.links[&a.host_veth];
        handle.link().del(index).execute().await.unwrap();
        assert_eq!(observe_in(&a.netns_path).link_names(), ["lo"]);
        assert_eq!(node.net().setup_pod(POD_A, "default/a").await.unwrap(), a);
        assert_pod_namespace(&a);
        let server = serve(&a.netns_path, SocketAddr::from((a.ip, 80)), 1);
        assert_eq!(
            hello(SocketAddr::from((a.ip, 80)), "node"),
            format!("{}:80 says node is {}", a.ip, a.gateway)
        );
        server.join().unwrap().unwrap();

        // The namespace file was lost while something (here a thread) still holds the
        // namespace: setup makes a new one and moves the veth pair over to it.
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = netns::spawn_in(&a.netns_path, move || release_rx.recv()).unwrap();
        umount2(&a.netns_path, MntFlags::MNT_DETACH).unwrap();
        std::fs::remove_file(&a.netns_path).unwrap();
        let (old_index, ..) = observe_here().await.links[&a.host_veth];
        assert_eq!(node.net().setup_pod(POD_A, "default/a").await.unwrap(), a);
        assert_pod_namespace(&a);
        let (new_index, ..) = observe_here().await.links[&a.host_veth];
        assert_ne!(old_index, new_index, "the old pair was not replaced");
        release_tx.send(()).unwrap();
        holder.join().unwrap().unwrap().unwrap();

        // A crash between creating the namespace file and mounting it: setup mounts onto it.
        let c_path = node.net().netns_path(POD_C);
        std::fs::write(&c_path, "").unwrap();
        let c = node.net().setup_pod(POD_C, "default/c").await.unwrap();
        assert_pod_namespace(&c);

        // The namespace was unmounted (so it is gone, and its veth pair with it) but the file
        // and the address are left: teardown removes the rest.
        let b = node.net().setup_pod(POD_B, "default/b").await.unwrap();
        umount2(&b.netns_path, MntFlags::MNT_DETACH).unwrap();
        assert!(b.netns_path.exists());
        node.net()
            .teardown_pod(POD_B)
            .await
            .expect("teardown of a half-gone pod");
        assert!(!b.netns_path.exists());
        assert_eq!(node.net().list_pods().await.unwrap(), [POD_A, POD_C]);

        // Only an address is left (a crash right after allocating), found after a restart:
        // teardown releases it.
        let ipam_path = node.dir.path().join("ipam.json");
        let mut ipam = ipam::load(&ipam_path, node.subnet).unwrap();
        let orphan = ipam.allocate(POD_B).unwrap();
        ipam::store(&ipam_path, &ipam).unwrap();
        node.restart().await;
        assert_eq!(node.net().list_pods().await.unwrap(), [POD_A, POD_B, POD_C]);
        node.net().teardown_pod(POD_B).await.unwrap();
        assert_eq!(node.net().list_pods().await.unwrap(), [POD_A, POD_C]);
        let d = node.net().setup_pod(POD_B, "default/b").await.unwrap();
        assert_eq!(d.ip, orphan);
    });
}

#[test]
fn an_exhausted_subnet_is_a_clear_error_and_leaves_nothing() {
    sandboxed(|| async {
        // A /29: gateway .1, pods .2 to .6.
        let node = Node::start("10.244.5.0/29").await;
        for (i, uid) in ["p1", "p2", "p3", "p4", "p5"].iter().enumerate() {
            let info = node.net().setup_pod(uid, uid).await.unwrap();
            assert_eq!(info.ip, Ipv4Addr::new(10, 244, 5, 2 + i as u8));
        }
        let err = node.net().setup_pod("p6", "p6").await.unwrap_err();
        assert!(
            matches!(
                err,
                NetworkError::Ipam(IpamError::Exhausted { capacity: 5, .. })
            ),
            "{err}"
        );
        assert!(!node.net().netns_path("p6").exists());
        assert!(!observe_here()
            .await
            .links
            .contains_key(&host_veth_name("p6")));
        node.net().teardown_pod("p3").await.unwrap();
        let info = node.net().setup_pod("p6", "p6").await.unwrap();
        assert_eq!(info.ip, Ipv4Addr::new(10, 244, 5, 4));
    });
}

#[test]
fn setup_without_the_bridge_fails_before_allocating() {
    sandboxed(|| async {
        let dir = TempDir::new().unwrap();
        let network = PodNetwork::new(
            dir.path().to_path_buf(),
            "10.244.6.0/24".parse().unwrap(),
            "berthtest0".to_string(),
        )
        .unwrap();
        let err = network.setup_pod(POD_A, "default/a").await.unwrap_err();
        assert!(
            matches!(err, NetworkError::BridgeMissing(ref name) if name == "berthtest0"),
            "{err}"
        );
        assert!(network.list_pods().await.unwrap().is_empty());
        umount2(&dir.path().join("netns"), MntFlags::MNT_DETACH).unwrap();
    });
}
