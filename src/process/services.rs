//! Two small Pingora services that frame the listening ones: [`HandOver`] puts the sockets this
//! process bound (or inherited) into Pingora's fd table before any listening service starts,
//! and [`Ready`] runs once they all have: the moment to tell systemd, a waiting daemon parent
//! or a waiting predecessor that this process serves.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};

use crate::proxy::DataPlane;

pub struct HandOver {
    sockets: Mutex<Vec<(String, RawFd)>>,
    table: Arc<OnceLock<ListenFds>>,
}

impl HandOver {
    pub fn new(sockets: Vec<(String, RawFd)>, table: Arc<OnceLock<ListenFds>>) -> Self {
        HandOver {
            sockets: Mutex::new(sockets),
            table,
        }
    }
}

#[async_trait]
impl ServiceWithDependents for HandOver {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        if let Some(fds) = fds {
            let sockets =
                std::mem::take(&mut *self.sockets.lock().unwrap_or_else(|e| e.into_inner()));
            {
                let mut table = fds.lock();
                for (key, fd) in sockets {
                    table.add(key, fd);
                }
            }
            let _ = self.table.set(fds);
        }
        ready.notify_ready();
    }

    fn name(&self) -> &str {
        "sockets"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

pub struct Ready {
    plane: DataPlane,
    on_ready: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Ready {
    pub fn new(plane: DataPlane, on_ready: Box<dyn FnOnce() + Send>) -> Self {
        Ready {
            plane,
            on_ready: Mutex::new(Some(on_ready)),
        }
    }
}

#[async_trait]
impl ServiceWithDependents for Ready {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        // The listening services have started their accept loops; their sockets have been
        // listening since they were bound, so no connection was refused meanwhile.
        self.plane.set_serving(true);
        let on_ready = self
            .on_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(f) = on_ready {
            f();
        }
        ready.notify_ready();
    }

    fn name(&self) -> &str {
        "ready"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}
