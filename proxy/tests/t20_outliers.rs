//! A backend that dies under load: no idempotent request fails (they are retried on other
//! endpoints) and the dead endpoint is ejected, as the metrics show. Needs root.

mod fixtures;

use berth_proxy::{ListenerConfig, Mode, Proxy};
use fixtures::{admin_get, isolated_runtime, metric, Backend, Http1Client};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[test]
fn a_backend_killed_mid_load_fails_no_get_and_is_ejected() {
    isolated_runtime().block_on(async {
        let backends = [
            Backend::start("a").await,
            Backend::start("b").await,
            Backend::start("c").await,
        ];
        let proxy = Proxy::new().unwrap();
        let mut config = ListenerConfig::new(
            "default/web:http",
            "127.0.0.1:0".parse().unwrap(),
            Mode::Http,
        );
        config.endpoints = backends.iter().map(|b| b.addr).collect();
        let addr = proxy.listen(config).await.unwrap();
        let admin = proxy
            .serve_admin("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();

        let done = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for _ in 0..8 {
            let done = done.clone();
            clients.push(tokio::spawn(async move {
                let mut client = Http1Client::connect(addr).await;
                let mut failures = Vec::new();
                for _ in 0..400 {
                    match client.get("/").await {
                        Ok((200, _)) => {}
                        other => failures.push(format!("{other:?}")),
                    }
                    done.fetch_add(1, Relaxed);
                }
                failures
            }));
        }
        // Kill b once the load is well under way, while requests are in flight.
        while done.load(Relaxed) < 800 {
            tokio::task::yield_now().await;
        }
        let served_before = backends[1].requests.load(Relaxed);
        backends[1].kill();
        let mut failures = Vec::new();
        for client in clients {
            failures.extend(client.await.unwrap());
        }
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        assert!(served_before > 0);

        let metrics = admin_get(admin, "/metrics").await;
        let labels =
            |b: &Backend| format!("{{service=\"default/web:http\",endpoint=\"{}\"}}", b.addr);
        assert_eq!(
            metric(
                &metrics,
                &format!("berth_proxy_endpoint_ejected{}", labels(&backends[1]))
            ),
            Some(1.0),
            "{metrics}"
        );
        for live in [&backends[0], &backends[2]] {
            assert_eq!(
                metric(
                    &metrics,
                    &format!("berth_proxy_endpoint_ejected{}", labels(live))
                ),
                Some(0.0)
            );
        }
        assert_eq!(
            metric(
                &metrics,
                "berth_proxy_service_requests_total{service=\"default/web:http\"}"
            ),
            Some(3200.0)
        );
        assert_eq!(
            metric(
                &metrics,
                "berth_proxy_service_errors_total{service=\"default/web:http\"}"
            ),
            Some(0.0)
        );
        assert!(
            metric(
                &metrics,
                &format!("berth_proxy_endpoint_errors_total{}", labels(&backends[1]))
            )
            .unwrap()
                >= 5.0
        );
    });
}
