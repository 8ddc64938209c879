//! Whether every watch has listed everything once: only then can attribution be trusted, and
//! only then is the controller ready. Until then, `/readyz` names the watches still waiting and
//! the last failure of each, so that an unready controller says why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The watches that have not listed yet, each with its last failure.
#[derive(Debug, Default)]
pub struct Readiness {
    waiting: Mutex<BTreeMap<String, Option<String>>>,
    ready: AtomicBool,
    /// Set once the first watch registered: an empty set before that means nothing started.
    started: AtomicBool,
}

/// A watch that has not listed yet, and why not, if it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub watch: String,
    pub last_failure: Option<String>,
}

impl Readiness {
    /// Registers a watch by name; it counts as listed once [`FirstList::done`] is called.
    pub fn expect(self: &Arc<Self>, name: String) -> FirstList {
        self.started.store(true, Ordering::SeqCst);
        self.lock().insert(name.clone(), None);
        FirstList {
            name,
            readiness: self.clone(),
            done: false,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The watches still waiting for their first list, by name.
    pub fn waiting_for(&self) -> Vec<Waiting> {
        self.lock()
            .iter()
            .map(|(watch, last_failure)| Waiting {
                watch: watch.clone(),
                last_failure: last_failure.clone(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn listed(&self, name: &str) {
        let mut waiting = self.lock();
        waiting.remove(name);
        if waiting.is_empty() && self.started.load(Ordering::SeqCst) {
            self.ready.store(true, Ordering::SeqCst);
            tracing::info!("every watch has listed: ready");
        }
    }

    fn failed(&self, name: &str, failure: String) {
        if let Some(last) = self.lock().get_mut(name) {
            *last = Some(failure);
        }
    }
}

/// One watch's place in [`Readiness`].
#[derive(Debug)]
pub struct FirstList {
    name: String,
    readiness: Arc<Readiness>,
    done: bool,
}

impl FirstList {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The watch has listed everything once (later relists change nothing).
    pub fn done(&mut self) {
        if !self.done {
            self.done = true;
            tracing::info!(watch = %self.name, "listed");
            self.readiness.listed(&self.name);
        }
    }

    /// The watch failed before its first list: `/readyz` shows why until it lists.
    pub fn failed(&self, failure: &impl std::fmt::Display) {
        if !self.done {
            self.readiness.failed(&self.name, failure.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_watch_has_listed_and_until_then_each_says_why_not() {
        let readiness = Arc::new(Readiness::default());
        assert!(!readiness.is_ready(), "nothing registered is not ready");
        let mut pods = readiness.expect("pods".into());
        let mut secrets = readiness.expect("secrets".into());
        pods.failed(&"the API server said 500");
        let waiting = readiness.waiting_for();
        assert_eq!(
            waiting,
            [
                Waiting {
                    watch: "pods".into(),
                    last_failure: Some("the API server said 500".into()),
                },
                Waiting {
                    watch: "secrets".into(),
                    last_failure: None,
                },
            ]
        );
        pods.done();
        assert!(!readiness.is_ready());
        secrets.done();
        assert!(readiness.is_ready());
        assert!(readiness.waiting_for().is_empty());
        // A failure after the first list changes nothing.
        pods.failed(&"later");
        assert!(readiness.waiting_for().is_empty());
    }
}
