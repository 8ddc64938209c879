//! The PgBouncer consoles of each policy, kept across cycles.
//!
//! A policy's `spec.poolers` name Secrets holding console URLs; [`dereference`](crate::controller::reconcile::dereference)
//! reads them into the consoles a cycle should read ([`Wanted`]). The consoles themselves live
//! here, one list per policy, so that each keeps its console connection from cycle to cycle: a
//! console whose name and URL stay is kept, one whose URL changed (its Secret did) is opened
//! anew, one no longer named is dropped, closing its connection. A deleted policy's consoles go
//! with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Mutex as AsyncMutex;

use crate::cycle::UnreadPooler;
use crate::database::ConnectOptions;
use crate::database::pgbouncer::PoolerConsole;

/// A console a cycle should read: the policy's name for it (or none), and its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub name: Option<String>,
    pub url: String,
}

/// One policy's consoles, and the URL each was opened with.
#[derive(Debug, Default)]
pub struct Consoles {
    urls: Vec<String>,
    consoles: Vec<PoolerConsole>,
}

impl Consoles {
    /// Brings the consoles in line with `wanted`, keeping those whose name and URL stay (and
    /// their connections). A URL that does not parse is no console: it is returned as unread.
    pub fn align(&mut self, wanted: &[Wanted]) -> Vec<UnreadPooler> {
        let mut kept: Vec<Option<(String, PoolerConsole)>> = std::mem::take(&mut self.urls)
            .into_iter()
            .zip(std::mem::take(&mut self.consoles))
            .map(Some)
            .collect();
        let mut unread = Vec::new();
        for want in wanted {
            let same = kept.iter_mut().find(|k| {
                k.as_ref().is_some_and(|(url, console)| {
                    *url == want.url && want.name.as_deref().is_none_or(|n| n == console.name())
                })
            });
            let console = match same.and_then(Option::take) {
                Some((_, console)) => console,
                None => match PoolerConsole::new(&want.url, ConnectOptions::default()) {
                    Ok(console) => match &want.name {
                        Some(name) => console.named(name.clone()),
                        None => console,
                    },
                    Err(e) => {
                        unread.push(UnreadPooler {
                            name: want.name.clone().unwrap_or_else(|| "pooler".into()),
                            reason: e.category(),
                            message: e.to_string(),
                        });
                        continue;
                    }
                },
            };
            self.urls.push(want.url.clone());
            self.consoles.push(console);
        }
        unread
    }

    pub fn consoles(&mut self) -> &mut [PoolerConsole] {
        &mut self.consoles
    }
}

/// `url` with its host and port replaced by `ip` and `port`: one replica's console, from the
/// URL (user, password, TLS settings) its pooler's Secret holds. Only the URL form can be
/// rewritten; the key=value form is refused.
pub fn at_address(url: &str, ip: IpAddr, port: u16) -> Result<String, String> {
    let refused = || {
        "the Secret of a pooler given by pods must hold a URL, \
         postgres://user:password@any-host/pgbouncer?sslmode=…: each pod's IP and the port \
         replace its host"
            .to_owned()
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(refused)?;
    if !matches!(scheme, "postgres" | "postgresql") {
        return Err(refused());
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rfind('@').map_or("", |at| &authority[..=at]);
    let host = match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    Ok(format!("{scheme}://{user}{host}:{port}{tail}"))
}

/// Every policy's consoles, by policy uid.
#[derive(Debug, Default)]
pub struct Poolers {
    by_policy: Mutex<HashMap<String, Arc<AsyncMutex<Consoles>>>>,
}

impl Poolers {
    /// The policy's consoles (none yet for a new one).
    pub fn of(&self, uid: &str) -> Arc<AsyncMutex<Consoles>> {
        let mut by_policy = self.by_policy.lock().unwrap_or_else(|e| e.into_inner());
        by_policy.entry(uid.to_owned()).or_default().clone()
    }

    /// The policy is gone: its consoles close.
    pub fn release(&self, uid: &str) {
        let mut by_policy = self.by_policy.lock().unwrap_or_else(|e| e.into_inner());
        by_policy.remove(uid);
    }

    /// Closes every console (shutdown).
    pub fn close_all(&self) {
        let mut by_policy = self.by_policy.lock().unwrap_or_else(|e| e.into_inner());
        by_policy.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "postgres://s:p@pgbouncer-a:6432/pgbouncer?sslmode=disable";
    const B: &str = "postgres://s:p@pgbouncer-b:6432/pgbouncer?sslmode=disable";

    fn want(name: Option<&str>, url: &str) -> Wanted {
        Wanted {
            name: name.map(str::to_owned),
            url: url.to_owned(),
        }
    }

    fn names(consoles: &mut Consoles) -> Vec<String> {
        consoles
            .consoles()
            .iter()
            .map(|c| c.name().to_owned())
            .collect()
    }

    #[test]
    fn consoles_follow_the_policy_and_keep_their_names() {
        let mut consoles = Consoles::default();
        let unread = consoles.align(&[want(Some("edge"), A), want(None, B)]);
        assert!(unread.is_empty());
        assert_eq!(names(&mut consoles), ["edge", "pgbouncer-b:6432"]);
        // The Secret of `edge` now names B: a new console, named as before.
        consoles.align(&[want(Some("edge"), B)]);
        assert_eq!(names(&mut consoles), ["edge"]);
        assert_eq!(
            consoles.consoles()[0].display(),
            "pgbouncer-b:6432/pgbouncer"
        );
        consoles.align(&[]);
        assert!(consoles.consoles().is_empty());
    }

    #[test]
    fn a_replica_is_reached_at_its_pod_ip_with_the_secrets_credentials() {
        let url = "postgres://stats:p%40ss@pgbouncer.shop:6432/pgbouncer?sslmode=verify-ca";
        assert_eq!(
            at_address(url, "10.0.3.7".parse().unwrap(), 6433).unwrap(),
            "postgres://stats:p%40ss@10.0.3.7:6433/pgbouncer?sslmode=verify-ca"
        );
        assert_eq!(
            at_address("postgresql://pgbouncer", "fd00::7".parse().unwrap(), 6432).unwrap(),
            "postgresql://[fd00::7]:6432"
        );
        assert!(at_address("host=pgbouncer user=stats", "10.0.3.7".parse().unwrap(), 1).is_err());
    }

    #[test]
    fn a_url_that_does_not_parse_is_an_unread_pooler() {
        let mut consoles = Consoles::default();
        let unread = consoles.align(&[
            want(Some("edge"), "postgres://s:p@pgbouncer-a:6432/orders"),
            want(None, A),
        ]);
        assert_eq!(unread.len(), 1);
        assert_eq!(
            (unread[0].name.as_str(), unread[0].reason),
            ("edge", "InvalidUrl")
        );
        assert_eq!(names(&mut consoles), ["pgbouncer-a:6432"]);
    }
}
