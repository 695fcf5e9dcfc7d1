//! The bodies the L7 data path moves. Request bodies stream from the client to the endpoint
//! (or are empty, which is what makes a request replayable). Response bodies stream back and
//! carry a lease on their endpoint: the endpoint's work is in flight until the body ends or is
//! dropped, and an HTTP/1.1 connection returns to the pool only if its body ended.

use crate::endpoint::Endpoint;
use crate::service::ServicePort;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

pub enum RequestBody {
    Empty,
    Streaming(Incoming),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Streaming(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streaming(body) => body.size_hint(),
        }
    }
}

/// Work counted in flight for a service port until dropped.
pub(crate) struct InFlight(Arc<ServicePort>);

impl InFlight {
    pub fn new(service: Arc<ServicePort>) -> Self {
        service.stats.in_flight.fetch_add(1, Relaxed);
        InFlight(service)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Relaxed);
    }
}

/// One request's hold on an endpoint (and, for HTTP/1.1, on the connection it used).
pub(crate) struct Lease {
    endpoint: Arc<Endpoint>,
    pub connection: Option<http1::SendRequest<RequestBody>>,
    /// The response body ended: the connection may carry another request.
    pub finished: bool,
}

impl Lease {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.stats.requests.fetch_add(1, Relaxed);
        endpoint.stats.in_flight.fetch_add(1, Relaxed);
        Lease {
            endpoint,
            connection: None,
            finished: false,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.stats.in_flight.fetch_sub(1, Relaxed);
        if let (true, Some(connection)) = (self.finished, self.connection.take()) {
            self.endpoint.pool().checkin(connection);
        }
    }
}

pub struct ResponseBody {
    inner: Inner,
    lease: Option<Lease>,
    _in_flight: InFlight,
}

enum Inner {
    Local(Full<Bytes>),
    Upstream(Incoming),
}

impl ResponseBody {
    pub(crate) fn local(text: &'static str, in_flight: InFlight) -> Self {
        ResponseBody {
            inner: Inner::Local(Full::new(Bytes::from_static(text.as_bytes()))),
            lease: None,
            _in_flight: in_flight,
        }
    }

    pub(crate) fn upstream(body: Incoming, lease: Lease, in_flight: InFlight) -> Self {
        ResponseBody {
            inner: Inner::Upstream(body),
            lease: Some(lease),
            _in_flight: in_flight,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Local(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Inner::Upstream(body) => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if matches!(polled, Poll::Ready(None))
                    || (matches!(polled, Poll::Ready(Some(Ok(_)))) && body.is_end_stream())
                {
                    if let Some(lease) = &mut this.lease {
                        lease.finished = true;
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Local(body) => body.is_end_stream(),
            Inner::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Local(body) => body.size_hint(),
            Inner::Upstream(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body that was empty from the start may never be polled.
        if let (Inner::Upstream(body), Some(lease)) = (&self.inner, &mut self.lease) {
            if body.is_end_stream() {
                lease.finished = true;
            }
        }
    }
}
