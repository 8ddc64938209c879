//! Deciding: a pure function from what was observed to what to do.
//!
//! In: a [`Snapshot`] (ages by the database's clock), the compiled policy [`Rules`], the
//! [`ClusterView`] (empty outside Kubernetes), what the poolers in front showed ([`PoolerLook`],
//! none without poolers) and the [`Memory`] of earlier cycles.
//! Out: a [`Decision`]: the sessions to terminate with their reasons, per-source groups, findings
//! with the window applied, capacity, workload annotations to change, and the next memory.
//! No IO happens here; every safety rule is tested without a database or a cluster.

mod annotations;
mod attribution;
mod capacity;
mod cluster;
mod findings;
mod groups;
mod learned;
mod memory;
mod name;
mod numbers;
pub mod pooler;
mod refusals;
mod remediation;
mod rules;
pub mod scale;
mod scope;
mod terminations;

#[cfg(test)]
mod tests;

pub use annotations::{AnnotationChange, LEAK, LEAK_DETAIL, OWNED, POLICY, POOL_MAX};
pub use attribution::{Attribution, Source, Via};
pub use capacity::Capacity;
pub use cluster::{ClusterView, DepartedPod, PodInfo, WorkloadInfo, WorkloadRef};
pub use findings::{
    Booking, CHECKED_OUT_NOTE, FindingKind, POOLER_CLIENTS_NOTE, PoolFrom, PoolerClientRef, Shown,
    Sighting, StatementGroup, Subject,
};
pub use groups::{Group, StateCounts};
pub use learned::{LearnedPool, LearnedPools};
pub use memory::{Finding, Memory};
pub use name::Name;
pub use pooler::{ConsoleUnread, PoolerLook, PoolerReport};
pub use remediation::{
    Eviction, EvictionOutcome, Evictions, Held, HeldBecause, PinnedPool, Recovery,
};
pub use rules::{Detection, InvalidSpec, Rules};
pub use scope::Exclusion;
pub use terminations::{Protected, Reason, Termination};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::api::Mode;
use crate::database::{LastStatements, Protection, Snapshot};
use groups::Governed;

/// A hash map for what deciding sorts out once per session (by source, pod or address): hashed
/// with foldhash, several times faster than the standard SipHash on such short keys, and seeded
/// at random as the standard one is. Nothing depends on its order: each is sorted afterwards or
/// only looked up in.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// The set of [`FastMap`].
pub(crate) type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Everything a decision depends on.
pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    pub rules: &'a Rules,
    pub cluster: &'a ClusterView,
    /// The PgBouncers in front of the server, as this cycle saw them; empty without poolers.
    pub poolers: &'a [PoolerLook],
    pub memory: &'a Memory,
}

/// What to do, and everything needed to report it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub observed_at: jiff::Timestamp,
    pub mode: Mode,
    /// Sessions to terminate now. Always empty in `DryRun`.
    pub terminate: Vec<Termination>,
    /// What `Enforce` would terminate now. Always empty in `Enforce`.
    pub dry_run: Vec<Termination>,
    /// Condemned, but over this cycle's `maxTerminationsPerCycle`: next cycle.
    pub deferred: Vec<Termination>,
    /// Condemned, but poolwarden may not end them (superuser sessions, missing privilege).
    pub protected: Vec<Protected>,
    /// The pids of `protected` the audit trail has not recorded yet (`Enforce` only; see
    /// [`refusals`]).
    #[serde(skip)]
    pub newly_refused: BTreeSet<i64>,
    /// Governed sessions by source, biggest first.
    pub groups: Vec<Group>,
    /// Governed sessions by state.
    pub in_scope: StateCounts,
    /// Client sessions the policy does not govern, by why.
    pub out_of_scope: BTreeMap<Exclusion, u32>,
    pub findings: Vec<Finding>,
    pub capacity: Capacity,
    /// The PgBouncers in front: what is behind their server connections, their clients.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub poolers: Vec<PoolerReport>,
    pub annotations: Vec<AnnotationChange>,
    /// Pinned pools whose sessions this cycle ends, and the pods to evict for them.
    #[serde(skip_serializing_if = "Recovery::is_empty")]
    pub recovery: Recovery,
    /// Things a person should fix about poolwarden's own access.
    pub warnings: Vec<String>,
    /// Hand this to the next decision.
    #[serde(skip)]
    pub memory: Memory,
}

impl Decision {
    /// The workloads this decision wants annotated: those with a confirmed finding.
    pub fn annotated_workloads(&self) -> Vec<WorkloadRef> {
        let mut workloads: Vec<WorkloadRef> = self
            .findings
            .iter()
            .filter(|f| f.confirmed)
            .filter_map(|f| match &f.shown.subject {
                Subject::Source {
                    source: Source::Workload(w),
                } => Some(w.clone()),
                _ => None,
            })
            .collect();
        workloads.sort();
        workloads.dedup();
        workloads
    }
}

/// Decides. Pure: the same inputs always give the same decision.
pub fn decide(inputs: Inputs<'_>) -> Decision {
    let Inputs {
        snapshot,
        rules,
        cluster,
        poolers,
        memory,
    } = inputs;
    let now = snapshot.observed_at;
    let attributor = attribution::Attributor::new(cluster);
    let (behind_poolers, pooler_reports) = pooler::join_looks(&snapshot.sessions, poolers);

    let mut governed = Vec::with_capacity(snapshot.sessions.len());
    let mut out_of_scope: BTreeMap<Exclusion, u32> = BTreeMap::new();
    for session in &snapshot.sessions {
        match rules.scope.governs(session, snapshot) {
            Ok(()) => governed.push(Governed {
                session,
                attribution: attributor.attribute(session, behind_poolers.behind(session.pid)),
            }),
            // Background processes are not connections anyone opened; do not count them.
            Err(Exclusion::NotAClientBackend) => {}
            Err(why) => *out_of_scope.entry(why).or_default() += 1,
        }
    }
    let mut in_scope = StateCounts::default();
    for g in &governed {
        in_scope.add(g.session.state);
    }

    let blocks = findings::blockers(snapshot);
    // A pooler whose console could not be read hides which of its server connections it holds
    // for reuse: ending those for idleness would only make it open others, so no session is
    // ended for plain idleness this cycle. A transaction left idle is a client's, pooler or not.
    let poolers_unread = poolers.iter().any(|look| look.console.is_err());
    let condemned = governed
        .iter()
        .filter_map(|g| {
            terminations::condemn(g.session, &g.attribution, now, rules)
                .filter(|r| !(poolers_unread && *r == Reason::IdleTimeout))
                .map(|r| (g.session, &g.attribution, r))
        })
        .collect();
    let verdicts = terminations::select(condemned, snapshot, &blocks, rules);

    let budgets = findings::Budgets::new(cluster, rules);
    let pooler_clients = pooler_clients(&governed, &behind_poolers, poolers, rules, &attributor);
    let numbers = numbers::Numbers::new(&governed, &pooler_clients);
    let groups = groups::by_source(&governed, &numbers, now);
    let mut sightings = findings::about_sources(
        &governed,
        &pooler_clients,
        &numbers,
        &findings::DetectorContext {
            snapshot,
            budgets: &budgets,
            rules,
            blocks: &blocks,
            departures: findings::departures(cluster),
        },
    );

    for look in poolers {
        if let Ok(console) = &look.console {
            sightings.extend(findings::pooler_saturation(&look.name, console));
        }
    }

    // Churn: the short-lived sessions of the snapshot's sample, through the same scope and
    // attribution as the rest (gone before the pooler's views could name their clients).
    let short_lived: Vec<Governed<'_>> = snapshot
        .churn
        .iter()
        .flat_map(|c| &c.short_lived)
        .filter(|s| rules.scope.governs(s, snapshot).is_ok())
        .map(|session| Governed {
            session,
            attribution: attributor.attribute(session, None),
        })
        .collect();
    let churn = findings::churn(
        &short_lived,
        snapshot,
        memory.last_sample,
        &memory.churn_tally,
        rules,
    );
    sightings.extend(churn.sightings);

    let mut capacity = capacity::measure(snapshot, in_scope.total, rules.max_connections);
    capacity.new_sessions_per_second = churn.rate;
    sightings.extend(findings::server_saturation(&capacity, &groups, rules));
    let seen = memory.seen_until(numbers.governed_pods_by_source(), now, rules.window);
    let learned = learned::learn(&memory.learned, &most_per_pod(&governed, &numbers), now);
    let overbooking = findings::overbooked(
        capacity.usable_connections,
        &groups,
        cluster,
        &budgets,
        rules,
        &seen,
        &learned,
    );
    capacity.booked_connections = overbooking.booked;
    capacity.bookings = overbooking.bookings;
    capacity.breaks_at = overbooking.breaks_at;
    sightings.extend(overbooking.sighting);

    if rules.mode == Mode::Enforce {
        findings::merge_ended(&mut sightings, findings::ended(&verdicts.selected, rules));
    }
    findings::statements::attach(&mut sightings, snapshot, rules);
    let (mut findings, tracked) = memory.advance(sightings, now, rules.window);
    if !rules.last_statements {
        // A finding still clearing may have been seen while they were on.
        for f in &mut findings {
            f.shown.last_statements.clear();
        }
    }
    let annotations = annotations::plan(&findings, cluster, rules.annotate);
    // What this cycle ends (or, in DryRun, would end) of pinned pools, and whom to evict.
    let working = || -> FastSet<&str> {
        governed
            .iter()
            .filter(|g| !g.session.state.is_idle_in_transaction())
            .map(|g| g.attribution.pod.as_str())
            .collect()
    };
    let (recovery, evictions) = remediation::plan(
        remediation::pinned_pools(&governed, &verdicts.selected),
        working,
        cluster,
        &memory.evictions,
        &rules.remediation,
        rules.mode,
        now,
    );
    let (refused, newly_refused) = refusals::refusals(
        &verdicts.protected,
        snapshot,
        rules.mode,
        &memory.audited_refusals,
    );
    let next_memory = memory.after_look(
        now,
        memory::WorkedOut {
            tracked,
            last_sample: snapshot.sessions_opened_total.map(|n| (now, n)),
            churn_tally: churn.tally,
            seen,
            evictions,
            learned,
            refused,
        },
    );

    let (terminate, dry_run) = match rules.mode {
        Mode::Enforce => (verdicts.selected, Vec::new()),
        Mode::DryRun => (Vec::new(), verdicts.selected),
    };
    Decision {
        observed_at: now,
        mode: rules.mode,
        terminate,
        dry_run,
        deferred: verdicts.deferred,
        warnings: warnings(snapshot, rules, &verdicts.protected, &pooler_reports),
        protected: verdicts.protected,
        newly_refused,
        groups,
        in_scope,
        out_of_scope,
        findings,
        capacity,
        poolers: pooler_reports,
        annotations,
        recovery,
        memory: next_memory,
    }
}

/// For each workload, the most governed sessions one of its pods holds now (a pooler's held
/// connections are the pooler's, not a pod's): what [`learned`] remembers.
fn most_per_pod(
    governed: &[Governed<'_>],
    numbers: &numbers::Numbers<'_>,
) -> BTreeMap<WorkloadRef, u32> {
    let mut per_pod = vec![0u32; numbers.pods.len()];
    for (g, n) in governed.iter().zip(&numbers.governed) {
        if !g.attribution.via.is_held_by_pooler() {
            per_pod[n.pod] += 1;
        }
    }
    let mut most = vec![0u32; numbers.sources.len()];
    for (pod, n) in per_pod.into_iter().enumerate() {
        let source = numbers.pods[pod].1;
        most[source] = most[source].max(n);
    }
    most.into_iter()
        .enumerate()
        .filter(|(_, n)| *n > 0)
        .filter_map(|(source, n)| match numbers.source(source) {
            Source::Workload(w) => Some((w.clone(), n)),
            _ => None,
        })
        .collect()
}

/// The pooler clients that count beside the governed sessions in the per-pod findings: those
/// holding no server session now, of a pool whose server connections are governed sessions of
/// this server (so that a pooler fronting other databases brings only this policy's clients),
/// in the policy's scope by user and application. Never terminated: they are not sessions.
fn pooler_clients<'a>(
    governed: &[Governed<'_>],
    joined: &pooler::PoolerJoin,
    looks: &'a [PoolerLook],
    rules: &Rules,
    attributor: &attribution::Attributor<'_>,
) -> Vec<findings::ClientConnection<'a>> {
    let pools: BTreeSet<pooler::PoolKey> = governed
        .iter()
        .filter_map(|g| joined.pool_of.get(&g.session.pid).cloned())
        .collect();
    if pools.is_empty() {
        return Vec::new();
    }
    pooler::unlinked_clients(looks, &pools)
        .into_iter()
        .filter(|(_, client, _)| {
            let application = client.application_name.as_deref().unwrap_or_default();
            rules
                .scope
                .governs_client(&client.user, application)
                .is_ok()
        })
        .map(|(pooler, client, row)| findings::ClientConnection {
            pooler,
            row,
            attribution: attributor.pooled_client(&client, ""),
        })
        .collect()
}

fn warnings(
    snapshot: &Snapshot,
    rules: &Rules,
    protected: &[Protected],
    poolers: &[PoolerReport],
) -> Vec<String> {
    let mut warnings = Vec::new();
    for p in poolers {
        if let Some(e) = &p.error {
            warnings.push(format!(
                "pooler {}: {e}; the sessions behind it are counted under the pooler's address \
                 this cycle, as if it were any client, and none is ended for being idle",
                p.tally.pooler
            ));
        }
    }
    let monitor = &snapshot.monitor;
    let flavour = snapshot.server.flavour;
    if monitor.is_superuser {
        warnings.push(if flavour.is_mysql_family() {
            format!(
                "the monitoring URL logs in as {}, a user with SUPER (or ALL PRIVILEGES): \
                 poolwarden needs only PROCESS and CONNECTION ADMIN, and such a connection may \
                 end anyone's session. Use a user of its own (examples/monitoring-user-mysql.sql)",
                monitor.name
            )
        } else {
            format!(
                "the monitoring URL logs in as {}, a superuser: poolwarden needs only pg_monitor \
                 and pg_signal_backend, and a superuser's connection may end anyone's session, \
                 superusers' included. Use a role of its own (examples/monitoring-role.sql)",
                monitor.name
            )
        });
    }
    if !monitor.can_read_all_stats && !monitor.is_superuser {
        warnings.push(if flavour.is_mysql_family() {
            format!(
                "user {} sees only its own threads: GRANT PROCESS ON *.* TO {}",
                monitor.name, monitor.name
            )
        } else {
            format!(
                "role {} cannot see other roles' session states: GRANT pg_monitor TO {}",
                monitor.name, monitor.name
            )
        });
    }
    if let LastStatements::Unavailable(why) = &snapshot.last_statements
        && rules.last_statements
    {
        warnings.push(format!(
            "{why}; findings cannot say what their sessions last ran \
             (leakDetection.lastStatements: \"Off\" silences this)"
        ));
    }
    if !snapshot.application_names_known {
        warnings.push(format!(
            "{} shows no connection attributes (performance_schema is off): sessions are \
             attributed by address only, and every session of user {} is spared as \
             poolwarden's own",
            flavour.name(),
            monitor.name
        ));
    }
    for protection in [
        Protection::SuperuserSession,
        Protection::MissingSignalPrivilege,
    ] {
        let n = protected
            .iter()
            .filter(|p| p.protection == protection)
            .count();
        if n > 0 {
            warnings.push(format!(
                "{n} sessions cannot be terminated: {}",
                protection.advice_for(flavour)
            ));
        }
    }
    warnings
}
