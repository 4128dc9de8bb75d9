//! `Supervisor`: owns the list of Redis endpoints and one `Drainer` each.
//!
//! Every [`RESOLVE_INTERVAL`] it asks its [`Resolve`] for the endpoints
//! (`REDIS_URLS` plus whatever `REDIS_DNS` resolves to now: Swarm's
//! `tasks.<service>` names change as tasks come and go). An endpoint that
//! appears gets a drainer; one that vanishes has its drainer stopped
//! gracefully (in-flight batches commit and acknowledge first); a drainer
//! that stopped by itself is restarted after a backoff.
//!
//! [`StopAll`] (SIGTERM) stops every drainer gracefully and answers when
//! all have finished.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::db_writer::DbWriter;
use crate::actors::dedup::Dedup;
use crate::actors::drainer::{DrainSettings, Drainer, StopDraining};
use crate::endpoints::{redact, EndpointSource};
use crate::metrics::WorkerMetrics;
use crate::retry::{Backoff, RetryPolicy};

/// How often the endpoint list is resolved again: a new capture node's
/// queue starts draining within about this.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(3);
/// A drainer that stopped by itself is restarted after this, doubling per
/// restart: a Redis URL that keeps failing must not spin.
const RESTART: RetryPolicy =
    RetryPolicy::doubling(Duration::from_millis(500), Duration::from_secs(30));

/// Where the Redis endpoints are. Blocking (DNS); called off the actor's
/// thread. A trait so that tests can stand in for DNS.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self) -> Vec<String>;
}

impl Resolve for EndpointSource {
    fn resolve(&self) -> Vec<String> {
        EndpointSource::resolve(self)
    }
}

/// Stop every drainer gracefully; answers when they are done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

/// One endpoint's drainer, and its restarts.
struct DrainerOf {
    /// `None` if it could not be started (a URL redis-rs refuses).
    addr: Option<Addr<Drainer>>,
    restarts: u32,
    /// Set when it was found stopped: restarted once this has passed.
    restart_at: Option<Instant>,
    restart_backoff: Backoff,
}

pub struct Supervisor {
    resolver: Arc<dyn Resolve>,
    settings: DrainSettings,
    dedup: Addr<Dedup>,
    db: Addr<DbWriter>,
    metrics: WorkerMetrics,
    /// By endpoint URL.
    drainers: HashMap<String, DrainerOf>,
    resolving: bool,
    stopping: bool,
}

impl Supervisor {
    pub fn new(
        resolver: Arc<dyn Resolve>,
        settings: DrainSettings,
        dedup: Addr<Dedup>,
        db: Addr<DbWriter>,
        metrics: WorkerMetrics,
    ) -> Supervisor {
        Supervisor {
            resolver,
            settings,
            dedup,
            db,
            metrics,
            drainers: HashMap::new(),
            resolving: false,
            stopping: false,
        }
    }

    fn start_drainer(&self, url: &str) -> Option<Addr<Drainer>> {
        match Drainer::new(
            url.to_owned(),
            self.settings.clone(),
            self.dedup.clone(),
            self.db.clone(),
            self.metrics.clone(),
        ) {
            Ok(d) => Some(d.start()),
            Err(e) => {
                log::error!("{}: not a usable Redis URL: {e}", redact(url));
                None
            }
        }
    }

    fn reconcile(&mut self, urls: Vec<String>) {
        if self.stopping {
            return;
        }
        let wanted: std::collections::HashSet<&String> = urls.iter().collect();
        // Gone from the answer: stop gracefully.
        let gone: Vec<String> = self
            .drainers
            .keys()
            .filter(|u| !wanted.contains(u))
            .cloned()
            .collect();
        for url in gone {
            if let Some(drainer) = self.drainers.remove(&url) {
                log::info!("endpoint {} is gone; stopping its drainer", redact(&url));
                if let Some(addr) = drainer.addr {
                    let (tx, _rx) = oneshot::channel();
                    addr.do_send(StopDraining { done: tx });
                }
            }
        }
        for url in urls {
            match self.drainers.get_mut(&url) {
                None => {
                    log::info!("endpoint {} found; starting a drainer", redact(&url));
                    let addr = self.start_drainer(&url);
                    self.drainers.insert(
                        url,
                        DrainerOf {
                            addr,
                            restarts: 0,
                            restart_at: None,
                            restart_backoff: RESTART.backoff(),
                        },
                    );
                }
                Some(drainer) => {
                    let alive = drainer.addr.as_ref().is_some_and(|a| a.connected());
                    if alive {
                        continue;
                    }
                    match drainer.restart_at {
                        None => {
                            let wait = drainer.restart_backoff.current();
                            drainer.restart_at = Some(Instant::now() + wait);
                            log::warn!(
                                "drainer of {} stopped; restarting in {wait:?}",
                                redact(&url)
                            );
                        }
                        Some(at) if Instant::now() >= at => {
                            drainer.restarts += 1;
                            drainer.restart_at = None;
                            drainer.restart_backoff.next_wait();
                            let addr = self.start_drainer(&url);
                            if let Some(drainer) = self.drainers.get_mut(&url) {
                                drainer.addr = addr;
                                log::info!(
                                    "drainer of {} restarted (#{})",
                                    redact(&url),
                                    drainer.restarts
                                );
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        self.metrics.endpoints.set(self.drainers.len() as i64);
    }

    fn resolve(&mut self, ctx: &mut Context<Self>) {
        if self.resolving || self.stopping {
            return;
        }
        self.resolving = true;
        let resolver = self.resolver.clone();
        let job = async move {
            actix_web::rt::task::spawn_blocking(move || resolver.resolve())
                .await
                .unwrap_or_default()
        };
        ctx.spawn(job.into_actor(self).map(|urls, act, _| {
            act.resolving = false;
            act.reconcile(urls);
        }));
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.resolve(ctx);
        ctx.run_interval(RESOLVE_INTERVAL, |act, ctx| act.resolve(ctx));
    }
}

impl Handler<StopAll> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopAll, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let mut waits = Vec::new();
        for drainer in self.drainers.values() {
            if let Some(addr) = drainer.addr.as_ref().filter(|a| a.connected()) {
                let (tx, rx) = oneshot::channel();
                addr.do_send(StopDraining { done: tx });
                waits.push(rx);
            }
        }
        Box::pin(async move {
            for w in waits {
                // A drainer that died drops its sender: nothing to wait for.
                let _ = w.await;
            }
        })
    }
}
