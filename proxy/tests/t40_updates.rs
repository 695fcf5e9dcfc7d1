//! Endpoint updates take effect at once without dropping work: a long request to a removed
//! endpoint completes, new requests go to the new set, the listener and the client's
//! keep-alive connection stay. Needs root.

mod fixtures;

use berth_proxy::{EndpointSpec, ListenerConfig, Mode, Proxy};
use fixtures::{isolated_runtime, Backend, Http1Client};

#[test]
fn update_while_a_long_request_is_in_flight() {
    isolated_runtime().block_on(async {
        let old = Backend::start("old").await;
        let new = Backend::start("new").await;
        let proxy = Proxy::new().unwrap();
        let mut config = ListenerConfig::new(
            "default/web:http",
            "127.0.0.1:0".parse().unwrap(),
            Mode::Http,
        );
        config.endpoints = vec![old.addr];
        let addr = proxy.listen(config).await.unwrap();

        // A keep-alive connection made before the update.
        let mut client = Http1Client::connect(addr).await;
        assert_eq!(client.get("/").await.unwrap(), (200, "old".to_string()));

        let long = tokio::spawn(async move {
            let mut client = Http1Client::connect(addr).await;
            client.get("/hold").await
        });
        old.held.notified().await;

        proxy
            .update("default/web:http", &[EndpointSpec::ready(new.addr)])
            .unwrap();
        for _ in 0..5 {
            assert_eq!(client.get("/").await.unwrap(), (200, "new".to_string()));
        }
        // A terminating endpoint drains too: it gets no new work while a ready one exists.
        proxy
            .update(
                "default/web:http",
                &[
                    EndpointSpec {
                        addr: old.addr,
                        terminating: true,
                    },
                    EndpointSpec::ready(new.addr),
                ],
            )
            .unwrap();
        for _ in 0..5 {
            assert_eq!(client.get("/").await.unwrap(), (200, "new".to_string()));
        }

        old.release();
        assert_eq!(long.await.unwrap().unwrap(), (200, "old".to_string()));
        // The service's numbers: every request counted, none failed.
        let metrics = proxy.render_metrics();
        assert!(
            metrics.contains("berth_proxy_service_errors_total{service=\"default/web:http\"} 0\n"),
            "{metrics}"
        );
        assert!(
            metrics
                .contains("berth_proxy_service_requests_total{service=\"default/web:http\"} 12\n"),
            "{metrics}"
        );
    });
}
