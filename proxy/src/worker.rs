//! The data plane's threads: one single-threaded tokio runtime per core, like nginx's worker
//! processes. A connection lives on one worker from accept to close, and each worker keeps its
//! own upstream connection pools, so a request never crosses threads. (tokio's work-stealing
//! runtime did not scale from one thread to two here: requests ping-pong between the client
//! connection's task and the upstream connection's task, and across threads that costs more
//! than the work itself.)

use std::cell::Cell;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the caller (0 outside workers).
pub(crate) fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Running workers; dropping this stops them, and every connection on them.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    pub fn start(count: usize) -> std::io::Result<Arc<Workers>> {
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("proxy-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Arc::new(Workers {
            handles,
            _stops: stops,
        }))
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }
}
