//! Who opened a session (DESIGN.md §5), in order of trust:
//!
//! 1. its `client_addr` is a running pod's IP and the session started after that pod did (IPs are
//!    reused, so an older session from the same address belongs to someone else);
//! 2. its address belonged to a pod that has since gone, and the session was opened before the
//!    departure and has not moved since: an **orphan**, the clearest leak there is;
//! 3. its `application_name` is a running pod's name (apps set `PGAPPNAME` from the downward API),
//!    again only if the session started after the pod;
//! 4. otherwise it is grouped by application name and address: outside Kubernetes that is all
//!    there is; inside, it is *unattributed*, counted but never annotated onto anyone.
//!
//! Behind a PgBouncer the backend's `client_addr` is the pooler's, so the pooler's word comes
//! first ([`super::pooler`]): a server connection linked to a client now is that client's, and
//! the client's address (or application name) names the pod as in rules 1 and 3, `Via::Pooler`.
//! No start-time check applies there: the server connection is usually older than the pod, and
//! the link is current, so the address belongs to the pod that holds it now. A server connection
//! the pooler holds unlinked belongs to the pooler ([`Source::Pooler`], `Via::HeldByPooler`),
//! and one whose link changed between the pooler's two views to nobody this time
//! (`Via::PoolerUnsettled`): neither is ever blamed on a pod.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::FastMap;
use super::cluster::{ClusterView, DepartedPod, PodInfo, WorkloadRef};
use super::name::Name;
use super::pooler::{Behind, PooledClient};
use crate::database::Session;

/// The group a session is counted in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Source {
    /// A Kubernetes workload.
    Workload(WorkloadRef),
    /// A client known only by its `application_name` and address.
    Client {
        application: String,
        address: Option<IpAddr>,
    },
    /// A pooler's own server connections, held for reuse by no client (or unsettled this time):
    /// counted per pooler, never blamed on a pod.
    Pooler { pooler: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Workload(w) => w.fmt(f),
            Source::Client {
                application,
                address,
            } => {
                let app = if application.is_empty() {
                    "(no application_name)"
                } else {
                    application
                };
                match address {
                    Some(a) => write!(f, "{app}@{a}"),
                    None => write!(f, "{app}@local socket"),
                }
            }
            Source::Pooler { pooler } => write!(f, "pooler {pooler}"),
        }
    }
}

/// How a session was attributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Via {
    PodIp,
    ApplicationName,
    /// From a pod that no longer exists.
    Orphaned,
    /// Not matched to any pod.
    Unattributed,
    /// Through a pooler: the client the pooler links to the server connection right now, named by
    /// its address (a pod's IP, or outside a cluster the address itself) or its application name.
    Pooler,
    /// A server connection the pooler holds for reuse, linked to no client.
    HeldByPooler,
    /// A server connection whose client the pooler's two views disagree about (the link changed
    /// between them): nobody's this time.
    PoolerUnsettled,
}

impl Via {
    /// A pooler's own connection: never condemned, never blamed.
    pub fn is_held_by_pooler(self) -> bool {
        matches!(self, Via::HeldByPooler | Via::PoolerUnsettled)
    }
}

/// Where a session came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attribution {
    pub source: Source,
    /// The pod (or, for a client, its address) the session counts against for per-pod budgets.
    pub pod: Name,
    pub via: Via,
    /// The pooler the session came through, when one is in front.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooler: Option<String>,
}

/// Lookups built once per decision: O(1) per session even with thousands of pods.
pub struct Attributor<'a> {
    by_ip: FastMap<IpAddr, PodsAt<&'a PodInfo>>,
    by_name: FastMap<&'a str, &'a PodInfo>,
    departed_by_ip: FastMap<IpAddr, PodsAt<&'a DepartedPod>>,
}

impl<'a> Attributor<'a> {
    pub fn new(cluster: &'a ClusterView) -> Self {
        // Sized once: grown by doubling, ten thousand pods were rehashed a dozen times.
        let mut by_ip: FastMap<IpAddr, PodsAt<&PodInfo>> =
            FastMap::with_capacity_and_hasher(cluster.pods.len(), Default::default());
        let mut by_name = FastMap::with_capacity_and_hasher(cluster.pods.len(), Default::default());
        for pod in &cluster.pods {
            for ip in &pod.ips {
                PodsAt::add(by_ip.entry(*ip), pod);
            }
            by_name.insert(pod.name.as_str(), pod);
        }
        let mut departed_by_ip: FastMap<IpAddr, PodsAt<&DepartedPod>> =
            FastMap::with_capacity_and_hasher(cluster.departed.len(), Default::default());
        for pod in &cluster.departed {
            for ip in &pod.ips {
                PodsAt::add(departed_by_ip.entry(*ip), pod);
            }
        }
        Self {
            by_ip,
            by_name,
            departed_by_ip,
        }
    }

    /// Who opened `session`; `behind` is what the poolers in front say about it, if anything.
    pub fn attribute(&self, session: &Session, behind: Option<&Behind>) -> Attribution {
        match behind {
            Some(Behind::Client(client)) => {
                return self.pooled_client(client, &session.application_name);
            }
            Some(Behind::HeldByPooler { pooler }) => {
                return held_by(pooler, Via::HeldByPooler);
            }
            Some(Behind::Unsettled { pooler }) => return held_by(pooler, Via::PoolerUnsettled),
            None => {}
        }
        let started_after = |started: Option<jiff::Timestamp>| {
            started.is_some_and(|pod_start| session.backend_start >= pod_start)
        };
        if let Some(addr) = session.client_addr {
            // The newest pod on this address that started before the session.
            let live = self.by_ip.get(&addr).and_then(|pods| {
                pods.all()
                    .filter(|p| started_after(p.started_at))
                    .max_by_key(|p| p.started_at)
            });
            if let Some(pod) = live {
                return pod_attribution(pod, Via::PodIp);
            }
            let orphaned_by = self.departed_by_ip.get(&addr).and_then(|pods| {
                pods.all()
                    .filter(|p| {
                        // Opened while that pod lived, and untouched since it left: a session that
                        // did anything after the departure has a live owner (an IP reused
                        // quickly, or clocks that disagree), and must not be called an orphan.
                        session.backend_start < p.departed_at
                            && p.started_at.is_none_or(|s| session.backend_start >= s)
                            && session.state_change.is_some_and(|c| c <= p.departed_at)
                    })
                    .max_by_key(|p| p.departed_at)
            });
            if let Some(pod) = orphaned_by {
                return Attribution {
                    source: Source::Workload(pod.workload.clone()),
                    pod: pod.name.clone(),
                    via: Via::Orphaned,
                    pooler: None,
                };
            }
        }
        if let Some(pod) = self.by_name.get(session.application_name.as_str())
            && started_after(pod.started_at)
        {
            return pod_attribution(pod, Via::ApplicationName);
        }
        Attribution {
            source: Source::Client {
                application: session.application_name.clone(),
                address: session.client_addr,
            },
            pod: session
                .client_addr
                .map_or_else(|| "local socket".into(), |a| a.to_string().into()),
            via: Via::Unattributed,
            pooler: None,
        }
    }

    /// A pooler's client: its pod by address, else by application name, else the client
    /// itself; `fallback_application` when the pooler shows it none (the server session's, for
    /// the client holding one).
    pub fn pooled_client(&self, client: &PooledClient, fallback_application: &str) -> Attribution {
        let application = client
            .application_name
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| fallback_application.to_owned());
        let by_ip = client
            .addr
            .and_then(|addr| self.by_ip.get(&addr))
            .and_then(|pods| pods.all().max_by_key(|p| p.started_at));
        let pod = by_ip.or_else(|| self.by_name.get(application.as_str()));
        let mut attribution = match pod {
            Some(pod) => pod_attribution(pod, Via::Pooler),
            None => Attribution {
                source: Source::Client {
                    application,
                    address: client.addr,
                },
                pod: client
                    .addr
                    .map_or_else(|| "local socket".into(), |a| a.to_string().into()),
                via: Via::Pooler,
                pooler: None,
            },
        };
        attribution.pooler = Some(client.pooler.clone());
        attribution
    }
}

/// The pods that had one address: nearly always one (a list each was ten thousand allocations
/// per decision); several only where an address was reused.
enum PodsAt<P> {
    One(P),
    Several(Vec<P>),
}

impl<P: Copy> PodsAt<P> {
    fn add(entry: std::collections::hash_map::Entry<'_, IpAddr, Self>, pod: P) {
        use std::collections::hash_map::Entry;
        match entry {
            Entry::Vacant(v) => {
                v.insert(PodsAt::One(pod));
            }
            Entry::Occupied(mut o) => {
                let pods = o.get_mut();
                match pods {
                    PodsAt::One(first) => *pods = PodsAt::Several(vec![*first, pod]),
                    PodsAt::Several(all) => all.push(pod),
                }
            }
        }
    }

    fn all(&self) -> impl Iterator<Item = &P> {
        match self {
            PodsAt::One(pod) => std::slice::from_ref(pod).iter(),
            PodsAt::Several(all) => all.iter(),
        }
    }
}

fn pod_attribution(pod: &PodInfo, via: Via) -> Attribution {
    Attribution {
        source: Source::Workload(pod.workload.clone()),
        pod: pod.name.clone(),
        via,
        pooler: None,
    }
}

fn held_by(pooler: &str, via: Via) -> Attribution {
    Attribution {
        source: Source::Pooler {
            pooler: pooler.to_owned(),
        },
        pod: pooler.into(),
        via,
        pooler: Some(pooler.to_owned()),
    }
}
