//! A node in-process on a thread of its own, with its own actix system: a
//! test may be plain or async and may block (poll, sleep a fault's pace)
//! without starving the node; the node stops when the test drops it.

use std::future::Future;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use tokio::sync::oneshot;

pub struct NodeThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NodeThread {
    /// Runs `start` on a new thread inside a new actix system: it builds
    /// the node and returns its port and the future that serves until the
    /// `stop` future it was given completes. Returns once the port is known.
    pub fn start<F, Fut>(what: &'static str, start: F) -> (NodeThread, u16)
    where
        F: FnOnce(Stop) -> (u16, Fut) + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(what.into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let stop = Stop(stop_rx);
                    let (port, serve) = start(stop);
                    let _ = port_tx.send(port);
                    serve.await;
                })
            })
            .expect("spawn a node thread");
        let port = port_rx
            .recv()
            .unwrap_or_else(|_| panic!("{what} did not start (its thread panicked)"));
        (
            NodeThread {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            port,
        )
    }

    /// For a node that is one actix-web server: `build` makes it and
    /// returns its port, its handle and the future that serves; the handle
    /// stops it at once (not gracefully: the test is done with it).
    pub fn start_server<F, Fut>(what: &'static str, build: F) -> (NodeThread, u16)
    where
        F: FnOnce() -> (u16, ServerHandle, Fut) + Send + 'static,
        Fut: Future<Output = std::io::Result<()>> + 'static,
    {
        Self::start(what, move |stop| {
            let (port, handle, server) = build();
            let serve = async move {
                let server = actix_web::rt::spawn(server);
                stop.wait().await;
                handle.stop(false).await;
                let _ = server.await;
            };
            (port, serve)
        })
    }

    /// Tells the node to stop and waits until it has.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for NodeThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Completes when the test stops the node (or drops it).
pub struct Stop(oneshot::Receiver<()>);

impl Stop {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}
