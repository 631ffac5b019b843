//! One connection per host for the whole of a command: the run and, after
//! it, the journal that leaves each host its record. Opening an SSH
//! connection costs about as much as a whole no-op apply, so a transport
//! handed out here is kept when its user closes it, and handed out again;
//! [`Reusing::close_all`] releases them at the end. A connection that broke
//! (a transport error) is not handed out again: the next `connect` opens a
//! fresh one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{Connector, Output, Transport, TransportError, Watch};
use crate::inventory::Host;
use crate::module::Payload;

/// A connector that keeps each host's transport for the next `connect`.
pub struct Reusing {
    inner: Arc<dyn Connector>,
    open: Mutex<HashMap<String, Arc<Kept>>>,
}

impl Reusing {
    /// Wrap `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Connector>) -> Self {
        Self {
            inner,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Close every connection kept.
    pub async fn close_all(&self) {
        let kept: Vec<Arc<Kept>> = self.open.lock().await.drain().map(|(_, k)| k).collect();
        for k in kept {
            k.inner.close().await;
        }
    }
}

#[async_trait]
impl Connector for Reusing {
    async fn connect(&self, host: &Host) -> Result<Arc<dyn Transport>, TransportError> {
        // The key holds what the connection is made of, not the name alone.
        let key = format!("{}\n{}\n{:?}", host.name, host.address, host.connection);
        let stale = {
            let mut open = self.open.lock().await;
            match open.get(&key) {
                Some(k) if !k.broken.load(Ordering::SeqCst) => return Ok(k.clone()),
                Some(_) => open.remove(&key),
                None => None,
            }
        };
        if let Some(stale) = stale {
            stale.inner.close().await;
        }
        // Not under the lock: hosts connect in parallel.
        let kept = Arc::new(Kept {
            inner: self.inner.connect(host).await?,
            broken: AtomicBool::new(false),
        });
        let replaced = self.open.lock().await.insert(key, kept.clone());
        if let Some(other) = replaced {
            other.inner.close().await;
        }
        Ok(kept)
    }
}

/// A transport kept open past its users' `close`.
struct Kept {
    inner: Arc<dyn Transport>,
    /// A run failed on it: not handed out again.
    broken: AtomicBool,
}

#[async_trait]
impl Transport for Kept {
    async fn run_watched(
        &self,
        script: &str,
        stdin: Option<&Payload>,
        watch: Watch<'_>,
    ) -> Result<Output, TransportError> {
        let r = self.inner.run_watched(script, stdin, watch).await;
        if r.is_err() {
            self.broken.store(true, Ordering::SeqCst);
        }
        r
    }

    fn max_parallel(&self) -> usize {
        self.inner.max_parallel()
    }

    /// Kept for the next user; [`Reusing::close_all`] closes it.
    async fn close(&self) {}
}
