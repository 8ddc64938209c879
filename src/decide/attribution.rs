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

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::cluster::{ClusterView, DepartedPod, PodInfo, WorkloadRef};
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
}

/// Where a session came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attribution {
    pub source: Source,
    /// The pod (or, for a client, its address) the session counts against for per-pod budgets.
    pub pod: String,
    pub via: Via,
}

/// Lookups built once per decision: O(1) per session even with thousands of pods.
pub struct Attributor<'a> {
    by_ip: HashMap<IpAddr, Vec<&'a PodInfo>>,
    by_name: HashMap<&'a str, &'a PodInfo>,
    departed_by_ip: HashMap<IpAddr, Vec<&'a DepartedPod>>,
}

impl<'a> Attributor<'a> {
    pub fn new(cluster: &'a ClusterView) -> Self {
        let mut by_ip: HashMap<IpAddr, Vec<&PodInfo>> = HashMap::new();
        let mut by_name = HashMap::new();
        for pod in &cluster.pods {
            for ip in &pod.ips {
                by_ip.entry(*ip).or_default().push(pod);
            }
            by_name.insert(pod.name.as_str(), pod);
        }
        let mut departed_by_ip: HashMap<IpAddr, Vec<&DepartedPod>> = HashMap::new();
        for pod in &cluster.departed {
            for ip in &pod.ips {
                departed_by_ip.entry(*ip).or_default().push(pod);
            }
        }
        Self {
            by_ip,
            by_name,
            departed_by_ip,
        }
    }

    pub fn attribute(&self, session: &Session) -> Attribution {
        let started_after = |started: Option<jiff::Timestamp>| {
            started.is_some_and(|pod_start| session.backend_start >= pod_start)
        };
        if let Some(addr) = session.client_addr {
            // The newest pod on this address that started before the session.
            let live = self.by_ip.get(&addr).and_then(|pods| {
                pods.iter()
                    .filter(|p| started_after(p.started_at))
                    .max_by_key(|p| p.started_at)
            });
            if let Some(pod) = live {
                return pod_attribution(pod, Via::PodIp);
            }
            let orphaned_by = self.departed_by_ip.get(&addr).and_then(|pods| {
                pods.iter()
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
                .map_or_else(|| "local socket".to_owned(), |a| a.to_string()),
            via: Via::Unattributed,
        }
    }
}

fn pod_attribution(pod: &PodInfo, via: Via) -> Attribution {
    Attribution {
        source: Source::Workload(pod.workload.clone()),
        pod: pod.name.clone(),
        via,
    }
}
