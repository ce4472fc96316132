//! Thread-per-core workers: each runs a single-threaded runtime with its own accept loop.
//!
//! One runtime per core, each accepting on its own `SO_REUSEPORT` socket, keeps a request on
//! one thread from accept to the upstream and back: no work-stealing, no cross-thread wakeups,
//! and each worker keeps its own upstream connection pools (see `OpenAiProvider::client`).

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running on this thread (0 outside workers).
pub fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// Workers to run: the configured number, else one per core this process may use (which
/// respects `taskset` and cgroup CPU sets).
pub fn worker_count(configured: Option<usize>) -> usize {
    configured
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Listen backlog per socket; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// Binds `count` listening sockets to `addr` with `SO_REUSEPORT`, so the kernel spreads
/// connections over them. Port 0 is resolved first and reused by every socket.
///
/// `SO_REUSEPORT` would also let a second gateway (same user) join the group and silently
/// take part of the connections, so the address is first claimed without it: that bind
/// fails with "address in use" when anyone else listens there.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut bound = {
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
        let probe: std::net::TcpListener = probe.into();
        probe.local_addr()?
    };
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// A worker thread and the signal that its runtime has finished.
pub struct Worker {
    thread: Option<JoinHandle<()>>,
    done: oneshot::Receiver<()>,
}

impl Worker {
    /// Starts thread `name`, which builds a single-threaded runtime, marks itself as worker
    /// `index`, and runs the future `make` builds there until it completes.
    pub fn spawn<F, Fut>(name: String, index: usize, make: F) -> std::io::Result<Worker>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (done_tx, done) = oneshot::channel();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            WORKER.with(|w| w.set(index));
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(make()),
                Err(err) => tracing::error!(error = %err, "cannot start a worker runtime"),
            }
            let _ = done_tx.send(());
        })?;
        Ok(Worker {
            thread: Some(thread),
            done,
        })
    }

    /// Waits until the worker's runtime has finished and its thread has ended.
    pub async fn finished(mut self) {
        let _ = (&mut self.done).await;
        if let Some(thread) = self.thread.take() {
            // The thread has signalled its end; joining it does not block for long.
            let _ = thread.join();
        }
    }
}
