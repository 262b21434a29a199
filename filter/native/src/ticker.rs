//! Periodic work for a filter config.
//!
//! The HTTP-filter ABI has no timer (timers exist only for bootstrap extensions and
//! clusters). What it has is a config scheduler whose `commit` may be called from any thread
//! and runs `FilterConfig::on_scheduled` on Envoy's main thread. A [`Ticker`] is a module
//! thread that commits one event id every period. Keep it inside the `FilterConfig`: dropping
//! the config (Envoy's config destroy) stops and joins the thread before the scheduler is
//! deleted, so no commit can reach a destroyed config.
#![forbid(unsafe_code)]

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::api::ConfigScheduler;

/// A thread that calls `scheduler.commit(event_id)` every `period` until dropped.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the thread (named `sy-ticker`). The first commit happens after one period.
    pub fn start(
        scheduler: ConfigScheduler,
        period: Duration,
        event_id: u64,
    ) -> std::io::Result<Ticker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sy-ticker".into())
            .spawn(move || {
                let (lock, cvar) = &*flag;
                let Ok(mut stopped) = lock.lock() else {
                    return;
                };
                loop {
                    let Ok((guard, timeout)) = cvar.wait_timeout(stopped, period) else {
                        return;
                    };
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    if timeout.timed_out() {
                        scheduler.commit(event_id);
                    }
                }
            })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
        }
        cvar.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
