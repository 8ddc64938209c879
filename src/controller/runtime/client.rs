//! The API client: the cluster's own configuration (in-cluster, or `KUBECONFIG`), with
//! `User-Agent: poolwarden/<version>` on every request, so that an API server's audit log and
//! its metrics tell poolwarden's requests from every other client's.

use http::HeaderValue;
use http::header::USER_AGENT as USER_AGENT_HEADER;
use kube::{Client, Config};

/// What every request of the controller says it comes from.
pub const USER_AGENT: &str = concat!("poolwarden/", env!("CARGO_PKG_VERSION"));

/// The clients of the cluster poolwarden runs in (or `KUBECONFIG` names).
pub struct Clients {
    /// For everything but evictions: kube's own retries of 429, 503 and 504 included.
    pub api: Client,
    /// For evictions: the same cluster without those retries. A PodDisruptionBudget refuses an
    /// eviction with 429; that is an answer, asked again at the next cycle, and kube's retries
    /// (15 of them, backing off up to 1000 s) would hold the reconcile for minutes.
    pub evictions: Client,
}

pub async fn clients() -> Result<Clients, kube::Error> {
    let config = identified(Config::infer().await.map_err(kube::Error::InferConfig)?);
    let mut once = config.clone();
    once.default_retry = false;
    Ok(Clients {
        api: Client::try_from(config)?,
        evictions: Client::try_from(once)?,
    })
}

/// `config`, with poolwarden's User-Agent on every request.
fn identified(mut config: Config) -> Config {
    config
        .headers
        .retain(|(name, _)| *name != USER_AGENT_HEADER);
    config
        .headers
        .push((USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT)));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_agent_names_poolwarden_and_its_version() {
        let config = identified(Config::new("http://127.0.0.1:1".parse().unwrap()));
        let agents: Vec<_> = config
            .headers
            .iter()
            .filter(|(name, _)| *name == USER_AGENT_HEADER)
            .map(|(_, value)| value.to_str().unwrap())
            .collect();
        assert_eq!(
            agents,
            [format!("poolwarden/{}", env!("CARGO_PKG_VERSION"))]
        );
    }
}
