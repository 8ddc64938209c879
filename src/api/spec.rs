//! The `PoolPolicy` resource: what a platform engineer writes to govern one PostgreSQL server.
//!
//! Doc comments on these fields become the CRD's descriptions (`kubectl explain poolpolicy.spec`),
//! so they are written for the person applying the policy, not for the code reading it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;
use super::duration::Duration;
use super::remediation::Remediation;
use super::status::PoolPolicyStatus;

/// How long sessions may sit idle, what connection budgets apply, how leaks are recognised, and
/// whether poolwarden terminates sessions (`Enforce`) or only reports what it would do (`DryRun`).
// Each printer column repeats `type_ = …`; clippy mistakes that for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "poolwarden.io",
    version = "v1alpha1",
    kind = "PoolPolicy",
    plural = "poolpolicies",
    shortname = "pp",
    category = "poolwarden",
    namespaced,
    doc = "A PoolPolicy governs the sessions of one PostgreSQL server: idle timeouts, connection budgets, leak detection.",
    status = "PoolPolicyStatus",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Connections",
        type_ = "string",
        json_path = ".status.connections",
        description = "sessions on the server / connections usable by clients"
    ),
    printcolumn(
        name = "Leaking",
        type_ = "integer",
        json_path = ".status.leakingWorkloads"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = require_database)]
pub struct PoolPolicySpec {
    /// The database server to govern (PostgreSQL, MySQL or MariaDB). Required in a cluster;
    /// `poolwarden check` and `run` take the URL from `--database-url` instead and ignore this
    /// field (a policy file may leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseTarget>,

    /// `DryRun` (the default) reports what would be terminated and never terminates; `Enforce` also
    /// terminates the sessions this policy condemns.
    #[serde(default)]
    pub mode: Mode,

    /// How often to look at the server, e.g. `30s`. From 1s to 1h.
    #[serde(default = "default_interval")]
    #[x_kube(validation = bounds::INTERVAL.rule())]
    pub interval: Duration,

    /// Which sessions the policy governs. Sessions outside the scope are counted but never touched.
    #[serde(default)]
    pub scope: Scope,

    /// What `Enforce` ends: sessions idle past a timeout, transactions past an age, and how many
    /// per cycle. Reporting leaks needs none of it (see `leakDetection`).
    #[serde(default)]
    pub idle: IdleRules,

    /// Connection budgets, used to spot saturated pools and servers that are overbooked.
    #[serde(default)]
    pub budgets: Budgets,

    /// How leaks are recognised, and how long a finding must hold before a workload is marked.
    /// Every field has a default: a policy that sets nothing here reports every kind of leak.
    #[serde(default)]
    pub leak_detection: LeakDetection,

    /// Which pods sessions are attributed to, and whether their workloads are annotated.
    #[serde(default)]
    pub workloads: Workloads,

    /// The PgBouncers in front of the server. Behind a pooler every session's client address is
    /// the pooler's; its admin console says which client (pod) holds each server connection, so
    /// that leaks are named on the pod behind it. Connections the pooler holds for reuse are
    /// counted per pooler and never terminated. (`poolwarden check` and `run` take
    /// `--pooler URL` instead.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub poolers: Vec<PoolerTarget>,

    /// What poolwarden may do beyond ending sessions to give a workload its pool back: evict a
    /// pod whose pinned pool `Enforce` ended, so that its controller replaces it. Off by default.
    #[serde(default, skip_serializing_if = "Remediation::is_default")]
    pub remediation: Remediation,
}

/// One PgBouncer in front of the server, in one of two forms: `consoleSecretRef` for one
/// PgBouncer (a Service, a sidecar's address), or `pods` for the replicas of a pooler Deployment,
/// each read on its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.consoleSecretRef) != has(self.pods)").message("give exactly one of consoleSecretRef (one PgBouncer: a Secret with its admin console URL) or pods (the replicas of a pooler Deployment: selector, port and a Secret with the console's credentials)"))]
#[x_kube(validation = Rule::new("!has(self.pods) || has(self.name)").message("a pooler given by pods needs a name: its replicas are reported as <name>/<pod>"))]
pub struct PoolerTarget {
    /// How reports, events and the status name it; defaults to its console's `host:port`.
    /// Required with `pods`: each replica is then `<name>/<pod>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// A Secret in the policy's namespace holding the URL of PgBouncer's admin console
    /// (`postgres://poolwarden:password@pgbouncer.shop:6432/pgbouncer?sslmode=verify-full`).
    /// A user listed in PgBouncer's `stats_users` is enough: poolwarden only reads `SHOW SERVERS`,
    /// `SHOW CLIENTS` and `SHOW POOLS`; it never needs `admin_users`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_secret_ref: Option<SecretKeyRef>,
    /// The replicas of a pooler Deployment: poolwarden reads the console of every Running, Ready
    /// pod the selector matches in the policy's namespace, at the pod's IP and `port`. While a
    /// matching pod is running but not Ready, or none matches, the pooler counts as not read
    /// (nothing is ended for being idle). `poolwarden check` and `run` cannot find pods: give
    /// each replica with `--pooler URL` there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PoolerPods>,
}

/// The pods of a pooler Deployment, and how to reach each one's admin console.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerPods {
    /// The pooler's pods, e.g. `matchLabels: {app: pgbouncer}`, in the policy's namespace.
    pub selector: LabelSelector,
    /// The port PgBouncer listens on in each pod (its `listen_port`), e.g. 6432.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// A Secret in the policy's namespace holding a console URL with the user, password and TLS
    /// settings for every replica (a `stats_users` user is enough); its host and port are
    /// replaced by each pod's IP and `port`. With `sslmode=verify-full` the pooler's certificate
    /// must name the pod IPs; `verify-ca` checks the CA only.
    pub console_secret_ref: SecretKeyRef,
}

impl PoolerTarget {
    /// The Secret holding its console URL (or credentials), whichever form it takes.
    pub fn secret(&self) -> Option<&SecretKeyRef> {
        match (&self.console_secret_ref, &self.pods) {
            (Some(secret), _) => Some(secret),
            (None, Some(pods)) => Some(&pods.console_secret_ref),
            (None, None) => None,
        }
    }
}

impl PoolPolicySpec {
    /// Whether the Secret `name` (in the policy's namespace) holds one of its URLs: the
    /// database's or a pooler's. A change of such a Secret re-triggers the policy.
    pub fn refers_to_secret(&self, name: &str) -> bool {
        self.database
            .as_ref()
            .is_some_and(|d| d.connection_secret_ref.name == name)
            || self
                .poolers
                .iter()
                .any(|p| p.secret().is_some_and(|s| s.name == name))
    }
}

fn require_database(schema: &mut schemars::Schema) {
    // `database` is optional in Rust so that a policy file for `poolwarden check` may leave it
    // out, but a PoolPolicy in a cluster cannot work without it: let the API server say so.
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("required".into(), serde_json::json!(["database"]));
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}

/// Where to find the server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTarget {
    /// A Secret in the policy's namespace holding the database URL; its scheme names the engine:
    /// PostgreSQL (`postgres://user:password@host:5432/dbname?sslmode=verify-full`, a role with
    /// `pg_monitor` and `pg_signal_backend`) or MySQL/MariaDB
    /// (`mysql://user:password@host:3306/?ssl-mode=VERIFY_IDENTITY`, also `mariadb://`, a user with
    /// `PROCESS` and `CONNECTION ADMIN`). Never a superuser.
    pub connection_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the policy's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret whose value is the URL. Defaults to `uri`.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "uri".to_owned()
}

/// Whether poolwarden acts or only reports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// Report what would be terminated; never terminate.
    #[default]
    DryRun,
    /// Terminate the sessions the policy condemns.
    Enforce,
}

/// Which sessions the policy governs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// Databases whose sessions are governed; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Roles whose sessions are governed; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Roles whose sessions are never touched, e.g. `postgres` or a replication role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_users: Vec<String>,
    /// `application_name` globs whose sessions are never touched, e.g. `psql` or `pg_dump*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_applications: Vec<String>,
}

/// When idle sessions are ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdleRules {
    /// A session in state `idle` for longer than this is terminated (Enforce) or reported (DryRun).
    /// Leave unset to never end idle sessions for being idle (sessions left behind by pods that
    /// no longer exist are still ended in Enforce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = bounds::IDLE_TIMEOUT.rule())]
    pub idle_timeout: Option<Duration>,
    /// A session `idle in transaction` (or `idle in transaction (aborted)`) for longer than this is
    /// terminated or reported. Leave unset to never end them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = bounds::IDLE_IN_TRANSACTION_TIMEOUT.rule())]
    pub idle_in_transaction_timeout: Option<Duration>,
    /// A session whose transaction has been open for longer than this (by `xact_start`, however
    /// recently it ran a statement) is terminated or reported, but only while it sits idle in that
    /// transaction: a session running a statement is never ended. Leave unset to never end
    /// sessions for the age of their transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = bounds::MAX_TRANSACTION_AGE.rule())]
    pub max_transaction_age: Option<Duration>,
    /// A brake: at most this many sessions are terminated per cycle. Sessions that block others
    /// go first, then the longest-idle.
    #[serde(default = "default_max_terminations")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_terminations_per_cycle: u32,
}

fn default_max_terminations() -> u32 {
    20
}

impl Default for IdleRules {
    fn default() -> Self {
        Self {
            idle_timeout: None,
            idle_in_transaction_timeout: None,
            max_transaction_age: None,
            max_terminations_per_cycle: default_max_terminations(),
        }
    }
}

/// Connection budgets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxConnections) || !has(self.maxConnectionsPerPod) || self.maxConnectionsPerPod <= self.maxConnections").message("maxConnectionsPerPod cannot exceed maxConnections"))]
pub struct Budgets {
    /// The most sessions the governed scope as a whole should hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 262143))]
    pub max_connections: Option<u32>,
    /// The most sessions one pod (one client process or host outside Kubernetes) should hold: its
    /// pool size plus overflow. A workload's `poolwarden.io/pool-max` annotation overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 262143))]
    pub max_connections_per_pod: Option<u32>,
}

/// How leaks are recognised. Detection needs no termination timeout: with nothing set here,
/// every kind of leak is reported with these defaults, and only `spec.idle` decides what
/// `Enforce` ends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakDetection {
    /// A finding must hold this long before its workload is annotated (and before `run` calls it
    /// confirmed rather than suspected), and be gone this long before the annotation is removed.
    /// It holds while its shape does on the workload, whichever sessions show it (a pool that
    /// replaces its pinned sessions stays pinned); what `Enforce` ends for a leak is confirmed at
    /// once. Default 10m.
    #[serde(default = "default_window")]
    #[x_kube(validation = bounds::WINDOW.rule())]
    pub window: Duration,
    /// An idle session is stranded once it has been idle for longer than this: longer than a
    /// healthy pool keeps a spare connection (HikariCP retires its connections after
    /// `maxLifetime`, 30m by default; pgx closes idle ones after `MaxConnIdleTime`, 30m). A pod
    /// with two or more stranded sessions while it keeps using others is `IdleAccumulation`
    /// (forked workers that inherited a pool). Default 30m.
    #[serde(default = "default_stranded_idle_age")]
    #[x_kube(validation = bounds::STRANDED_IDLE_AGE.rule())]
    pub stranded_idle_age: Duration,
    /// Also `IdleAccumulation` when one pod holds at least this many stranded sessions even while
    /// the application is idle as a whole. Unset by default: an application with no traffic
    /// keeps its pool idle, and that is no leak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub idle_threshold: Option<u32>,
    /// A session idle in a transaction (or in an aborted one) for longer than this is
    /// `IdleInTransaction`: a transaction nobody commits. Default 2m.
    #[serde(default = "default_idle_in_transaction_age")]
    #[x_kube(validation = bounds::IDLE_IN_TRANSACTION_AGE.rule())]
    pub idle_in_transaction_age: Duration,
    /// A transaction open for longer than this (by `xact_start`, the server's clock), whether or
    /// not its session ran a statement recently, is `LongTransaction`, reported with the oldest
    /// snapshot (`backend_xmin`) it holds and the sessions waiting on its locks. Default 10m.
    #[serde(default = "default_transaction_age")]
    #[x_kube(validation = bounds::TRANSACTION_AGE.rule())]
    pub transaction_age: Duration,
    /// `ConnectionChurn` is found when the server opens more than this many new sessions per
    /// second (`pg_stat_database.sessions`, PostgreSQL 14+). Default 10.
    #[serde(default = "default_churn")]
    #[schemars(range(min = 1, max = 1000000))]
    pub new_sessions_per_second: u32,
    /// `ServerSaturation` is found when client sessions fill at least this percentage of the
    /// connections the server accepts from applications (`max_connections` minus the reserved
    /// slots). Default 90.
    #[serde(default = "default_saturation_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub server_saturation_percent: u32,
    /// What a leak's sessions last ran, so that the workload's owners can find the code that
    /// leaked them. `Fingerprint` (the default): each statement with every literal (strings,
    /// numbers, lists of values, comments) replaced by `?`, grouped with counts, in findings, the
    /// status, the `poolwarden.io/leak-detail` annotation, the `ConnectionLeak` Event and the audit
    /// trail; table and column names are kept. `"Off"` (in quotes: unquoted, YAML reads Off as
    /// the boolean false): statements are neither read nor shown, for a team that treats even its
    /// table names as sensitive. MySQL/MariaDB show statements only with `performance_schema` and
    /// its `events_statements_current` consumer on.
    #[serde(default)]
    pub last_statements: LastStatementsMode,
}

/// Whether findings show what their sessions last ran.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LastStatementsMode {
    /// Each statement with every literal replaced by `?`, grouped with counts.
    #[default]
    Fingerprint,
    /// Neither read nor shown.
    Off,
}

/// By hand for one message: an unquoted `Off` reaches poolwarden as the boolean `false` (YAML
/// 1.1, which kubectl speaks too), and "expected a string" would not say why.
impl<'de> Deserialize<'de> for LastStatementsMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Mode;
        impl serde::de::Visitor<'_> for Mode {
            type Value = LastStatementsMode;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Fingerprint or \"Off\"")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                match value {
                    "Fingerprint" => Ok(LastStatementsMode::Fingerprint),
                    "Off" => Ok(LastStatementsMode::Off),
                    other => Err(E::unknown_variant(other, &["Fingerprint", "Off"])),
                }
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(E::custom(
                    "write \"Off\" in quotes (or Fingerprint): unquoted, YAML reads Off as the \
                     boolean false",
                ))
            }
        }
        deserializer.deserialize_any(Mode)
    }
}

fn default_window() -> Duration {
    Duration::from_secs(600)
}
fn default_stranded_idle_age() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_idle_in_transaction_age() -> Duration {
    Duration::from_secs(120)
}
fn default_transaction_age() -> Duration {
    Duration::from_secs(600)
}
fn default_churn() -> u32 {
    10
}
fn default_saturation_percent() -> u32 {
    90
}

impl Default for LeakDetection {
    fn default() -> Self {
        Self {
            window: default_window(),
            stranded_idle_age: default_stranded_idle_age(),
            idle_threshold: None,
            idle_in_transaction_age: default_idle_in_transaction_age(),
            transaction_age: default_transaction_age(),
            new_sessions_per_second: default_churn(),
            server_saturation_percent: default_saturation_percent(),
            last_statements: LastStatementsMode::default(),
        }
    }
}

/// Which pods sessions are attributed to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workloads {
    /// Pods in the policy's namespace that sessions may be attributed to; empty selects all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Write `poolwarden.io/leak` annotations onto workloads found leaking.
    #[serde(default = "default_true")]
    pub annotate: bool,
}

fn default_true() -> bool {
    true
}

impl Default for Workloads {
    fn default() -> Self {
        Self {
            pod_selector: None,
            annotate: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_statements_off_must_be_quoted_and_says_so() {
        let parse = |yaml: &str| serde_saphyr::from_str::<LeakDetection>(yaml);
        assert_eq!(
            parse("lastStatements: \"Off\"\n").unwrap().last_statements,
            LastStatementsMode::Off
        );
        assert_eq!(
            parse("{}\n").unwrap().last_statements,
            LastStatementsMode::Fingerprint
        );
        let unquoted = parse("lastStatements: Off\n").unwrap_err().to_string();
        assert!(unquoted.contains("write \"Off\" in quotes"), "{unquoted}");
        let typo = parse("lastStatements: Literal\n").unwrap_err().to_string();
        assert!(typo.contains("unknown variant"), "{typo}");
        let json: LeakDetection = serde_json::from_str(r#"{"lastStatements": "Off"}"#).unwrap();
        assert_eq!(json.last_statements, LastStatementsMode::Off);
    }

    #[test]
    fn a_policy_refers_to_its_database_secret_and_every_poolers() {
        let spec: PoolPolicySpec = serde_json::from_value(serde_json::json!({
            "database": {"connectionSecretRef": {"name": "db"}},
            "poolers": [
                {"consoleSecretRef": {"name": "edge"}},
                {"name": "fleet", "pods": {"selector": {"matchLabels": {"app": "pgbouncer"}},
                                           "port": 6432, "consoleSecretRef": {"name": "stats"}}},
            ],
        }))
        .unwrap();
        for name in ["db", "edge", "stats"] {
            assert!(spec.refers_to_secret(name), "{name}");
        }
        assert!(!spec.refers_to_secret("other"));
    }
}
