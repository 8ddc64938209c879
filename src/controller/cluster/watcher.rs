//! kube's watcher, made to keep going on any API server, and quiet about it.
//!
//! **Streaming or paged.** A first list streams (`sendInitialEvents`, the WatchList feature)
//! where the API server offers it, else comes in pages (`limit`/`continue`). Some API servers
//! accept a streaming list and then fail it inside the stream: one whose storage cannot request
//! watch progress (etcd before 3.4.31 / 3.5.13, k3s's kine before 2024, providers that keep the
//! feature off) sends `InternalError: a watch stream was requested by the client but the required
//! storage feature RequestWatchProgress is disabled` and ends the watch. As client-go does
//! ("making progress is better than deadlocking"), with [`InitialList::Auto`] the first streaming
//! list that fails for any reason — refused at the start (400/422), failed inside the stream, or
//! ended before its last object — switches every watch of the process to paged lists, and the
//! switch is said once, with the reason.
//!
//! **Backoff.** kube's `default_backoff` starts over on every `Ok` item, and a watcher yields
//! `Ok(Init)` before each attempt, so a list that fails at once was retried at once, forever
//! (eleven warnings a second from nine watches). Here the backoff (kube's own: 0.8 s doubling to
//! 30 s, with jitter) starts over only once a list completed or a watch delivered an event.
//!
//! **Bounded logs.** Each watch says its first failure at `warn`, then at most one `warn` a
//! minute while it keeps failing (with the count), and one `info` line when it works again;
//! every failure is at `debug`.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Config, DefaultBackoff, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// How a watch gets its initial list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// A streaming list where the API server serves one; pages once one has failed.
    #[default]
    Auto,
    /// Always a streaming list (`sendInitialEvents`).
    Streaming,
    /// Always pages (`limit`/`continue`).
    Paged,
}

/// How every watch of the process lists, shared between them.
#[derive(Debug)]
pub struct ListMode {
    initial: InitialList,
    /// With `Auto`: a streaming list has failed, every watch pages from now on.
    paged: AtomicBool,
}

impl ListMode {
    pub fn new(initial: InitialList) -> Arc<Self> {
        Arc::new(Self {
            initial,
            paged: AtomicBool::new(initial == InitialList::Paged),
        })
    }

    /// Whether the next list should stream.
    fn streams(&self) -> bool {
        match self.initial {
            InitialList::Streaming => true,
            InitialList::Paged => false,
            InitialList::Auto => !self.paged.load(Ordering::SeqCst),
        }
    }

    /// A streaming list of `watch` failed for `reason`: with `Auto`, every watch pages from now
    /// on, and the first to find out says so. Whether this watch should switch.
    fn streaming_failed(&self, watch: &str, reason: &dyn std::fmt::Display) -> bool {
        if self.initial != InitialList::Auto {
            return false;
        }
        if !self.paged.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                %watch,
                %reason,
                "this API server fails streaming lists (sendInitialEvents); every watch lists in \
                 pages from now on"
            );
        }
        true
    }
}

/// How often a watch that keeps failing says so again.
const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// A watch's failures in a row, for logs that stay bounded however long they last.
#[derive(Debug, Default)]
struct Failures {
    count: u64,
    last_said: Option<Instant>,
}

impl Failures {
    fn failed(&mut self, watch: &str, error: &watcher::Error) {
        self.count += 1;
        tracing::debug!(%watch, %error, failures = self.count, "watch failed");
        let now = Instant::now();
        match self.last_said {
            None => tracing::warn!(%watch, %error, "watch failed; retrying with backoff"),
            Some(said) if now.duration_since(said) >= REPEAT_EVERY => tracing::warn!(
                %watch,
                %error,
                failures = self.count,
                "watch still failing; retrying with backoff"
            ),
            Some(_) => return,
        }
        self.last_said = Some(now);
    }

    fn recovered(&mut self, watch: &str) {
        if self.count > 0 {
            tracing::info!(%watch, failures = self.count, "watch works again");
        }
        *self = Self::default();
    }
}

/// One watch's state between items.
struct Watching<K> {
    inner: BoxStream<'static, Result<Event<K>, watcher::Error>>,
    streaming: bool,
    /// Between `Init` and `InitDone`: a (re)list is under way.
    listing: bool,
    /// Wait this long before asking the inner watcher again (after a failure).
    pause: Option<Duration>,
    backoff: DefaultBackoff,
    failures: Failures,
}

/// A watcher (see the module doc) whose first list streams or comes in pages of `page_size`, as
/// `mode` says, with its own backoff and bounded logs. `name` names it in the logs.
pub fn watcher<K>(
    api: Api<K>,
    mode: Arc<ListMode>,
    page_size: u32,
    name: &str,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Send + Sync,
{
    let start = move |api: &Api<K>, streaming: bool| {
        let config = if streaming {
            Config::default().streaming_lists()
        } else {
            Config::default().page_size(page_size)
        };
        kube::runtime::watcher(api.clone(), config).boxed()
    };
    let streaming = mode.streams();
    let state = Watching {
        inner: start(&api, streaming),
        streaming,
        listing: false,
        pause: None,
        backoff: DefaultBackoff::default(),
        failures: Failures::default(),
    };
    let name: Arc<str> = name.into();
    futures::stream::unfold(state, move |mut w| {
        let (api, mode, name) = (api.clone(), mode.clone(), name.clone());
        async move {
            if let Some(pause) = w.pause.take() {
                tokio::time::sleep(pause).await;
            }
            loop {
                let item = w.inner.next().await?;
                if w.streaming && gives_up_streaming(&item, w.listing, &mode, &name) {
                    w.inner = start(&api, false);
                    w.streaming = false;
                    w.listing = false;
                    continue;
                }
                match &item {
                    Ok(Event::Init) => w.listing = true,
                    Ok(Event::InitDone) => {
                        w.listing = false;
                        w.backoff.reset();
                        w.failures.recovered(&name);
                    }
                    Ok(Event::Apply(_) | Event::Delete(_)) => {
                        w.backoff.reset();
                        w.failures.recovered(&name);
                    }
                    Ok(Event::InitApply(_)) => {}
                    Err(error) => {
                        w.failures.failed(&name, error);
                        w.pause = w.backoff.next();
                    }
                }
                return Some((item, w));
            }
        }
    })
}

/// Whether a streaming watch should switch to pages on `item`: a streaming list failed (see the
/// module doc), or another watch found that they fail and this one is about to list again.
fn gives_up_streaming<K>(
    item: &Result<Event<K>, watcher::Error>,
    listing: bool,
    mode: &ListMode,
    name: &str,
) -> bool {
    match item {
        // A new attempt while the last one was still listing: that stream ended before its list.
        Ok(Event::Init) if listing => {
            mode.streaming_failed(name, &"the stream ended before the list was complete")
        }
        Ok(Event::Init) => !mode.streams(),
        Err(error) if listing || refuses_streaming(error) => mode.streaming_failed(name, error),
        _ => false,
    }
}

/// The API server refused the streaming list outright: it has no WatchList feature.
fn refuses_streaming(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 400 || s.code == 422)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn in_stream_failure() -> watcher::Error {
        watcher::Error::WatchError(Box::new(Status::failure(
            "a watch stream was requested by the client but the required storage feature \
             RequestWatchProgress is disabled",
            "InternalError",
        )))
    }

    fn unreachable() -> watcher::Error {
        watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(
            Status::failure("connection refused", "ServiceUnavailable").with_code(503),
        )))
    }

    #[test]
    fn any_failure_of_a_streaming_list_switches_every_watch_to_pages_once() {
        let mode = ListMode::new(InitialList::Auto);
        let item = |e: watcher::Error| Err::<Event<()>, _>(e);
        // Before a list starts, an API server that does not answer says nothing about streaming.
        assert!(!gives_up_streaming(
            &item(unreachable()),
            false,
            &mode,
            "pods"
        ));
        assert!(mode.streams());
        // Accepted, then failed inside the stream.
        assert!(gives_up_streaming(
            &item(in_stream_failure()),
            true,
            &mode,
            "pods"
        ));
        assert!(!mode.streams(), "every watch pages from now on");
        // Another watch, about to stream, pages instead.
        assert!(gives_up_streaming(
            &Ok(Event::<()>::Init),
            false,
            &mode,
            "secrets"
        ));
    }

    #[test]
    fn a_stream_that_ends_before_its_list_is_complete_is_a_failed_streaming_list() {
        let mode = ListMode::new(InitialList::Auto);
        assert!(!gives_up_streaming(
            &Ok(Event::<()>::Init),
            false,
            &mode,
            "pods"
        ));
        assert!(gives_up_streaming(
            &Ok(Event::<()>::Init),
            true,
            &mode,
            "pods"
        ));
        assert!(!mode.streams());
    }

    #[test]
    fn a_forced_mode_never_switches() {
        let mode = ListMode::new(InitialList::Streaming);
        let failed = Err::<Event<()>, _>(in_stream_failure());
        assert!(!gives_up_streaming(&failed, true, &mode, "pods"));
        assert!(mode.streams());
        assert!(!ListMode::new(InitialList::Paged).streams());
    }
}
