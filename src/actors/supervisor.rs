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

/// How often the endpoint list is resolved again: a new capture node's
/// queue starts draining within about this.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(3);
const FIRST_RESTART_BACKOFF: Duration = Duration::from_millis(500);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

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

struct Slot {
    addr: Option<Addr<Drainer>>,
    restarts: u32,
    restart_at: Option<Instant>,
    backoff: Duration,
}

pub struct Supervisor {
    resolver: Arc<dyn Resolve>,
    settings: DrainSettings,
    dedup: Addr<Dedup>,
    db: Addr<DbWriter>,
    metrics: WorkerMetrics,
    slots: HashMap<String, Slot>,
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
            slots: HashMap::new(),
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
            .slots
            .keys()
            .filter(|u| !wanted.contains(u))
            .cloned()
            .collect();
        for url in gone {
            if let Some(slot) = self.slots.remove(&url) {
                log::info!("endpoint {} is gone; stopping its drainer", redact(&url));
                if let Some(addr) = slot.addr {
                    let (tx, _rx) = oneshot::channel();
                    addr.do_send(StopDraining { done: tx });
                }
            }
        }
        for url in urls {
            match self.slots.get_mut(&url) {
                None => {
                    log::info!("endpoint {} found; starting a drainer", redact(&url));
                    let addr = self.start_drainer(&url);
                    self.slots.insert(
                        url,
                        Slot {
                            addr,
                            restarts: 0,
                            restart_at: None,
                            backoff: FIRST_RESTART_BACKOFF,
                        },
                    );
                }
                Some(slot) => {
                    let alive = slot.addr.as_ref().is_some_and(|a| a.connected());
                    if alive {
                        continue;
                    }
                    match slot.restart_at {
                        None => {
                            slot.restart_at = Some(Instant::now() + slot.backoff);
                            log::warn!(
                                "drainer of {} stopped; restarting in {:?}",
                                redact(&url),
                                slot.backoff
                            );
                        }
                        Some(at) if Instant::now() >= at => {
                            slot.restarts += 1;
                            slot.restart_at = None;
                            slot.backoff = (slot.backoff * 2).min(MAX_RESTART_BACKOFF);
                            let addr = match Drainer::new(
                                url.clone(),
                                self.settings.clone(),
                                self.dedup.clone(),
                                self.db.clone(),
                                self.metrics.clone(),
                            ) {
                                Ok(d) => Some(d.start()),
                                Err(_) => None,
                            };
                            if let Some(slot) = self.slots.get_mut(&url) {
                                slot.addr = addr;
                                log::info!(
                                    "drainer of {} restarted (#{})",
                                    redact(&url),
                                    slot.restarts
                                );
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        self.metrics.endpoints.set(self.slots.len() as i64);
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
        for slot in self.slots.values() {
            if let Some(addr) = slot.addr.as_ref().filter(|a| a.connected()) {
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
