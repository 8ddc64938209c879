//! Numbers for the sources and pods of one decision.
//!
//! Deciding sorts every session out several times: into its source's group, into its pod's
//! connections for the detectors, into the pods seen during the window, into the most sessions
//! one pod of a workload holds. Keyed by the source itself, each of those hashed and compared a
//! workload's three names (or an application and an address) once per session. Numbered once
//! here, each is a list indexed by a number instead.

use super::FastMap;
use super::attribution::{Attribution, Source};
use super::findings::ClientConnection;
use super::groups::Governed;
use super::name::Name;

/// Which source and which pod (or client address) a session or pooler client counts under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numbered {
    pub source: usize,
    pub pod: usize,
}

/// The sources and pods of one decision, numbered in the order first seen: the governed
/// sessions', then the pooler clients'.
pub struct Numbers<'g> {
    /// Each source, by its number.
    pub sources: Vec<&'g Source>,
    /// Each pod by its number: its name, and the number of its source.
    pub pods: Vec<(&'g Name, usize)>,
    /// The pods of governed sessions are numbered below this; above, those only pooler clients
    /// show.
    pub governed_pods: usize,
    /// Each source's place in the order of sources, by number: sorting by it compares numbers
    /// instead of a workload's three names.
    pub ranks: Vec<usize>,
    /// The source numbers in the order of sources: `ranks` the other way round.
    in_order: Vec<usize>,
    /// The numbers of each governed session, in the order of the governed sessions.
    pub governed: Vec<Numbered>,
    /// The numbers of each pooler client, in their order.
    pub pooler_clients: Vec<Numbered>,
}

impl<'g> Numbers<'g> {
    pub fn new(governed: &'g [Governed<'_>], pooler_clients: &'g [ClientConnection<'_>]) -> Self {
        let mut numbering = Numbering::default();
        // At most a pod per connection: sized once, not rehashed as it grows.
        numbering
            .pod_numbers
            .reserve(governed.len() + pooler_clients.len());
        let governed: Vec<Numbered> = governed
            .iter()
            .map(|g| numbering.number(&g.attribution))
            .collect();
        let governed_pods = numbering.pods.len();
        let pooler_clients = pooler_clients
            .iter()
            .map(|c| numbering.number(&c.attribution))
            .collect();
        let (in_order, ranks) = in_order(&numbering.sources);
        Self {
            ranks,
            in_order,
            sources: numbering.sources,
            pods: numbering.pods,
            governed_pods,
            governed,
            pooler_clients,
        }
    }

    /// The source numbered `source`.
    pub fn source(&self, source: usize) -> &'g Source {
        self.sources[source]
    }

    /// Each source of the governed sessions with its pods, each once: the sources in their
    /// order, each one's pods by name.
    pub fn governed_pods_by_source(
        &self,
    ) -> impl Iterator<Item = (&'g Source, Vec<&'g Name>)> + '_ {
        let mut pods: Vec<Vec<&'g Name>> = self.sources.iter().map(|_| Vec::new()).collect();
        for (pod, source) in &self.pods[..self.governed_pods] {
            pods[*source].push(pod);
        }
        self.in_order.iter().filter_map(move |&source| {
            let mut pods = std::mem::take(&mut pods[source]);
            // A pod is numbered once per source: no two names are equal.
            pods.sort_unstable();
            (!pods.is_empty()).then(|| (self.sources[source], pods))
        })
    }

    /// The name of the pod numbered `pod`.
    pub fn pod(&self, pod: usize) -> &'g Name {
        self.pods[pod].0
    }
}

/// The source numbers in the order of sources, and each source's rank in it.
fn in_order(sources: &[&Source]) -> (Vec<usize>, Vec<usize>) {
    let mut in_order: Vec<usize> = (0..sources.len()).collect();
    // Sources are numbered once each: no two are equal, so any sort gives the one order.
    in_order.sort_unstable_by(|a, b| sources[*a].cmp(sources[*b]));
    let mut ranks = vec![0; in_order.len()];
    for (rank, source) in in_order.iter().enumerate() {
        ranks[*source] = rank;
    }
    (in_order, ranks)
}

#[derive(Default)]
struct Numbering<'g> {
    source_numbers: FastMap<&'g Source, usize>,
    pod_numbers: FastMap<(usize, &'g str), usize>,
    sources: Vec<&'g Source>,
    pods: Vec<(&'g Name, usize)>,
}

impl<'g> Numbering<'g> {
    fn number(&mut self, attribution: &'g Attribution) -> Numbered {
        let next = self.sources.len();
        let source = *self
            .source_numbers
            .entry(&attribution.source)
            .or_insert(next);
        if source == next {
            self.sources.push(&attribution.source);
        }
        let next = self.pods.len();
        let pod = *self
            .pod_numbers
            .entry((source, attribution.pod.as_str()))
            .or_insert(next);
        if pod == next {
            self.pods.push((&attribution.pod, source));
        }
        Numbered { source, pod }
    }
}
